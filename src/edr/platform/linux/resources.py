"""This process's memory and CPU time: /proc/self/statm and getrusage(2)."""

from __future__ import annotations

import os
import resource

from edr.platform.facts import ResourceUsage
from edr.platform.linux.procfs import resident_bytes


def resource_usage() -> ResourceUsage:
    """Resident bytes now (statm), peak resident bytes and user + system CPU seconds (getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss * 1024  # Linux reports kilobytes
    rss = resident_bytes(os.getpid())
    return ResourceUsage(rss_bytes=peak if rss is None else rss, peak_rss_bytes=peak,
                         cpu_seconds=usage.ru_utime + usage.ru_stime)
