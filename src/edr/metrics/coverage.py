"""When the agent was partly blind: telemetry-loss reports, rate limited per kind (sans-IO).

Two kinds of loss, each its own rate limit:

- ``kernel_lost``: records the sensor could not queue (the eBPF ring buffers
  were full, ETW or its bridge dropped them), per family or provider;
- ``edge_dropped``: events an edge of the graph shed under its overflow
  policy (``drop_oldest``/``drop_newest``), per edge.

:meth:`LossMonitor.observe` takes the cumulative counters of the moment and
returns at most one :class:`LossReport` per kind: the loss since the previous
report of that kind (so consecutive reports add up to the totals, nothing is
counted twice and nothing is forgotten while the rate limit holds a report
back), the cumulative totals, and how many checks found loss while the limit
held the report back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

KERNEL_LOST: Final = "kernel_lost"
EDGE_DROPPED: Final = "edge_dropped"
KINDS: Final = (KERNEL_LOST, EDGE_DROPPED)


class RateLimit:
    """A token bucket: ``burst`` takes at once, then one per ``interval`` seconds (sans-IO; times are given)."""

    def __init__(self, interval: float, burst: int) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError(f"need interval > 0 and burst >= 1, not {interval!r}, {burst!r}")
        self.interval = interval
        self.burst = burst
        self.tokens = float(burst)
        self.last: float | None = None

    def take(self, now: float) -> bool:
        """Take one token if one is available at ``now``."""
        if self.last is not None:
            self.tokens = min(float(self.burst), self.tokens + max(now - self.last, 0.0) / self.interval)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@attrs.frozen
class LossReport:
    """One kind's loss since its previous report (``counts``, per family or edge, only those that lost),
    the cumulative ``totals`` of every family or edge, the checks that found loss but were held back by
    the rate limit (``suppressed``), and the seconds since the previous report (``window``, None: first)."""

    kind: str
    counts: dict[str, int]
    totals: dict[str, int]
    suppressed: int
    window: float | None

    @property
    def count(self) -> int:
        """Everything lost in this report's window."""
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        """Everything lost since the start."""
        return sum(self.totals.values())


class LossMonitor:
    """Turns cumulative loss counters into rate-limited :class:`LossReport` s, per kind."""

    def __init__(self, interval: float = 30.0, burst: int = 3) -> None:
        self.limits = {kind: RateLimit(interval, burst) for kind in KINDS}
        self._reported: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        self._since: dict[str, float | None] = dict.fromkeys(KINDS)
        self.reports = dict.fromkeys(KINDS, 0)
        self.suppressed = dict.fromkeys(KINDS, 0)
        self._held = dict.fromkeys(KINDS, 0)

    def observe(self, now: float, lost: Mapping[str, int], dropped: Mapping[str, int]) -> list[LossReport]:
        """The reports due at ``now`` given the cumulative ``lost`` (per family) and ``dropped`` (per edge)."""
        out = []
        for kind, totals in ((KERNEL_LOST, lost), (EDGE_DROPPED, dropped)):
            report = self._observe(kind, now, totals)
            if report is not None:
                out.append(report)
        return out

    def _observe(self, kind: str, now: float, totals: Mapping[str, int]) -> LossReport | None:
        reported = self._reported[kind]
        # a counter that went down (a restarted actor's) starts again from 0
        counts = {k: v - reported.get(k, 0) if v >= reported.get(k, 0) else v for k, v in totals.items()}
        counts = {k: v for k, v in counts.items() if v > 0}
        if not counts:
            return None
        if not self.limits[kind].take(now):
            self._held[kind] += 1
            self.suppressed[kind] += 1
            return None
        since = self._since[kind]
        report = LossReport(kind=kind, counts=counts, totals=dict(totals), suppressed=self._held[kind],
                            window=None if since is None else now - since)
        self._reported[kind] = dict(totals)
        self._since[kind] = now
        self._held[kind] = 0
        self.reports[kind] += 1
        return report

    def pending(self, lost: Mapping[str, int], dropped: Mapping[str, int]) -> dict[str, int]:
        """Per kind, the loss not reported yet given these cumulative counters."""
        out = {}
        for kind, totals in ((KERNEL_LOST, lost), (EDGE_DROPPED, dropped)):
            reported = self._reported[kind]
            out[kind] = sum(max(v - reported.get(k, 0), 0) for k, v in totals.items())
        return out
