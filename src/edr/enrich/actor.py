"""The enricher actor: process, user, DNS and container context on live events.

In replay the recorded events are already complete (edr's own stream is
written after enrichment; EVTX carries its own context), so the actor passes
them through unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from edr.runtime.actor import ActorBase, Ports


class EnricherActor(ActorBase):
    """Calls the sans-IO :class:`edr.enrich.enricher.Enricher` per event."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, enricher: Any | None) -> None:
        super().__init__(name)
        self.enricher = enricher
        self.events = 0

    async def run(self, ports: Ports) -> None:
        """Enrich each batch in order and pass it on."""
        out = ports.output("out")
        enricher = self.enricher
        async for batch in ports.input("in"):
            self.events += len(batch)
            if enricher is None:
                await out.send(batch)
            else:
                await out.send([enricher.process(e) for e in batch])
            del batch  # freed before the wait for the next: see edr.runtime.flight

    def statistics(self) -> dict[str, Any]:
        """Events seen and the caches' counters."""
        stats: dict[str, Any] = {"events": self.events}
        if self.enricher is not None:
            stats.update(self.enricher.statistics())
        return stats
