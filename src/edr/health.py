"""Health records: what flows, what is lost, what it costs.

A record is one log line ``health {json}`` at ``[health] interval_secs``
and a final one at shutdown: events per actor, kernel-lost per sensor
family, per-edge sent/dropped/high-water, cache sizes, RSS and CPU seconds.
``unwritten`` counts, per kind (alerts, events), what the writers were given
and have not written; in the final record of a stop that had to cancel
(``cancelled`` says why) that is what was lost.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from edr.platform import current

if TYPE_CHECKING:
    from edr.runtime.supervisor import Supervisor

log = logging.getLogger("edr.health")


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
    return record


def log_health(sup: Supervisor, final: bool = False) -> None:
    """Write one health record to the operational log."""
    log.info("health %s", orjson.dumps(health_record(sup, final), default=str).decode())


async def health_task(sup: Supervisor, interval: float) -> None:
    """Log a health record every ``interval`` seconds until cancelled."""
    while True:
        await trio.sleep(interval)
        log_health(sup)


async def watchdog_task(sup: Supervisor) -> None:
    """Ping the service manager's watchdog while the event loop is responsive (no-op when none is armed)."""
    service = current().service
    interval = service.watchdog_interval()
    if interval is None:
        return
    while True:
        service.notify_watchdog()
        await trio.sleep(interval)
