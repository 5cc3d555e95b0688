"""Batches in flight (edr.runtime.flight) and where edges yield to the scheduler.

The in-flight count must equal, after every step, the batches queued on the
graph's edges plus the batches their actors hold (taken, not yet done),
whatever the policies and fan-in; ``settled()`` returns exactly when that is
zero. Sends and receives skip the schedule point only where the module says.
"""

from __future__ import annotations

import itertools

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort
from edr.runtime.flight import Flight

# edge index -> (capacity, policy, port index): two edges into port 0 (fan-in), one into port 1
EDGES = ((2, Policy.BLOCK, 0), (2, Policy.DROP_OLDEST, 0), (1, Policy.DROP_NEWEST, 1))

flight_ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, len(EDGES) - 1), st.integers(0, 3)),
        st.tuples(st.just("receive"), st.integers(0, 1), st.just(0)),
        st.tuples(st.just("done"), st.integers(0, 1), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=flight_ops)
def test_flight_counts_what_edges_queue_and_actors_hold(ops: list[tuple[str, int, int]]) -> None:
    async def main() -> None:
        flight = Flight()
        ports = [InPort("a.in"), InPort("b.in")]
        edges = []
        for i, (capacity, policy, port) in enumerate(EDGES):
            edge = Edge(f"e{i}", capacity, policy, flight)
            ports[port].attach(edge)
            edges.append(edge)
        held = [False, False]
        ids = itertools.count()
        for op, index, size in ops:
            if op == "send":
                edges[index].send_nowait([next(ids) for _ in range(size)])
            elif op == "receive":
                held[index] = ports[index].receive_nowait() is not None
            else:
                ports[index].done()
                held[index] = False
            queued = sum(e.statistics().batches_buffered for e in edges)
            assert flight.count == queued + sum(held)
        for port in ports:
            while port.receive_nowait() is not None:
                pass
            port.done()
        assert flight.count == 0
        with trio.fail_after(1):
            await flight.settled()

    trio.run(main)


async def test_settled_waits_until_the_receiver_is_done_with_the_batch() -> None:
    flight = Flight()
    edge = Edge("src.out->a.in", 4, Policy.BLOCK, flight)
    port = InPort("a.in")
    port.attach(edge)
    settled = trio.Event()

    async def waiter() -> None:
        await Ports(inputs={}, outputs={}, flight=flight).settled()
        settled.set()

    await edge.send([1, 2])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not settled.is_set()  # queued
        assert list(await port.receive()) == [1, 2]
        await trio.testing.wait_all_tasks_blocked()
        assert not settled.is_set()  # held by the receiving actor
        port.done()
        await trio.testing.wait_all_tasks_blocked()
        assert settled.is_set()
    assert flight.count == 0


async def test_settled_is_cancellable_and_returns_at_once_when_idle() -> None:
    flight = Flight()
    with trio.fail_after(1):
        await flight.settled()
        await Ports(inputs={}, outputs={}).settled()  # no graph: nothing to wait for
    edge = Edge("e", 1, Policy.BLOCK, flight)
    InPort("p").attach(edge)
    await edge.send([1])
    with trio.move_on_after(0.05) as scope:
        await flight.settled()
    assert scope.cancelled_caught
    assert flight.count == 1  # the batch is still in flight


async def test_receive_of_a_queued_batch_is_not_a_schedule_point() -> None:
    edge = Edge("e", 2, Policy.BLOCK)
    port = InPort("p")
    port.attach(edge)
    await edge.send([1])
    ran = []

    async def other() -> None:
        ran.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        assert list(await port.receive()) == [1]
        assert ran == []  # the other task did not get to run in between
        await trio.testing.wait_all_tasks_blocked()
        assert ran == ["other"]


async def test_send_hands_over_to_a_waiting_receiver_without_yielding() -> None:
    edge = Edge("e", 4, Policy.BLOCK)
    port = InPort("p")
    port.attach(edge)
    got: list[int] = []

    async def receiver() -> None:
        async for batch in port:
            got.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await edge.send([1])  # woke the waiting receiver: no yield
        assert got == []
        await trio.testing.wait_all_tasks_blocked()
        assert got == [1]
        edge.close()


async def test_a_sender_on_a_dropping_edge_cannot_starve_other_tasks() -> None:
    for policy in (Policy.DROP_OLDEST, Policy.DROP_NEWEST):
        edge = Edge("e", 1, policy)
        InPort("p").attach(edge)
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for i in range(100):
                await edge.send([i])
            nursery.cancel_scope.cancel()
        assert ticks >= 99
        assert edge.statistics().dropped == 99
