"""Batches in flight in a graph, so that a source can pace itself on them.

A batch is *in flight* from the moment an edge queues it until the actor
that received it asks for its next batch (or says it is done with it): it
is then either handed on as new batches, which are in flight in turn, or
finished. When the count is zero the graph has *settled*: every batch a
source sent has been worked through.

Why a source waits for that (the replay source does, after every batch):
the graph runs on one thread, so letting several batches into it at once
gains no parallelism, while it does spread a batch's stages apart in time.
On the 2-vCPU reference VM (512 KiB L2 per core) a batch decoded but
matched and freed a few batches later runs the whole replay 1.6 times
slower than one taken through every stage while its events are still in the
cache (``scripts/bench_pipeline.py``). Live sources never wait: the kernel's
buffers, not the graph, decide their pace.

For the same reason the actors on the replay path drop their references to
a batch before they wait for the next one: the batch is freed at once, and
the next one is decoded into the memory it leaves, still in the cache,
instead of into memory last touched a batch earlier.
"""

from __future__ import annotations

import trio


class Flight:
    """The number of batches in flight in one graph, and a way to wait for zero.

    The runtime's edges and in ports keep the count (:mod:`edr.runtime.channel`);
    nothing else should change it.
    """

    __slots__ = ("_settled", "count")

    def __init__(self) -> None:
        self.count = 0
        self._settled = trio.lowlevel.ParkingLot()

    def add(self) -> None:
        """One more batch is in flight."""
        self.count += 1

    def done(self) -> None:
        """One batch has been worked through."""
        self.count -= 1
        if self.count == 0 and self._settled:
            self._settled.unpark_all()

    async def settled(self) -> None:
        """Return once no batch is in flight; at once if none is.

        A cancellation point always, a schedule point only when it waits.
        Cancelling it loses nothing: the batches in flight go on.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.count:
            await self._settled.park()
