"""Health records: what flows, what is lost, what it costs.

A record is one log line ``health {json}`` at ``[health] interval_secs``
and a final one at shutdown: events per actor, kernel-lost per sensor
family, per-edge sent/dropped/high-water, cache sizes, RSS and CPU seconds.
``unwritten`` counts, per kind (alerts, events), what the writers were given
and have not written; in the final record of a stop that had to cancel
(``cancelled`` says why) that is what was lost.

Every count in a record is cumulative since the start, so the final record
is the last periodic one plus what happened after it: no counter of the final
record is below the last periodic one's, and the sensor's ``lost`` in it is
the kernel's count when the sensor closed (the eBPF source keeps its last
counters; read after close they would all be 0). Precisely: the final record
carries ``after_last``, for each cumulative counter (sensor events and lost
per family, edge sent and dropped, ``dropped_total``) what it added to the
last periodic record, so that final = last periodic + ``after_last``, with
every ``after_last`` value at least 0.

A heartbeat (``[coverage] heartbeat_secs``) is a shorter line,
``heartbeat {json}``: its number, uptime, and the totals an operator checks
first (events, lost, dropped, alerts); the metrics endpoint exports its count
and time.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import trio

from edr.platform import current

if TYPE_CHECKING:
    from edr.runtime.supervisor import Supervisor

log = logging.getLogger("edr.health")


#: Per supervisor, the last periodic record logged (what the final record's ``after_last`` is counted from).
_last_periodic: weakref.WeakKeyDictionary[Supervisor, dict[str, Any]] = weakref.WeakKeyDictionary()


def _counters(record: Mapping[str, Any]) -> dict[str, int]:
    """The cumulative counters of a record, by a flat name: sensor events and lost per family, edge
    sent and dropped per edge, ``dropped_total``."""
    out: dict[str, int] = {"dropped_total": record["dropped_total"]}
    for actor, stats in record["actors"].items():
        families = stats.get("families") if isinstance(stats, Mapping) else None
        if isinstance(families, Mapping):
            for fam, counts in families.items():
                for key in ("events", "lost"):
                    if isinstance(counts, Mapping) and isinstance(counts.get(key), int):
                        out[f"{actor}.{fam}.{key}"] = counts[key]
    for edge, counts in record["edges"].items():
        out[f"{edge}.sent"] = counts["sent"]
        out[f"{edge}.dropped"] = counts["dropped"]
    return out


def after_last(final: Mapping[str, Any], last: Mapping[str, Any]) -> dict[str, int]:
    """What each cumulative counter of ``final`` added to ``last`` (the last periodic record)."""
    before = _counters(last)
    return {k: v - before.get(k, 0) for k, v in _counters(final).items()}


def health_record(sup: Supervisor, final: bool = False) -> dict[str, Any]:
    """A snapshot of the running graph."""
    usage = current().resource_usage()
    edges = {
        name: {"sent": s.sent, "received": s.received, "dropped": s.dropped, "depth": s.depth,
               "high_water": s.high_water, "abandoned": sup.edges[name].abandoned}
        for name, s in sup.statistics().items()
    }
    record: dict[str, Any] = {
        "final": final,
        "actors": sup.actor_statistics(),
        "edges": edges,
        "dropped_total": sum(e["dropped"] for e in edges.values()),
        "unwritten": sup.unwritten(),
        "rss_bytes": usage.rss_bytes,
        "peak_rss_bytes": usage.peak_rss_bytes,
        "cpu_seconds": round(usage.cpu_seconds, 3),
    }
    if final:
        record["cancelled"] = sup.cancelled
        last = _last_periodic.get(sup)
        if last is not None:
            record["after_last"] = after_last(record, last)
    return record


def log_health(sup: Supervisor, final: bool = False) -> None:
    """Write one health record to the operational log."""
    record = health_record(sup, final)
    if not final:
        _last_periodic[sup] = record
    log.info("health %s", orjson.dumps(record, default=str).decode())


async def health_task(sup: Supervisor, interval: float) -> None:
    """Log a health record every ``interval`` seconds until cancelled."""
    while True:
        await trio.sleep(interval)
        log_health(sup)


def _totals(actors: Mapping[str, Any]) -> dict[str, int]:
    """Sensor events and lost (every family or provider), alerts written: summed from actor statistics."""
    out = {"events": 0, "lost": 0, "alerts": 0}
    for stats in actors.values():
        if not isinstance(stats, Mapping):
            continue
        for key in ("families", "providers"):
            groups = stats.get(key)
            if isinstance(groups, Mapping):
                for counts in groups.values():
                    if isinstance(counts, Mapping):
                        out["events"] += int(counts.get("events", 0) or 0)
                        out["lost"] += int(counts.get("lost", 0) or 0)
        if "unwritten" in stats and isinstance(stats.get("alerts"), int):  # an alert writer
            out["alerts"] += stats["alerts"]
    return out


class Heartbeat:
    """Heartbeat lines in the operational log: proof of life with the headline totals.

    ``count`` and ``last`` (epoch seconds of the last line, None before the
    first) are what the metrics endpoint exports.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.count = 0
        self.last: float | None = None

    def record(self, sup: Supervisor) -> dict[str, Any]:
        """The next heartbeat record (counts it)."""
        now = self.clock()
        self.count += 1
        self.last = now
        usage = current().resource_usage()
        dropped = sum(s.dropped for s in sup.statistics().values())
        return {"beat": self.count, "uptime_secs": round(now - self.started, 3),
                **_totals(sup.actor_statistics()), "dropped": dropped,
                "rss_bytes": usage.rss_bytes, "cpu_seconds": round(usage.cpu_seconds, 3)}

    async def run(self, sup: Supervisor, interval: float) -> None:
        """Log a heartbeat every ``interval`` seconds until cancelled."""
        while True:
            await trio.sleep(interval)
            log.info("heartbeat %s", orjson.dumps(self.record(sup)).decode())


async def watchdog_task(sup: Supervisor) -> None:
    """Ping the service manager's watchdog while the event loop is responsive (no-op when none is armed)."""
    service = current().service
    interval = service.watchdog_interval()
    if interval is None:
        return
    while True:
        service.notify_watchdog()
        await trio.sleep(interval)
