"""The router: process-lifecycle priority lane, bulk lane, connection aggregation.

Process exec/fork/exit go out on ``priority`` (a ``block`` edge: never shed
in user space); everything else on ``bulk``, whose edge policy (declared in
the graph) sheds under overload and counts what it drops.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from itertools import compress
from typing import Any, ClassVar

import trio

from edr.event import LIFECYCLE_CATEGORIES, NETWORK_CONNECTION, Event
from edr.route.aggregation import ConnectionAggregator
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import OutPort

_category = operator.attrgetter("category")


class Router(ActorBase):
    """Splits batches into lanes; optionally aggregates identical connections."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("priority", "bulk")

    def __init__(self, name: str, aggregator: ConnectionAggregator | None) -> None:
        super().__init__(name)
        self.aggregator = aggregator
        self.priority = 0
        self.bulk = 0

    def split(self, batch: Sequence[Event], now: float) -> tuple[list[Event], list[Event]]:
        """Sans-IO core: (priority, bulk) for one batch."""
        lifecycle = LIFECYCLE_CATEGORIES
        agg = self.aggregator
        if agg is None:
            # C-level passes (map, compress): this runs for every event of a replay
            flags = list(map(lifecycle.__contains__, map(_category, batch)))
            if not any(flags):
                return [], batch if type(batch) is list else list(batch)
            return list(compress(batch, flags)), list(compress(batch, map(operator.not_, flags)))
        if lifecycle.issuperset(map(_category, batch)):
            # process lifecycle only (an exec storm's batches): one C-level pass instead of the loop
            return batch if type(batch) is list else list(batch), agg.expire(now) if len(agg) else []
        prio = []
        bulk = agg.expire(now)
        for event in batch:
            category = event.category
            if category in lifecycle:
                prio.append(event)
            elif category != NETWORK_CONNECTION:
                bulk.append(event)
            else:
                keep, _ = agg.add(event, now, bulk)
                if keep:
                    bulk.append(event)
        return prio, bulk

    async def run(self, ports: Ports) -> None:
        """Route each batch; with aggregation, emit due aggregates even when input is idle."""
        inp = ports.input("in")
        prio_out, bulk_out = ports.output("priority"), ports.output("bulk")
        agg = self.aggregator
        if agg is None:
            # Nothing to emit on a timer: no timeout (a cancel scope per batch) needed.
            async for each in inp:
                await self._route(each, prio_out, bulk_out)
                del each  # freed before the wait for the next: see edr.runtime.flight
            return
        tick = 1.0
        while True:
            batch: Any = None
            timed_out = True
            if not len(agg):
                # no aggregate open, none can become due while waiting: no timer, and no cancel scope
                # (entered and left per batch, a scope costs more than routing an exec storm's batch)
                batch = await inp.receive()
                timed_out = False
            else:
                with trio.move_on_at(trio.current_time() + tick):
                    batch = await inp.receive()
                    timed_out = False
            if timed_out:
                due = agg.expire(time.monotonic())
                if due:
                    await bulk_out.send(due)
                continue
            if batch is None:
                break
            await self._route(batch, prio_out, bulk_out)
        rest = agg.flush()
        if rest:
            await bulk_out.send(rest)

    async def _route(self, batch: Sequence[Event], prio_out: OutPort, bulk_out: OutPort) -> None:
        prio, bulk = self.split(batch, time.monotonic())
        self.priority += len(prio)
        self.bulk += len(bulk)
        if prio:
            await prio_out.send(prio)
        if bulk:
            await bulk_out.send(bulk)

    def statistics(self) -> dict[str, Any]:
        """Events per lane and aggregation counters."""
        stats: dict[str, Any] = {"priority": self.priority, "bulk": self.bulk}
        if self.aggregator is not None:
            stats.update(aggregated=self.aggregator.aggregated, aggregates_open=len(self.aggregator),
                         aggregation_evicted=self.aggregator.evicted)
        return stats
