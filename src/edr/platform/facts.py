"""Plain records the platform layers hand to the rest of edr (no OS calls here)."""

from __future__ import annotations

import attrs


@attrs.frozen
class ProcessSnapshot:
    """One process that was running when the platform was asked (what seeds the process cache).

    ``uid`` is the POSIX user id (None on Windows, which has SIDs); ``user``
    is set when the platform names the account itself (Windows' psutil
    ``DOMAIN\\user``), else the caller resolves ``uid`` through its cache.
    ``start_time`` is in seconds since the epoch; ``cgroup_path`` and
    ``container_id`` are Linux's.
    """

    pid: int
    ppid: int
    image: str
    command_line: str
    uid: int | None = None
    user: str | None = None
    cwd: str | None = None
    start_time: float | None = None
    cgroup_path: str | None = None
    container_id: str | None = None


@attrs.frozen
class ResourceUsage:
    """What this process costs now: resident and peak resident bytes, CPU seconds (user + system)."""

    rss_bytes: int
    peak_rss_bytes: int
    cpu_seconds: float
