"""The detection actor: every engine over every event, alerts out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from edr.detect.alert import Alert, Detector
from edr.detect.reloadable import RuleSetHolder, carry_correlations
from edr.event import Event
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.errlog import ErrorLog
from edr.runtime.transform import transform


class DetectActor(ActorBase):
    """Runs the sans-IO engines (Sigma with correlation, IOC, simple rules) in event order.

    An engine that raises on an event is logged with the event's category
    and counted; the event is skipped for that engine, the agent goes on.
    Per engine, the first failures are logged with their traceback and the
    rest only counted (:class:`~edr.runtime.errlog.ErrorLog`).

    With ``rules`` (a :class:`~edr.detect.reloadable.RuleSetHolder`), a
    hot reload's new engines are taken before the next batch, never within
    one; the Sigma correlation state of unchanged correlations moves over.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("alerts",)

    def __init__(self, name: str, engines: list[Detector], log: logging.Logger, *,
                 rules: RuleSetHolder | None = None) -> None:
        super().__init__(name)
        self.log = log
        self._rules = rules
        self._ruleset = rules.current if rules is not None else None
        self.rules_version = rules.version if rules is not None else 0
        self._use(engines)
        self.events = 0
        self.alerts = 0
        #: alerts per "engine/severity" (for the metrics endpoint; alerts are few, so counted one by one)
        self.by_engine_severity: dict[str, int] = {}
        self._event_errors = ErrorLog(log, "engine failures on events")
        self._batch_errors = ErrorLog(log, "engine failures on batches")

    def _use(self, engines: list[Detector]) -> None:
        self.engines = engines
        # each engine with its batch entry point, or None: looked up once, not per batch
        self._batch_calls = [(e, getattr(e, "match_batch", None)) for e in engines]

    def _refresh(self) -> None:
        """Take the rule set a reload published, between two batches (see the class docstring)."""
        holder = self._rules
        if holder is None or holder.version == self.rules_version:
            return
        current = holder.current
        old = self._ruleset
        carried = (0, 0)
        if old is not None and old.detection.sigma is not None and current.detection.sigma is not None:
            carried = carry_correlations(old.detection.sigma, current.detection.sigma, old.sigma_digests,
                                         current.sigma_digests)
        self._ruleset = current
        self._use(list(current.detection.engines))
        self.log.info("%s: rule set #%d in use from event %d on (was #%d); correlation state of %d "
                      "correlations (%d groups) carried over", self.name, current.version, self.events + 1,
                      self.rules_version, carried[0], carried[1])
        self.rules_version = current.version

    @property
    def errors(self) -> int:
        """Events an engine raised on (each skipped for that engine)."""
        return self._event_errors.total

    @property
    def batch_errors(self) -> int:
        """Batches an engine's ``match_batch`` raised on (each matched again event by event)."""
        return self._batch_errors.total

    def detect(self, batch: Sequence[Event]) -> list[Alert]:
        """Sans-IO core: every engine over ``batch``; the alerts in event order.

        An engine with ``match_batch`` gets the whole batch in one call; if
        that raises, the batch is run again event by event through ``match``
        so that only the offending event is skipped. Alerts of several engines
        are merged back into event order (engine order within one event).
        """
        self._refresh()
        alerts: list[Alert] = []
        engines_with_alerts = 0
        for engine, match_batch in self._batch_calls:
            found: list[Alert] | None = None
            if match_batch is not None:
                try:
                    found = match_batch(batch)
                except Exception:
                    self._batch_errors.report("engine %s failed on a batch of %d events; matching them one by one",
                                              engine.name, len(batch), key=engine.name, exc_info=True)
                    found = None
            if found is None:
                found = self._each(engine, batch)
            if found:
                engines_with_alerts += 1
                alerts.extend(found)
        if engines_with_alerts > 1:
            position = {id(e): i for i, e in enumerate(batch)}
            last = len(batch)
            alerts.sort(key=lambda a: position.get(id(a.event), last))
        self.events += len(batch)
        self.alerts += len(alerts)
        by = self.by_engine_severity
        for alert in alerts:
            key = f"{alert.engine}/{alert.severity}"
            by[key] = by.get(key, 0) + 1
        return alerts

    def _each(self, engine: Detector, batch: Sequence[Event]) -> list[Alert]:
        out: list[Alert] = []
        for event in batch:
            try:
                found = engine.match(event)
            except Exception:
                self._event_errors.report("engine %s failed on a %s event (seq %s); skipped", engine.name,
                                          event.category, event.seq, key=engine.name, exc_info=True)
                continue
            if found:
                out.extend(found)
        return out

    async def run(self, ports: Ports) -> None:
        """Match each batch; send its alerts as one batch."""
        await transform(ports, self.detect, out="alerts")

    def statistics(self) -> dict[str, Any]:
        """Events seen, alerts raised, engine errors, and each engine's own counters."""
        stats: dict[str, Any] = {"events": self.events, "alerts": self.alerts, "errors": self.errors,
                                 "batch_errors": self.batch_errors, "by_engine_severity": dict(self.by_engine_severity),
                                 "rules_version": self.rules_version}
        for e in self.engines:
            getter = getattr(e, "statistics", None)
            if getter is not None:
                stats[e.name] = getter()
        return stats
