"""The queue between an actor's intake and its own worker tasks, counted like an edge.

Some actors take work in faster than they can do it and must never make
their input wait for it: the scanner (a YARA scan or a hash takes
milliseconds to seconds, in a thread) and the responder (a kill, in a
thread). Their intake puts work items on a :class:`WorkQueue` without
waiting; a few worker tasks of the same actor take them off. When the queue
is full the newest item is dropped (what is queued keeps its place) and
counted.

Why not a graph edge, with the workers as an actor of their own: an edge
feeds the one in port of one actor, so a pool of workers sharing one queue
(a worker that is free takes the next item, whatever another one is stuck
on) is not an edge; an edge moves batches while this queue holds single
items, and its capacity counts items (``scan.queue_capacity``,
``response.channel_capacity``); and the items are made by the actor's own
policy (the scanner's timers make jobs with no batch in sight, the
responder queues only the alerts it acts on). So the queue stays inside its
actor, and is shown like an edge instead: the same
:class:`~edr.runtime.buffer.BoundedBuffer` counts it, ``sent == received +
dropped + depth`` holds at every moment, and :meth:`WorkQueue.statistics`
is an :class:`~edr.runtime.buffer.EdgeStatistics` for the actor's own
statistics (and so for the health record).

Unlike a trio memory channel, an item handed to a worker that was waiting
still takes its place in the queue until that worker runs: the capacity is
exact, not ``capacity`` plus the number of idle workers.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

from edr.runtime.buffer import BoundedBuffer, EdgeStatistics, Policy

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """A bounded FIFO of work items; intake never waits, workers do.

    ``put_nowait`` from the actor's intake, ``async for item in queue`` (or
    :meth:`get`) in each worker, :meth:`close` once intake is over: the
    workers then drain what is queued and their loops end. Not thread-safe:
    every call comes from the actor's tasks, on the event loop.
    """

    __slots__ = ("_buffer", "_closed", "_lot", "name")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self._buffer = BoundedBuffer(capacity, Policy.DROP_NEWEST)
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def capacity(self) -> int:
        """Items the queue holds at most."""
        return self._buffer.capacity

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return len(self._buffer)

    def put_nowait(self, item: T) -> bool:
        """Queue ``item``; False when the queue was full and it was dropped (counted).

        Never waits and never yields. Raises :class:`trio.ClosedResourceError`
        after :meth:`close`.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"work queue {self.name} is closed")
        if self._buffer.full():
            self._buffer.offer((item,))  # counted as sent and dropped, not queued
            return False
        self._buffer.offer((item,))
        # One worker per item: a woken worker always takes an item (no checkpoint
        # between waking and taking), so none is left queued with a worker asleep.
        self._lot.unpark()
        return True

    def close(self) -> None:
        """No more items; workers drain what is queued, then their loops end (idempotent)."""
        self._closed = True
        self._lot.unpark_all()

    async def get(self) -> T:
        """The oldest item, waiting for one if none is queued.

        Raises :class:`trio.EndOfChannel` once closed and drained. A
        cancellation point always; a schedule point only when it waits or
        reports the end (as :meth:`edr.runtime.channel.InPort.receive`). An
        item taken is returned with no checkpoint in between, so a
        cancellation never loses one.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch = self._buffer.take()
            if batch is not None:
                item: T = batch[0]
                return item
            if self._closed:
                await trio.lowlevel.cancel_shielded_checkpoint()
                raise trio.EndOfChannel
            await self._lot.park()

    def __aiter__(self) -> WorkQueue[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def statistics(self) -> EdgeStatistics:
        """Capacity, policy, sent, received (taken by a worker), dropped, depth and high-water, in items."""
        return self._buffer.statistics(self.name, self._closed)
