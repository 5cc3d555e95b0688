"""What is known about each live process: image, command line, parent, user.

Updated from fork, exec and exit events (sans-IO) and seeded from /proc at
start (:mod:`edr.enrich.proc_seed`), so that a process that exits within a
millisecond of its exec still has its parent and command line.
"""

from __future__ import annotations

from collections import deque

import attrs


@attrs.define(slots=True)
class ProcessInfo:
    """One process as the cache knows it."""

    pid: int
    ppid: int = 0
    image: str = ""
    command_line: str = ""
    uid: int | None = None
    user: str | None = None
    cwd: str | None = None
    start_time: float | None = None
    cgroup_id: int | None = None
    cgroup_path: str | None = None
    container_id: str | None = None
    exited_at: float | None = None


class ProcessCache:
    """pid -> :class:`ProcessInfo`, bounded, with delayed removal on exit.

    - ``fork``: the child starts as a copy of its parent (same image and
      command line until it execs), with the parent's pid.
    - ``exec``: the image, command line and user change; the parent stays.
    - ``exit``: the entry lingers ``exit_linger`` seconds of event time, so
      events of that pid still in flight (network, file, late process
      events of its children) are still enriched; :meth:`expire` removes it.
    - Over ``max_entries`` the least recently exec'd/forked entry is evicted
      (counted in ``evictions``).
    """

    def __init__(self, max_entries: int = 65536, exit_linger: float = 5.0) -> None:
        self._procs: dict[int, ProcessInfo] = {}
        self._exits: deque[tuple[float, int]] = deque()
        self._max = max_entries
        self._linger = exit_linger
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> ProcessInfo | None:
        """The process ``pid``, if known."""
        return self._procs.get(pid)

    def put(self, info: ProcessInfo) -> None:
        """Insert or replace an entry (most recent)."""
        procs = self._procs
        procs.pop(info.pid, None)
        procs[info.pid] = info
        while len(procs) > self._max:
            del procs[next(iter(procs))]
            self.evictions += 1

    def fork(self, ppid: int, pid: int, ts: float) -> ProcessInfo:
        """Record that ``ppid`` created ``pid`` at ``ts``."""
        parent = self._procs.get(ppid)
        if parent is not None:
            # field by field: attrs.evolve is several times slower on this hot path
            child = ProcessInfo(pid, ppid, parent.image, parent.command_line, parent.uid, parent.user,
                                parent.cwd, ts, parent.cgroup_id, parent.cgroup_path, parent.container_id)
        else:
            child = ProcessInfo(pid=pid, ppid=ppid, start_time=ts)
        self.put(child)
        return child

    def exec(self, pid: int, *, image: str, command_line: str, ts: float, ppid: int = 0,
             uid: int | None = None, user: str | None = None, cwd: str | None = None,
             cgroup_id: int | None = None, cgroup_path: str | None = None,
             container_id: str | None = None) -> ProcessInfo:
        """Record that ``pid`` executed ``image``; a known parent is kept unless ``ppid`` is given."""
        old = self._procs.get(pid)
        info = ProcessInfo(
            pid=pid,
            ppid=ppid or (old.ppid if old is not None else 0),
            image=image,
            command_line=command_line,
            uid=uid,
            user=user,
            cwd=cwd if cwd is not None else (old.cwd if old is not None else None),
            start_time=ts,
            cgroup_id=cgroup_id,
            cgroup_path=cgroup_path,
            container_id=container_id,
        )
        self.put(info)
        return info

    def exit(self, pid: int, ts: float) -> ProcessInfo | None:
        """Record that ``pid`` exited at ``ts``; it is removed ``exit_linger`` seconds later."""
        info = self._procs.get(pid)
        if info is not None:
            info.exited_at = ts
            self._exits.append((ts + self._linger, pid))
        return info

    def expire(self, now: float) -> int:
        """Remove processes that exited more than ``exit_linger`` seconds before ``now``."""
        removed = 0
        exits = self._exits
        while exits and exits[0][0] <= now:
            _, pid = exits.popleft()
            info = self._procs.get(pid)
            # the pid may have been reused by a new process since: keep that one
            if info is not None and info.exited_at is not None and info.exited_at + self._linger <= now:
                del self._procs[pid]
                removed += 1
        return removed

    def statistics(self) -> dict[str, int]:
        """Size, evictions and exits waiting for removal."""
        return {"size": len(self._procs), "evictions": self.evictions, "exiting": len(self._exits)}
