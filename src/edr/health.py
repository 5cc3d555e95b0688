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
import os
import resource
from typing import TYPE_CHECKING, Any

import orjson
import trio

from edr.platform.linux import systemd

if TYPE_CHECKING:
    from edr.runtime.supervisor import Supervisor

log = logging.getLogger("edr.health")


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def health_record(sup: Supervisor, final: bool = False) -> dict[str, Any]:
    """A snapshot of the running graph."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
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
        "rss_bytes": _rss_bytes(),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
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
    """Ping systemd's watchdog while the event loop is responsive (no-op outside systemd)."""
    interval = systemd.watchdog_interval()
    if interval is None:
        return
    while True:
        systemd.notify("WATCHDOG=1")
        await trio.sleep(interval)
