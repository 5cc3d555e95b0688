"""Trio edges and ports: bounded batch channels between actors.

An :class:`Edge` joins one output port to one input port. An
:class:`InPort` may be fed by several edges; it drains them in the order
they were attached, so an edge attached first is a priority lane (the
router's process-lifecycle lane drains before its bulk lane). An
:class:`OutPort` may feed several edges (fan-out: each gets the same batch;
batches are treated as immutable once sent).

Closing: when the sending actor finishes, the runtime closes its out port,
which closes its edges. An in port reports end-of-stream once every edge is
closed and drained, so a pipeline drains in order on shutdown.

Scheduling: ``send`` and ``receive`` are always cancellation points, but
schedule points only where that buys something. A hop costs about 7 µs
instead of 15 to 19 µs this way (measured on the reference VM), which matters
with thousands of batches a second.

- ``receive`` returns a batch already queued without yielding: the actor
  is about to work on it, and a yield would only let the scheduler run
  others in between.
- ``send`` does not yield when it woke a receiver that was waiting: the
  receiver runs as soon as the sender next waits, which is normally at
  once, on its own ``receive``. Otherwise it yields, so that a sender
  never makes two sends in a row without a schedule point, even on an
  edge that drops instead of blocking.
- Waiting (a full ``block`` edge, an empty in port) is a schedule point.

In flight: edges built with a :class:`~edr.runtime.flight.Flight` count the
batches they queue into it, and their in port counts a batch done when its
actor asks for the next one (or calls :meth:`InPort.done`), so a source
can wait until the graph has settled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from edr.runtime.buffer import BoundedBuffer, EdgeStatistics, Policy
from edr.runtime.flight import Flight


class Edge:
    """One bounded, policy-governed channel carrying batches.

    ``flight``: the graph's in-flight count, kept up to date by this edge
    and the in port it feeds (None: not counted).
    """

    def __init__(self, name: str, capacity: int, policy: Policy, flight: Flight | None = None) -> None:
        self.name = name
        self._buffer = BoundedBuffer(capacity, policy)
        self._closed = False
        self._not_full = trio.lowlevel.ParkingLot()
        self._port: InPort | None = None
        self.flight = flight
        #: Items of batches whose sender was cancelled before the batch was queued (lost, not dropped).
        self.abandoned = 0

    @property
    def policy(self) -> Policy:
        """The overflow policy."""
        return self._buffer.policy

    @property
    def closed(self) -> bool:
        """True once the sender has closed the edge."""
        return self._closed

    def _attach(self, port: InPort) -> None:
        self._port = port

    async def send(self, batch: Sequence[Any]) -> None:
        """Queue ``batch``; with ``block`` wait for room, else apply the drop policy.

        Raises :class:`trio.ClosedResourceError` after :meth:`close`. A
        cancellation point always; a schedule point unless it woke a waiting
        receiver (see the module's notes). Cancellation before the batch is
        queued leaves nothing queued and counts its items in
        :attr:`abandoned`, so that a sink can tell what never reached it.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"edge {self.name} is closed")
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            self.abandoned += len(batch)
            raise
        if self._offer(batch):
            if not self._wake_receiver():
                # Queued: a cancellation now must not make the caller think it was not.
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        while True:
            try:
                await self._not_full.park()
            except trio.Cancelled:
                self.abandoned += len(batch)
                raise
            if self._closed:
                raise trio.ClosedResourceError(f"edge {self.name} is closed")
            if self._offer(batch):
                break
        self._wake_receiver()

    def send_nowait(self, batch: Sequence[Any]) -> bool:
        """Queue without waiting; False if a ``block`` edge is full (nothing queued)."""
        if self._closed:
            raise trio.ClosedResourceError(f"edge {self.name} is closed")
        ok = self._offer(batch)
        if ok:
            self._wake_receiver()
        return ok

    def _offer(self, batch: Sequence[Any]) -> bool:
        before = len(self._buffer)
        if not self._buffer.offer(batch):
            return False
        # Not when dropped (drop_newest) or queued in place of the oldest
        # (drop_oldest): the count follows what the edge holds.
        if self.flight is not None and len(self._buffer) > before:
            self.flight.add()
        return True

    def _wake_receiver(self) -> bool:
        """Wake the in port's actor if it is waiting; whether it was."""
        port = self._port
        return port is not None and port._wake()

    def close(self) -> None:
        """No more sends; the receiver drains what is queued, then sees the end."""
        self._closed = True
        self._not_full.unpark_all()
        if self._port is not None:
            self._port._wake()

    def _take(self) -> Sequence[Any] | None:
        batch = self._buffer.take()
        if batch is not None:
            self._not_full.unpark()
        return batch

    def _drained(self) -> bool:
        return self._closed and len(self._buffer) == 0

    def statistics(self) -> EdgeStatistics:
        """Sent, received, dropped, depth and high-water mark, in events."""
        return self._buffer.statistics(self.name, self._closed)


class InPort:
    """The receiving end of one or more edges; iterate it with ``async for``.

    Its actor holds the batch it received last until it asks for the next
    one or calls :meth:`done`; that is when the batch leaves the graph's
    in-flight count.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.edges: list[Edge] = []
        self._lot = trio.lowlevel.ParkingLot()
        self.flight: Flight | None = None
        self._held = False

    def attach(self, edge: Edge) -> None:
        """Add ``edge``; edges attached earlier are drained first."""
        self.edges.append(edge)
        edge._attach(self)
        if edge.flight is not None:
            self.flight = edge.flight

    def _wake(self) -> bool:
        if not self._lot:
            return False
        self._lot.unpark_all()
        return True

    def done(self) -> None:
        """The actor has finished with the batch it received last (idempotent).

        Receiving the next batch implies it; an actor calls this itself only
        before a long wait that is not work on the graph's events, such as a
        writer's disk write, so that a source waiting for the graph to settle
        can go on meanwhile.
        """
        if self._held:
            self._held = False
            if self.flight is not None:
                self.flight.done()

    def receive_nowait(self) -> Sequence[Any] | None:
        """The next batch if one is queued, else None (never waits)."""
        self.done()
        for edge in self.edges:
            batch = edge._take()
            if batch is not None:
                self._held = self.flight is not None
                return batch
        return None

    @property
    def exhausted(self) -> bool:
        """True when every edge is closed and drained."""
        return all(e._drained() for e in self.edges)

    async def receive(self) -> Sequence[Any] | None:
        """The next batch, waiting if none is queued; None at end of stream.

        A cancellation point always; a schedule point only when it waits or
        reports the end (see the module's notes). Once a batch is taken it is
        returned with no checkpoint in between, so cancellation never loses one.
        """
        self.done()
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch = self.receive_nowait()
            if batch is not None:
                return batch
            if self.exhausted:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return None
            await self._lot.park()

    def __aiter__(self) -> AsyncIterator[Sequence[Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Sequence[Any]]:
        while True:
            batch = await self.receive()
            if batch is None:
                return
            yield batch
            del batch  # not kept alive while waiting for the next (edr.runtime.flight)


class OutPort:
    """The sending end feeding one or more edges."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.edges: list[Edge] = []

    def attach(self, edge: Edge) -> None:
        """Feed ``edge`` too."""
        self.edges.append(edge)

    async def send(self, batch: Sequence[Any]) -> None:
        """Send ``batch`` to every edge (each applies its own policy)."""
        if not batch:
            return
        for edge in self.edges:
            await edge.send(batch)

    def close(self) -> None:
        """Close every edge."""
        for edge in self.edges:
            edge.close()
