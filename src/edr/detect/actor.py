"""The detection actor: every engine over every event, alerts out."""

from __future__ import annotations

from typing import Any, ClassVar

from edr.detect.alert import Alert, Detector
from edr.detect.engines import load_engines
from edr.runtime.actor import ActorBase, ActorContext, Ports


class DetectActor(ActorBase):
    """Runs the sans-IO engines (Sigma with correlation, IOC, simple rules) in event order.

    An engine that raises on an event is logged with the event's category
    and counted; the event is skipped for that engine, the agent goes on.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("alerts",)

    def __init__(self, name: str, engines: list[Detector], log: Any) -> None:
        super().__init__(name)
        self.engines = engines
        self.log = log
        self.events = 0
        self.alerts = 0
        self.errors = 0

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> DetectActor:
        """Load the engines configured in ``ctx.config``."""
        return cls(name, load_engines(ctx), ctx.log)

    async def run(self, ports: Ports) -> None:
        """Match each batch; send its alerts as one batch."""
        out = ports.output("alerts")
        engines = [(e.name, e.match) for e in self.engines]
        async for batch in ports.input("in"):
            alerts: list[Alert] = []
            for event in batch:
                for engine_name, match in engines:
                    try:
                        found = match(event)
                    except Exception:
                        self.errors += 1
                        if self.errors <= 20:
                            self.log.exception("engine %s failed on a %s event (seq %s); skipped",
                                               engine_name, event.category, event.seq)
                        continue
                    if found:
                        alerts.extend(found)
            self.events += len(batch)
            if alerts:
                self.alerts += len(alerts)
                await out.send(alerts)

    def statistics(self) -> dict[str, Any]:
        """Events seen, alerts raised, engine errors, and each engine's own counters."""
        stats: dict[str, Any] = {"events": self.events, "alerts": self.alerts, "errors": self.errors}
        for e in self.engines:
            getter = getattr(e, "statistics", None)
            if getter is not None:
                stats[e.name] = getter()
        return stats
