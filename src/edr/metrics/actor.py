"""The coverage actor: raises ``EDR-TELEMETRY-LOSS`` alerts into the alert edge when telemetry was lost.

A source in the graph (``kind = "coverage"``, output ``alerts`` into
``alerts.in``), so its alerts reach the alert writer, and whatever else the
graph feeds from that port, like any detection's. Every ``check_secs`` it
reads the supervisor's statistics (given by :meth:`CoverageActor.bind`: the
runtime knows nothing of alerts, and actors know nothing of the supervisor
until the agent binds them) and asks the sans-IO
:class:`~edr.metrics.coverage.LossMonitor` which reports are due.

Backpressure: the alert edge blocks; a full alert edge delays the next check
(the counters are cumulative, so a delayed check loses nothing). On stop, as
a source, it is cancelled with the sensors: it makes one last check and
sends what is due, bounded by :data:`FINAL_SEND_SECS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Final

import trio

from edr.detect.alert import Alert
from edr.metrics.coverage import KINDS, LossMonitor, LossReport
from edr.metrics.snapshot import Snapshot
from edr.runtime.actor import ActorBase, Ports

#: The rule id of every loss alert.
RULE_ID: Final = "EDR-TELEMETRY-LOSS"
#: The longest a stopping coverage actor waits to hand its last alert to the (draining) alert edge.
FINAL_SEND_SECS: Final = 2.0

_NAMES: Final = {
    "kernel_lost": "Telemetry lost: the sensor could not deliver events",
    "edge_dropped": "Telemetry lost: the pipeline shed events",
}


def loss_alert(report: LossReport, now: float) -> Alert:
    """The ``EDR-TELEMETRY-LOSS`` alert of ``report`` (severity high; its counts in ``edr.telemetry.*``)."""
    detail = ", ".join(f"{k} {n}" for k, n in sorted(report.counts.items()))
    sources = sorted(report.counts)
    ecs: dict[str, Any] = {
        "edr.telemetry.kind": report.kind,
        "edr.telemetry.count": report.count,
        "edr.telemetry.total": report.total,
        "edr.telemetry.sources": sources,
        "edr.telemetry.counts": [report.counts[k] for k in sources],
        "edr.telemetry.totals": [report.totals.get(k, 0) for k in sources],
        "edr.telemetry.suppressed": report.suppressed,
    }
    if report.window is not None:
        ecs["edr.telemetry.window"] = round(report.window, 3)
    return Alert(rule_id=RULE_ID, rule_name=_NAMES[report.kind], severity="high", engine="edr",
                 event=None, tags=("edr.coverage",),
                 description=f"{report.count} events lost ({report.kind}: {detail}); the host was partly "
                             f"unobserved", ecs=ecs, timestamp=now)


class CoverageActor(ActorBase):
    """Periodic loss checks; one alert per due :class:`LossReport`."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("alerts",)
    is_source: ClassVar = True

    def __init__(self, name: str, monitor: LossMonitor, check_secs: float, log: logging.Logger,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name)
        self.monitor = monitor
        self.check_secs = check_secs
        self.log = log
        self.clock = clock
        self.checks = 0
        self._probe: Callable[[], Snapshot] | None = None

    def bind(self, probe: Callable[[], Snapshot]) -> None:
        """Read the agent's statistics through ``probe`` (called on the event loop); unbound, nothing is checked."""
        self._probe = probe

    def check(self) -> list[Alert]:
        """Sans-IO step: the alerts due now."""
        if self._probe is None:
            return []
        snap = self._probe()
        self.checks += 1
        # the coverage actor's own edges are left out: a dropped loss alert is no telemetry
        now = self.clock()
        reports = self.monitor.observe(now, snap.lost, {k: v for k, v in snap.dropped.items()
                                                        if not k.startswith(f"{self.name}.")})
        for report in reports:
            self.log.warning("telemetry loss (%s): %d events lost since the last report (%s), %d since the start",
                             report.kind, report.count,
                             ", ".join(f"{k} {n}" for k, n in sorted(report.counts.items())), report.total)
        return [loss_alert(r, now) for r in reports]

    async def run(self, ports: Ports) -> None:
        """Check every ``check_secs`` until cancelled; then one last check, sent within FINAL_SEND_SECS."""
        out = ports.output("alerts")
        try:
            while True:
                await trio.sleep(self.check_secs)
                alerts = self.check()
                if alerts:
                    await out.send(alerts)
        finally:
            with trio.move_on_after(FINAL_SEND_SECS) as scope:
                scope.shield = True
                alerts = self.check()
                if alerts:
                    await out.send(alerts)

    def statistics(self) -> dict[str, Any]:
        """Checks made, loss alerts raised and held back by the rate limit, per kind."""
        return {"checks": self.checks, "loss_alerts": dict(self.monitor.reports),
                "loss_suppressed": dict(self.monitor.suppressed), "kinds": list(KINDS)}
