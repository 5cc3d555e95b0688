"""The alert writer's core: alerts in, chained ECS NDJSON lines out (dedup, ECS mapping, chain), sans-IO.

The writer actor (:mod:`edr.alerts.actor`) becomes a loop around it: for each
batch ``lines = core.accept(batch)`` and write them; when ``core.due()`` has
passed, ``core.tick(now)`` and write what it returns; at the end of its input
``core.finish()`` and write that. The lines must be written in the order they
are returned (the chain links each to the one before).

Time: dedup windows are measured in the alerts' own times
(:mod:`edr.alerts.dedup`). An alert closes the windows its time has passed,
so replay, whose recorded alerts are years old, needs no clock at all and
gets the same result as live; a live writer also calls :meth:`tick` with the
wall clock so that a quiet host still gets its rollups (replay must not: its
alert times are not the clock's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edr.alerts.chain import HASH_KEY, AlertChain
from edr.alerts.dedup import AlertDeduplicator
from edr.alerts.ecs import HostInfo, alert_document
from edr.alerts.sinks.document import ID_KEY, alert_id
from edr.detect.alert import Alert


class Lines(list[bytes]):
    """Lines to write, in order, the name of the rule of each (for counts once they are written), and the
    documents they encode (for the sinks: with ``event.id`` and the chain's fields, as in the file)."""

    __slots__ = ("docs", "rules")

    def __init__(self, lines: list[bytes], rules: list[str], docs: list[dict[str, Any]] | None = None) -> None:
        super().__init__(lines)
        self.rules = rules
        self.docs: list[dict[str, Any]] = docs if docs is not None else []


class AlertLines:
    """Dedup (optional), :func:`~edr.alerts.ecs.to_ecs` and :meth:`AlertChain.seal`, in that order.

    Not thread-safe; no I/O. ``alerts`` counts the alerts that became lines
    (firsts and rollups), ``by_rule`` the same per rule name.
    """

    def __init__(self, host: HostInfo, chain: AlertChain, dedup: AlertDeduplicator | None = None) -> None:
        self.host = host
        self.chain = chain
        self.dedup = dedup
        self.alerts = 0
        self.by_rule: dict[str, int] = {}

    def accept(self, alerts: Iterable[Alert]) -> Lines:
        """The lines to write for ``alerts``: each first at once, rollups of windows their times closed."""
        dedup = self.dedup
        if dedup is None:
            return self._lines(alerts)
        out: list[Alert] = []
        for alert in alerts:
            out.extend(dedup.offer(alert))
        return self._lines(out)

    @property
    def held(self) -> int:
        """Alerts accepted and not yet in any line: the repeats that open dedup windows count."""
        return self.dedup.held if self.dedup is not None else 0

    def due(self) -> float | None:
        """When :meth:`tick` has a rollup to write (the earliest window end), or None."""
        return self.dedup.next_deadline() if self.dedup is not None else None

    def tick(self, now: float) -> Lines:
        """The rollups of the windows that ended by ``now`` (the wall clock, live only), as lines."""
        return self._lines(self.dedup.expire(now)) if self.dedup is not None else Lines([], [])

    def finish(self) -> Lines:
        """The rollups still pending, as lines (end of input)."""
        return self._lines(self.dedup.flush()) if self.dedup is not None else Lines([], [])

    def _lines(self, alerts: Iterable[Alert]) -> Lines:
        host, seal, by_rule = self.host, self.chain.seal, self.by_rule
        lines: list[bytes] = []
        rules: list[str] = []
        docs: list[dict[str, Any]] = []
        for alert in alerts:
            doc = alert_document(alert, host)
            # the same alert always has the same id (receivers dedup on it after a resend)
            if ID_KEY not in doc:
                doc[ID_KEY] = alert_id(doc)
            lines.append(seal(doc))
            doc[HASH_KEY] = self.chain.last_hash
            docs.append(doc)
            rules.append(alert.rule_name)
            by_rule[alert.rule_name] = by_rule.get(alert.rule_name, 0) + 1
        self.alerts += len(lines)
        return Lines(lines, rules, docs)

    def statistics(self) -> dict[str, Any]:
        """Alerts written as lines, the chain's counters and, with dedup, its counters."""
        stats: dict[str, Any] = {"alerts": self.alerts, "chain": self.chain.statistics()}
        if self.dedup is not None:
            stats["dedup"] = self.dedup.statistics()
        return stats
