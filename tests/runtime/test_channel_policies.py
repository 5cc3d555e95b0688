"""Edge policies: BoundedBuffer (sans-IO) and the trio Edge/InPort, against a model.

For every policy and every sequence of offers and takes:
``sent == received + dropped + depth`` after every step, the buffer holds
exactly what a reference model holds (so ``drop_oldest`` keeps the newest
batches and ``drop_newest`` the oldest), ``block`` never drops and refuses
(``offer`` returns False, nothing counted) when full, and ``statistics()``
reports the model's counters.
"""

from __future__ import annotations

import itertools
from collections import deque

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from edr.runtime.buffer import BoundedBuffer, Policy
from edr.runtime.channel import Edge, InPort, OutPort

POLICIES = list(Policy)

ops_strategy = st.lists(
    st.one_of(st.tuples(st.just("offer"), st.integers(0, 6)), st.tuples(st.just("take"), st.just(0))),
    max_size=80,
)


class Model:
    """The reference semantics of one edge, in the plainest terms."""

    def __init__(self, capacity: int, policy: Policy) -> None:
        self.capacity = capacity
        self.policy = policy
        self.queue: deque[list[int]] = deque()
        self.sent = self.received = self.dropped = self.high_water = 0

    @property
    def depth(self) -> int:
        return sum(len(b) for b in self.queue)

    def offer(self, batch: list[int]) -> bool:
        if not batch:
            return True
        if len(self.queue) >= self.capacity:
            if self.policy is Policy.BLOCK:
                return False
            self.sent += len(batch)
            if self.policy is Policy.DROP_NEWEST:
                self.dropped += len(batch)
                return True
            self.dropped += len(self.queue.popleft())
        else:
            self.sent += len(batch)
        self.queue.append(batch)
        self.high_water = max(self.high_water, self.depth)
        return True

    def take(self) -> list[int] | None:
        if not self.queue:
            return None
        batch = self.queue.popleft()
        self.received += len(batch)
        return batch


def check_stats(stats, model: Model, name: str, closed: bool) -> None:
    assert stats.name == name
    assert stats.capacity == model.capacity
    assert stats.policy == model.policy.value
    assert stats.sent == model.sent
    assert stats.received == model.received
    assert stats.dropped == model.dropped
    assert stats.depth == model.depth
    assert stats.high_water == model.high_water
    assert stats.batches_buffered == len(model.queue)
    assert stats.closed is closed
    assert stats.sent == stats.received + stats.dropped + stats.depth
    assert stats.batches_buffered <= stats.capacity


@settings(max_examples=300, deadline=None)
@given(policy=st.sampled_from(POLICIES), capacity=st.integers(1, 5), ops=ops_strategy)
def test_bounded_buffer_matches_model(policy: Policy, capacity: int, ops: list[tuple[str, int]]) -> None:
    buf = BoundedBuffer(capacity, policy)
    model = Model(capacity, policy)
    ids = itertools.count()
    for op, n in ops:
        if op == "offer":
            batch = [next(ids) for _ in range(n)]
            was_full = len(model.queue) >= capacity
            accepted = buf.offer(batch)
            assert accepted == model.offer(batch)
            if policy is Policy.BLOCK:
                # block refuses exactly when full (and counts nothing); it never drops.
                assert accepted is not (was_full and n > 0)
                assert buf.dropped == 0
        else:
            assert buf.take() == model.take()
        # the invariant, at every step
        assert buf.sent == buf.received + buf.dropped + buf.depth
        assert list(buf._queue) == list(model.queue)
        check_stats(buf.statistics("e", False), model, "e", False)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 5), sizes=st.lists(st.integers(1, 4), max_size=30))
def test_drop_oldest_keeps_the_newest(capacity: int, sizes: list[int]) -> None:
    buf = BoundedBuffer(capacity, Policy.DROP_OLDEST)
    ids = itertools.count()
    batches = [[next(ids) for _ in range(n)] for n in sizes]
    for b in batches:
        assert buf.offer(b) is True
    kept = []
    while (b := buf.take()) is not None:
        kept.append(b)
    assert kept == batches[-capacity:] if batches else kept == []
    assert buf.dropped == sum(len(b) for b in batches[:-capacity]) if len(batches) > capacity else buf.dropped == 0


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 5), sizes=st.lists(st.integers(1, 4), max_size=30))
def test_drop_newest_keeps_the_oldest(capacity: int, sizes: list[int]) -> None:
    buf = BoundedBuffer(capacity, Policy.DROP_NEWEST)
    ids = itertools.count()
    batches = [[next(ids) for _ in range(n)] for n in sizes]
    for b in batches:
        assert buf.offer(b) is True
    kept = []
    while (b := buf.take()) is not None:
        kept.append(b)
    assert kept == batches[:capacity]
    assert buf.dropped == sum(len(b) for b in batches[capacity:])


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        BoundedBuffer(capacity, Policy.BLOCK)


@settings(max_examples=150, deadline=None)
@given(policy=st.sampled_from(POLICIES), capacity=st.integers(1, 4), ops=ops_strategy,
       close_at=st.integers(0, 80))
def test_trio_edge_matches_model(policy: Policy, capacity: int, ops: list[tuple[str, int]], close_at: int) -> None:
    """The same property through Edge.send_nowait / InPort.receive_nowait, with a close somewhere."""

    async def main() -> None:
        edge = Edge("a.out->b.in", capacity, policy)
        port = InPort("b.in")
        port.attach(edge)
        model = Model(capacity, policy)
        ids = itertools.count()
        closed = False
        for i, (op, n) in enumerate(ops):
            if i == close_at:
                edge.close()
                closed = True
            if op == "offer":
                batch = [next(ids) for _ in range(n)]
                if closed:
                    with pytest.raises(trio.ClosedResourceError):
                        edge.send_nowait(batch)
                    continue
                assert edge.send_nowait(batch) == model.offer(batch)
            else:
                got = port.receive_nowait()
                assert (list(got) if got is not None else None) == model.take()
            check_stats(edge.statistics(), model, "a.out->b.in", closed)
            assert port.exhausted == (closed and not model.queue)
        if closed:
            # receive() drains what is queued, then reports the end
            while model.queue:
                assert list(await port.receive()) == model.take()
            assert await port.receive() is None
            check_stats(edge.statistics(), model, "a.out->b.in", True)

    trio.run(main)


async def test_block_backpressure_resumes_sender_when_receiver_takes() -> None:
    edge = Edge("e", 2, Policy.BLOCK)
    port = InPort("p")
    port.attach(edge)
    sent: list[int] = []

    async def sender() -> None:
        for i in range(5):
            await edge.send([i])
            sent.append(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1]  # blocked on the third
        s = edge.statistics()
        assert (s.sent, s.depth, s.dropped, s.batches_buffered) == (2, 2, 0, 2)
        assert list(await port.receive()) == [0]
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1, 2]  # resumed once, blocked again
        assert edge.statistics().depth == 2
        got = []
        while len(got) < 4:
            [item] = await port.receive()
            got.append(item)
        assert got == [1, 2, 3, 4]
    s = edge.statistics()
    assert (s.sent, s.received, s.dropped, s.depth, s.high_water) == (5, 5, 0, 0, 2)


async def test_cancelled_blocked_send_queues_nothing() -> None:
    edge = Edge("e", 1, Policy.BLOCK)
    await edge.send([1])
    with trio.move_on_after(0.05) as scope:
        await edge.send([2])
    assert scope.cancelled_caught
    s = edge.statistics()
    assert (s.sent, s.depth, s.batches_buffered) == (1, 1, 1)


async def test_drop_policies_never_block() -> None:
    for policy in (Policy.DROP_NEWEST, Policy.DROP_OLDEST):
        edge = Edge("e", 1, policy)
        with trio.fail_after(1):
            for i in range(10):
                await edge.send([i])
        s = edge.statistics()
        assert (s.sent, s.dropped, s.depth) == (10, 9, 1)


async def test_fan_in_drains_first_attached_edge_first() -> None:
    port = InPort("enricher.in")
    priority = Edge("router.priority->enricher.in", 8, Policy.BLOCK)
    bulk = Edge("router.bulk->enricher.in", 8, Policy.DROP_OLDEST)
    port.attach(priority)
    port.attach(bulk)
    # interleave: bulk first in time, then priority
    for i in range(3):
        await bulk.send([f"b{i}"])
        await priority.send([f"p{i}"])
    got = [port.receive_nowait()[0] for _ in range(6)]
    assert got == ["p0", "p1", "p2", "b0", "b1", "b2"]
    # a priority batch arriving between bulk batches is taken next
    await bulk.send(["b3"])
    await bulk.send(["b4"])
    assert (await port.receive())[0] == "b3"
    await priority.send(["p3"])
    assert (await port.receive())[0] == "p3"
    assert (await port.receive())[0] == "b4"


async def test_in_port_ends_only_when_every_edge_closed_and_drained() -> None:
    port = InPort("p")
    a, b = Edge("a", 4, Policy.BLOCK), Edge("b", 4, Policy.BLOCK)
    port.attach(a)
    port.attach(b)
    await a.send([1])
    a.close()
    await b.send([2])
    assert list(await port.receive()) == [1]
    assert list(await port.receive()) == [2]
    assert not port.exhausted
    with trio.move_on_after(0.05) as scope:
        await port.receive()  # b still open: waits
    assert scope.cancelled_caught
    got = []

    async def consume() -> None:
        async for batch in port:
            got.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        await b.send([3])
        b.close()
    assert got == [3]
    assert port.exhausted
    with pytest.raises(trio.ClosedResourceError):
        await a.send([9])


async def test_close_wakes_a_blocked_sender_with_closed_error() -> None:
    edge = Edge("e", 1, Policy.BLOCK)
    await edge.send([1])
    errors = []

    async def sender() -> None:
        try:
            await edge.send([2])
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        edge.close()
    assert len(errors) == 1
    assert edge.statistics().sent == 1


async def test_out_port_fans_out_to_every_edge_and_closes_them() -> None:
    out = OutPort("enricher.out")
    e1, e2 = Edge("x", 2, Policy.BLOCK), Edge("y", 2, Policy.DROP_NEWEST)
    out.attach(e1)
    out.attach(e2)
    await out.send([1, 2])
    await out.send([])  # empty batches are not sent
    out.close()
    for e in (e1, e2):
        s = e.statistics()
        assert (s.sent, s.depth, s.closed) == (2, 2, True)
