"""The agent's statistics at one moment, read generically from the supervisor (sans-IO).

Only the runtime's own interfaces are used (:meth:`Supervisor.statistics`,
:meth:`Supervisor.actor_statistics`), and each actor's statistics are read by
the shape of what they hold, not by the actor's class, so that actors added
later (the sinks) show up without a change here:

- a sensor's ``families`` (``{family: {"events", "lost"}}``, the eBPF source)
  or ``providers`` (``{provider: {"lost"}}``, the ETW source);
- a detection actor's ``by_engine_severity`` and its engines' statistics
  (Sigma's ``categories``, ``candidates_evaluated``, ``matches``);
- a responder's outcomes (``terminated``, ``dry_run``...);
- a sink's delivery (``sent``, ``failed``, ``queued``, ``spooled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

#: Responder statistics that are outcomes of a kill request.
RESPONSE_OUTCOMES: Final = ("terminated", "dry_run", "identity_mismatch", "already_exited", "failed",
                            "below_severity", "dropped")
#: Keys that make an actor's statistics a sink's: delivery counters.
SINK_KEYS: Final = ("sent", "failed", "queued", "spooled")


@attrs.frozen
class EdgeCounters:
    """One edge: events sent and dropped (cumulative), depth and high-water mark (events), capacity (batches)."""

    sent: int
    dropped: int
    depth: int
    high_water: int
    capacity: int


@attrs.define
class Snapshot:
    """What the metrics endpoint and the loss monitor read, all from one moment."""

    events: dict[str, int] = attrs.field(factory=dict)
    lost: dict[str, int] = attrs.field(factory=dict)
    edges: dict[str, EdgeCounters] = attrs.field(factory=dict)
    categories: dict[str, int] = attrs.field(factory=dict)
    alerts: dict[tuple[str, str], int] = attrs.field(factory=dict)
    alerts_written: int = 0
    scan_alerts: int = 0
    sigma: dict[str, int] = attrs.field(factory=dict)
    response: dict[str, int] = attrs.field(factory=dict)
    sinks: dict[str, dict[str, int]] = attrs.field(factory=dict)
    coverage: dict[str, dict[str, int]] = attrs.field(factory=dict)

    @property
    def dropped(self) -> dict[str, int]:
        """Events dropped per edge (cumulative)."""
        return {name: e.dropped for name, e in self.edges.items()}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def take_snapshot(edges: Mapping[str, Any], actors: Mapping[str, Mapping[str, Any]]) -> Snapshot:
    """A :class:`Snapshot` of ``edges`` (:meth:`Supervisor.statistics`) and ``actors``
    (:meth:`Supervisor.actor_statistics`)."""
    snap = Snapshot()
    for name, s in edges.items():
        snap.edges[name] = EdgeCounters(sent=s.sent, dropped=s.dropped, depth=s.depth, high_water=s.high_water,
                                        capacity=s.capacity)
    for name, stats in actors.items():
        if not isinstance(stats, Mapping):
            continue
        _read_actor(snap, name, stats)
    return snap


def _read_actor(snap: Snapshot, name: str, stats: Mapping[str, Any]) -> None:
    families = stats.get("families")
    if isinstance(families, Mapping):  # the eBPF source
        for fam, c in families.items():
            if isinstance(c, Mapping):
                snap.events[str(fam)] = snap.events.get(str(fam), 0) + (_int(c.get("events")) or 0)
                snap.lost[str(fam)] = snap.lost.get(str(fam), 0) + (_int(c.get("lost")) or 0)
    providers = stats.get("providers")
    if isinstance(providers, Mapping):  # the ETW source: what it sent, what was lost per provider
        sent = _int(stats.get("sent"))
        if sent is not None:
            snap.events["etw"] = snap.events.get("etw", 0) + sent
        for prov, c in providers.items():
            if isinstance(c, Mapping):
                snap.lost[str(prov)] = snap.lost.get(str(prov), 0) + (_int(c.get("lost")) or 0)
        return
    by = stats.get("by_engine_severity")
    if isinstance(by, Mapping):  # the detection actor
        for key, n in by.items():
            engine, _, severity = str(key).partition("/")
            snap.alerts[(engine, severity)] = snap.alerts.get((engine, severity), 0) + (_int(n) or 0)
        sigma = stats.get("sigma")
        if isinstance(sigma, Mapping):
            for key in ("events", "candidates_evaluated", "matches", "errors"):
                n = _int(sigma.get(key))
                if n is not None:
                    snap.sigma[key] = n
            cats = sigma.get("categories")
            if isinstance(cats, Mapping):
                snap.categories.update({str(k): v for k, v in cats.items() if _int(v) is not None})
        return
    if "loss_alerts" in stats:  # the coverage actor
        for key in ("loss_alerts", "loss_suppressed"):
            value = stats.get(key)
            if isinstance(value, Mapping):
                snap.coverage[key] = {str(k): v for k, v in value.items() if _int(v) is not None}
        return
    if "terminated" in stats and "dry_run" in stats:  # the responder
        for key in RESPONSE_OUTCOMES:
            n = _int(stats.get(key))
            if n is not None:
                snap.response[key] = n
        return
    if "unwritten" in stats and "alerts" in stats:  # the alert writer
        n = _int(stats.get("alerts"))
        if n is not None:
            snap.alerts_written += n
        return
    if "completed" in stats and "alerts" in stats:  # the scanner
        snap.scan_alerts += _int(stats.get("alerts")) or 0
        return
    if "sent" in stats and ("failed" in stats or "spooled" in stats):  # a sink
        snap.sinks[name] = {k: n for k in SINK_KEYS if (n := _int(stats.get(k))) is not None}
