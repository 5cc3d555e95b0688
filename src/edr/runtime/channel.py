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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from edr.runtime.buffer import BoundedBuffer, EdgeStatistics, Policy


class Edge:
    """One bounded, policy-governed channel carrying batches."""

    def __init__(self, name: str, capacity: int, policy: Policy) -> None:
        self.name = name
        self._buffer = BoundedBuffer(capacity, policy)
        self._closed = False
        self._not_full = trio.lowlevel.ParkingLot()
        self._port: InPort | None = None

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

        Raises :class:`trio.ClosedResourceError` after :meth:`close`. This is
        a checkpoint either way; cancellation while waiting leaves nothing
        queued.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"edge {self.name} is closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._buffer.offer(batch):
            # Queued: a cancellation now must not make the caller think it was not.
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            while True:
                await self._not_full.park()
                if self._closed:
                    raise trio.ClosedResourceError(f"edge {self.name} is closed")
                if self._buffer.offer(batch):
                    break
        if self._port is not None:
            self._port._wake()

    def send_nowait(self, batch: Sequence[Any]) -> bool:
        """Queue without waiting; False if a ``block`` edge is full (nothing queued)."""
        if self._closed:
            raise trio.ClosedResourceError(f"edge {self.name} is closed")
        ok = self._buffer.offer(batch)
        if ok and self._port is not None:
            self._port._wake()
        return ok

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
    """The receiving end of one or more edges; iterate it with ``async for``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.edges: list[Edge] = []
        self._lot = trio.lowlevel.ParkingLot()

    def attach(self, edge: Edge) -> None:
        """Add ``edge``; edges attached earlier are drained first."""
        self.edges.append(edge)
        edge._attach(self)

    def _wake(self) -> None:
        self._lot.unpark_all()

    def receive_nowait(self) -> Sequence[Any] | None:
        """The next batch if one is queued, else None (never waits)."""
        for edge in self.edges:
            batch = edge._take()
            if batch is not None:
                return batch
        return None

    @property
    def exhausted(self) -> bool:
        """True when every edge is closed and drained."""
        return all(e._drained() for e in self.edges)

    async def receive(self) -> Sequence[Any] | None:
        """The next batch, waiting if none is queued; None at end of stream."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            batch = self.receive_nowait()
            if batch is not None:
                # Taken: a cancellation here would lose the batch, so shield it.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            if self.exhausted:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return None
            await self._lot.park()

    def __aiter__(self) -> AsyncIterator[Sequence[Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Sequence[Any]]:
        while (batch := await self.receive()) is not None:
            yield batch


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
