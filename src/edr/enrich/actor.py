"""The enricher actor: process, user, DNS and container context on events.

Live Linux enriches from the process cache seeded with the running
processes. Replay runs the same correlations over what the recording holds
(:mod:`edr.enrich.replay`: DNS answers name later connections, recorded
process creations name their children's parents), one timeline per
recording and without looking anything up on this machine. Live Windows
(ETW) passes events through: its events carry their own context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from edr.event import Event
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.transform import transform


class EnricherActor(ActorBase):
    """Calls the sans-IO :class:`edr.enrich.enricher.Enricher` per event."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, enricher: Any | None) -> None:
        super().__init__(name)
        self.enricher = enricher
        self.events = 0

    def enrich(self, batch: Sequence[Event]) -> Sequence[Event]:
        """Sans-IO core: ``batch`` enriched, in order (the batch itself when there is no enricher)."""
        self.events += len(batch)
        enricher = self.enricher
        if enricher is None:
            return batch
        whole = getattr(enricher, "process_batch", None)
        if whole is not None:  # the live Enricher: one call per batch
            result: list[Event] = whole(batch)
            return result
        process = enricher.process
        return [process(e) for e in batch]

    async def run(self, ports: Ports) -> None:
        """Enrich each batch in order and pass it on."""
        await transform(ports, self.enrich)

    def statistics(self) -> dict[str, Any]:
        """Events seen and the caches' counters."""
        stats: dict[str, Any] = {"events": self.events}
        if self.enricher is not None:
            stats.update(self.enricher.statistics())
        return stats
