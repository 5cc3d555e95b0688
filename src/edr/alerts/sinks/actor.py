"""The sink actor: the alert stream in, one spool and one delivery task per destination.

The graph feeds it from the alert edges (``detect.alerts``, ``scan.alerts``)
over ``block`` edges: alerts are never dropped on the way. Its intake turns
each alert into the document to deliver (:func:`~edr.alerts.sinks.document.sink_document`,
with its ``event.id``), encodes it once for its kind (an RFC 5424 message,
or the document's JSON), and stores the batch in every destination's spool,
all in one worker-thread call (so the event loop is never held for a
batch's encoding); it never waits on the network, so the edge only ever
waits on the disk, as the alert file's does. An alert that cannot be
encoded (a bug, not bad data) is logged, counted (``errors``) and skipped. Each destination's task
then delivers from its spool (:mod:`edr.alerts.sinks.destination`).

With no destination (none configured, or ``edr replay`` without the
section's ``replay = true``) the actor only drains its input: the graph
stays the same in every configuration, and an unused sink costs one hop
per alert batch.

Cancellation: alerts taken from the input and not yet stored, and those
still queued on the input edges, are what :meth:`SinkActor.unwritten`
reports (kind ``"<name> alerts"``); a store in progress runs to its end
(a worker thread is never abandoned with a half-written batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from edr.alerts.ecs import HostInfo
from edr.alerts.sinks.document import sink_document
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import InPort

if TYPE_CHECKING:  # the delivery machinery is imported where a destination is made (build.py)
    from edr.alerts.sinks.destination import Destination

#: What each statistics total sums over the destinations.
TOTALS = ("sent", "failed", "queued", "spooled", "spool_bytes", "lost", "resent")


class SinkActor(ActorBase):
    """Delivers every alert to each of ``destinations`` (see the module's notes).

    ``encode(doc)`` is the payload stored and sent for one document;
    ``extra_statistics`` adds the encoder's own counters.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str, destinations: Sequence[Destination], encode: Callable[[dict[str, Any]], bytes],
                 host: HostInfo | None = None, *, log: logging.Logger | None = None,
                 extra_statistics: Callable[[], dict[str, Any]] | None = None) -> None:
        super().__init__(name)
        self.destinations = list(destinations)
        self.encode = encode
        self.host = host if host is not None else HostInfo()
        self.log = log if log is not None else logging.getLogger("edr.sinks")
        self.extra_statistics = extra_statistics
        self.alerts = 0
        self.errors = 0
        self._held = 0
        self._port: InPort | None = None

    @property
    def enabled(self) -> bool:
        """True when there is somewhere to deliver to."""
        return bool(self.destinations)

    async def run(self, ports: Ports) -> None:
        """Store every batch in every spool while the destinations deliver; at the end, let them drain."""
        inp = ports.input("in")
        self._port = inp
        if not self.destinations:
            async for _ in inp:
                pass
            return
        async with trio.open_nursery() as nursery:
            for destination in self.destinations:
                await nursery.start(destination.run)
            try:
                async for batch in inp:
                    self._held = len(batch)
                    # The spools are no work on the graph: a replay source need not wait for them.
                    inp.done()
                    # Encoding (the ECS mapping, JSON, the syslog header) runs in the worker thread with the
                    # spool writes: the event loop is not held for a whole batch's worth of it.
                    await trio.to_thread.run_sync(self._encode_and_store, batch)
                    for destination in self.destinations:
                        destination.notify()
            finally:
                for destination in self.destinations:
                    destination.close_input()

    def _encode_and_store(self, batch: Sequence[Any]) -> None:
        payloads = []
        for item in batch:
            try:
                payloads.append(self.encode(sink_document(item, self.host)))
            except Exception as exc:  # a bug upstream or here: this alert is skipped, the others go on
                self.errors += 1
                self.log.error("%s sink: cannot encode %s (%s: %s); it is skipped (the alert file has it)",
                               self.name, _describe(item), type(exc).__name__, exc)
        for destination in self.destinations:
            destination.store(payloads)
        self.alerts += len(payloads)
        self._held = 0  # here, in the thread: once it ran, the batch is stored even if the caller was cancelled

    def unwritten(self) -> dict[str, int]:
        """Alerts given to this sink and not stored in its spools: held by the intake or still on its edges."""
        if not self.destinations:
            return {}
        queued = sum(e.statistics().depth + e.abandoned for e in self._port.edges) if self._port else 0
        return {f"{self.name} alerts": self._held + queued}

    def statistics(self) -> dict[str, Any]:
        """Totals over the destinations (sent, failed, queued, spooled, spool_bytes, lost, resent), and each one's."""
        if not self.destinations:
            return {"destinations": 0}
        each = {d.name: d.statistics() for d in self.destinations}
        stats: dict[str, Any] = {key: sum(s[key] for s in each.values()) for key in TOTALS}
        stats["alerts"] = self.alerts
        if self.errors:
            stats["errors"] = self.errors
        stats["destinations"] = each
        if self.extra_statistics is not None:
            stats.update(self.extra_statistics())
        return stats


def _describe(item: object) -> str:
    rule = getattr(item, "rule_id", None)
    if rule is None and isinstance(item, dict):
        rule = item.get("rule.id")
    return f"an alert of rule {rule!r}" if rule is not None else f"an item of type {type(item).__name__}"
