"""Seed the process cache with the processes that existed before the sensor (sans-IO).

The platform lists them (:meth:`~edr.platform.facade.Platform.running_processes`:
/proc on Linux); this turns each into the cache's record, naming its user
through the user cache.
"""

from __future__ import annotations

from collections.abc import Iterable

from edr.enrich.process_cache import ProcessCache, ProcessInfo
from edr.enrich.users import UserCache
from edr.platform.facts import ProcessSnapshot


def process_info(snapshot: ProcessSnapshot, users: UserCache | None = None) -> ProcessInfo:
    """The cache's record of a running process; its user named by the platform or from its uid."""
    user = snapshot.user
    if user is None and users is not None and snapshot.uid is not None:
        user = users.name(snapshot.uid)
    return ProcessInfo(
        pid=snapshot.pid,
        ppid=snapshot.ppid,
        image=snapshot.image,
        command_line=snapshot.command_line,
        uid=snapshot.uid,
        user=user,
        cwd=snapshot.cwd,
        start_time=snapshot.start_time,
        cgroup_path=snapshot.cgroup_path,
        container_id=snapshot.container_id,
    )


def seed_cache(cache: ProcessCache, processes: Iterable[ProcessSnapshot], users: UserCache | None = None) -> int:
    """Add every process in ``processes`` to ``cache``; return how many were added."""
    added = 0
    for snapshot in processes:
        cache.put(process_info(snapshot, users))
        added += 1
    return added
