"""WorkQueue: an actor's queue to its own workers, counted exactly like an edge."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from edr.runtime.workqueue import WorkQueue


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 5), ops=st.lists(st.sampled_from(["put", "get"]), max_size=60))
def test_counts_like_a_drop_newest_edge(capacity: int, ops: list[str]) -> None:
    async def main() -> None:
        queue: WorkQueue[int] = WorkQueue("a.jobs", capacity)
        model: list[int] = []
        sent = received = dropped = high_water = 0
        for i, op in enumerate(ops):
            if op == "put":
                sent += 1
                accepted = queue.put_nowait(i)
                assert accepted == (len(model) < capacity)
                if accepted:
                    model.append(i)
                else:
                    dropped += 1  # the newest is dropped; what is queued keeps its place
                high_water = max(high_water, len(model))
            elif model:
                assert await queue.get() == model.pop(0)
                received += 1
            s = queue.statistics()
            assert (s.name, s.capacity, s.policy, s.closed) == ("a.jobs", capacity, "drop_newest", False)
            assert (s.sent, s.received, s.dropped, s.depth, s.high_water) == (
                sent, received, dropped, len(model), high_water)
            assert s.sent == s.received + s.dropped + s.depth and s.batches_buffered == s.depth == len(queue)

    trio.run(main)


async def test_capacity_is_exact_even_with_a_worker_waiting() -> None:
    queue: WorkQueue[int] = WorkQueue("q", 2)
    got: list[int] = []

    async def worker() -> None:
        async for item in queue:
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()  # the worker waits in get()
        # a trio memory channel would hand the first straight over and hold 2 more
        assert [queue.put_nowait(i) for i in range(4)] == [True, True, False, False]
        queue.close()
    assert got == [0, 1]
    s = queue.statistics()
    assert (s.sent, s.received, s.dropped, s.depth, s.high_water, s.closed) == (4, 2, 2, 0, 2, True)


async def test_close_lets_workers_drain_then_end_and_refuses_more() -> None:
    queue: WorkQueue[str] = WorkQueue("q", 8)
    for item in "abc":
        queue.put_nowait(item)
    queue.close()
    with pytest.raises(trio.ClosedResourceError):
        queue.put_nowait("d")
    assert [item async for item in queue] == ["a", "b", "c"]
    with pytest.raises(trio.EndOfChannel):
        await queue.get()
    queue.close()  # idempotent


async def test_workers_share_the_queue_and_each_item_goes_to_one() -> None:
    queue: WorkQueue[int] = WorkQueue("q", 100)
    taken: dict[str, list[int]] = {"w1": [], "w2": [], "w3": []}
    first_done = trio.Event()

    async def worker(name: str) -> None:
        async for item in queue:
            taken[name].append(item)
            if item == 0:
                await first_done.wait()  # one worker stuck on its item: the others go on
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for name in taken:
            nursery.start_soon(worker, name)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(30):
            queue.put_nowait(i)
        while queue.statistics().received < 30:
            await trio.sleep(0.001)
        first_done.set()
        queue.close()
    [stuck] = [name for name, items in taken.items() if 0 in items]
    assert taken[stuck] == [0]
    assert sorted(item for items in taken.values() for item in items) == list(range(30))


async def test_a_cancelled_get_loses_nothing_and_strands_nothing() -> None:
    queue: WorkQueue[int] = WorkQueue("q", 4)
    with trio.move_on_after(0.01):
        await queue.get()  # waits, then is cancelled
    got: list[int] = []

    async def worker() -> None:
        async for item in queue:
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        queue.put_nowait(1)  # wakes the live worker, not the one cancelled above
        await trio.testing.wait_all_tasks_blocked()
        assert got == [1]
        queue.put_nowait(2)
        with trio.CancelScope() as scope:
            scope.cancel()
            # cancelled before it could take anything: the item stays queued
            with pytest.raises(trio.Cancelled):
                await queue.get()
        queue.close()
    assert got == [1, 2] and queue.statistics().received == 2


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WorkQueue("q", 0)
