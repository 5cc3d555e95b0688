"""What is known about each live process: image, command line, parent, user.

Updated from fork, exec and exit events (sans-IO) and seeded with the
running processes at start (:mod:`edr.enrich.seed`), so that a process that exits within a
millisecond of its exec still has its parent and command line.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import msgspec

from edr.footprint import ASCII_STR_BYTES, FLOAT_BYTES, INT_BYTES, SLOT_BYTES, value_bytes


class ProcessInfo(msgspec.Struct, gc=False):
    """One process as the cache knows it.

    A msgspec Struct: built in C, for about a third of what an attrs class
    costs on the enricher's path (two records per exec: the fork's and the
    exec's). ``gc=False``: its values are scalars (or, from a replayed record,
    an event field's list or dict of scalars), none of which can refer back
    to a record, so the cycle collector need not track the cache's records.
    """

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
    #: :func:`entry_bytes` of the record, set by the cache when it stores it (what it subtracts on removal)
    size: int = 0


#: One record without its strings: the object (13 slots, header, and a GC
#: link that an untracked Struct does without: kept, the estimate may be
#: over, never under), pid, ppid, uid, cgroup id and size ints, start and exit
#: time floats, and its share of the dict at its largest (rebuilt at 3x the
#: live items, grown until evictions fill it: up to 6 index slots and 4
#: entries an item). The estimate does not depend on which scalar fields are
#: set, so ``exit`` may set ``exited_at``.
ENTRY_BYTES = (32 + 13 * SLOT_BYTES) + 5 * INT_BYTES + 2 * FLOAT_BYTES + 128


def entry_bytes(info: ProcessInfo) -> int:
    """Estimated bytes of one cached process: :data:`ENTRY_BYTES` plus its text fields.

    Strings are counted by length (exact for ASCII, an upper bound for other
    text; see :mod:`edr.footprint`). A forked child shares its parent's
    strings and is charged for them again: an overestimate by at most its
    strings' size, never an underestimate, as the child may outlive the
    parent's record.
    """
    total = ENTRY_BYTES
    # one loop, the ASCII case inline: this runs once per exec
    for value in (info.image, info.command_line, info.user, info.cwd, info.cgroup_path, info.container_id):
        if type(value) is str and value.isascii():
            if value:  # "" is shared: nothing
                total += ASCII_STR_BYTES + len(value)
        elif value is not None:
            total += value_bytes(value)
    return total


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
    - Over ``max_bytes`` of estimated memory (:func:`entry_bytes`; a running
      total kept on every insert and removal) the least recently exec'd/forked
      entries are evicted too (counted in ``byte_evictions``). A record larger
      than the whole budget is not stored (counted the same way).

    Records are treated as immutable once stored, except ``exited_at``: the
    running total subtracts the same estimate it added.
    """

    def __init__(self, max_entries: int = 65536, exit_linger: float = 5.0, max_bytes: int = 32 << 20) -> None:
        self._procs: dict[int, ProcessInfo] = {}
        #: ``get(pid)``: the process ``pid``, if known. The dict's own ``get``, bound once: the enricher
        #: asks for a process or two per event, and a method around it would cost twice as much
        self.get: Callable[[int], ProcessInfo | None] = self._procs.get
        self._exits: deque[tuple[float, int]] = deque()
        #: event time at which :meth:`expire` next has work (the oldest pending exit's), so that
        #: callers test one float per event instead of calling it
        self.next_expiry = math.inf
        self._max = max_entries
        self._max_bytes = max_bytes
        self._linger = exit_linger
        self.evictions = 0
        self.byte_evictions = 0
        #: sum of entry_bytes over the records held
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._procs)

    def put(self, info: ProcessInfo) -> None:
        """Insert or replace an entry (most recent); evict the oldest over either bound."""
        self._store(info, entry_bytes(info))

    def _store(self, info: ProcessInfo, size: int) -> None:
        """:meth:`put` of a record whose :func:`entry_bytes` is ``size``."""
        procs = self._procs
        old = procs.pop(info.pid, None)
        if old is not None:
            self.bytes -= old.size
        info.size = size
        if size > self._max_bytes:
            self.byte_evictions += 1
            return
        procs[info.pid] = info
        self.bytes += size
        while len(procs) > self._max:
            self._evict_oldest()
            self.evictions += 1
        while self.bytes > self._max_bytes:  # ends before the new record: it fits alone
            self._evict_oldest()
            self.byte_evictions += 1

    def _evict_oldest(self) -> None:
        procs = self._procs
        self.bytes -= procs.pop(next(iter(procs))).size

    def recount_bytes(self) -> int:
        """The estimate of every record, recomputed from scratch (a check on ``bytes``; walks the cache)."""
        return sum(entry_bytes(info) for info in self._procs.values())

    def fork(self, ppid: int, pid: int, ts: float) -> ProcessInfo:
        """Record that ``ppid`` created ``pid`` at ``ts``."""
        parent = self._procs.get(ppid)
        if parent is not None:
            # field by field: attrs.evolve is several times slower on this hot path
            child = ProcessInfo(pid, ppid, parent.image, parent.command_line, parent.uid, parent.user,
                                parent.cwd, ts, parent.cgroup_id, parent.cgroup_path, parent.container_id)
            # the parent's strings, so the parent's estimate: not counted again
            self._store(child, parent.size)
        else:
            child = ProcessInfo(pid=pid, ppid=ppid, start_time=ts)
            self.put(child)
        return child

    def exec(self, pid: int, *, image: str, command_line: str, ts: float, ppid: int = 0,
             uid: int | None = None, user: str | None = None, cwd: str | None = None,
             cgroup_id: int | None = None, cgroup_path: str | None = None,
             container_id: str | None = None) -> ProcessInfo:
        """Record that ``pid`` executed ``image``; a known parent is kept unless ``ppid`` is given."""
        return self.exec_record(pid, ppid, image, command_line, uid, user, cwd, ts, cgroup_id, cgroup_path,
                                container_id)

    def exec_record(self, pid: int, ppid: int, image: str, command_line: str, uid: int | None,
                    user: str | None, cwd: str | None, ts: float, cgroup_id: int | None,
                    cgroup_path: str | None, container_id: str | None) -> ProcessInfo:
        """:meth:`exec` with every argument positional, in :class:`ProcessInfo`'s order: the enricher's
        hot path, where passing eleven keywords costs twice what passing them by position does."""
        if not ppid or cwd is None:
            old = self._procs.get(pid)
            if old is not None:
                ppid = ppid or old.ppid
                cwd = cwd if cwd is not None else old.cwd
        info = ProcessInfo(pid, ppid, image, command_line, uid, user, cwd, ts, cgroup_id, cgroup_path,
                           container_id)
        self._store(info, entry_bytes(info))
        return info

    def exit(self, pid: int, ts: float) -> ProcessInfo | None:
        """Record that ``pid`` exited at ``ts``; it is removed ``exit_linger`` seconds later."""
        info = self._procs.get(pid)
        if info is not None:
            info.exited_at = ts
            self._exits.append((ts + self._linger, pid))
            if len(self._exits) == 1:
                self.next_expiry = ts + self._linger
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
                self.bytes -= info.size
                removed += 1
        self.next_expiry = exits[0][0] if exits else math.inf
        return removed

    def statistics(self) -> dict[str, int]:
        """Size (records, estimated bytes), evictions (over entries, over bytes), exits waiting for removal."""
        return {"size": len(self._procs), "bytes": self.bytes, "evictions": self.evictions,
                "byte_evictions": self.byte_evictions, "exiting": len(self._exits)}
