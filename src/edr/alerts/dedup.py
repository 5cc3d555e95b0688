"""Alert dedup and rollup: identical alerts within a window become one alert and a count, sans-IO.

**Identical** alerts have the same :func:`dedup_key`: the rule (id and
engine), the event category, the *acting process* and the category's *key
fields* (what was acted on), plus the engine's own key fields:

- the acting process is the one that did what the event records: for a
  ``process_creation`` the parent (``ParentProcessGuid``, else
  ``ParentProcessId`` and ``ParentImage``), so that a loop running
  ``whoami`` 100 times is one thing done 100 times; for ``process_access``
  and ``create_remote_thread`` the source process; otherwise the process
  itself (``ProcessGuid``, else ``ProcessId``, ``ProcessStartTime`` and
  ``Image``). Different processes are never merged.
- key fields per category (:data:`CATEGORY_KEY_FIELDS`): the new program and
  its command line, the destination of a connection (not the ephemeral
  source port), the file and the operation, the query, the registry key and
  value... For a category not listed, every field except the times
  (:data:`VOLATILE_FIELDS`), so that only truly identical events merge.
- engine key fields (:data:`ENGINE_KEY_FIELDS`, from ``Alert.ecs``): the
  scanned file and its hash for YARA, the matched indicator for IOCs. A
  Sigma correlation alert is keyed on its rule, its type and its group
  (``edr.correlation.group.*``) only: it stands for many events already.

**Semantics** (``window`` seconds, times are the alerts' own, ``Alert.time``):

- the first alert of a key is emitted at once and opens a window
  ``[t, t + window)``; it is never delayed nor changed;
- an identical alert whose time is before the window's end is *counted*,
  not emitted;
- when the window closes (:meth:`AlertDeduplicator.expire` with a time at or
  past its end, or an alert of any key at or past it, or :meth:`flush` at the
  end, or an eviction) and it counted repeats, one *rollup* alert is emitted:
  a copy of the first alert with ``edr.alert.count`` = the number of
  identical alerts in the window, **the first included** (100 identical
  alerts give the first at once, then one rollup with count 100),
  ``edr.alert.first_seen`` and ``edr.alert.last_seen`` (the earliest and the
  latest of their times, RFC 3339) and its time set to ``last_seen``. A
  window without repeats emits nothing more;
- an identical alert at or past the window's end closes it (its rollup
  first) and opens a new window, emitted at once.

So no alert is lost: every input alert is either emitted itself (it opened a
window) or is one of the ``count - 1`` repeats of exactly one rollup, and
the number of alerts that happened is the number of alerts without
``edr.alert.count`` plus the sum of ``count - 1`` over the rollups.

**Bounds**: at most ``max_entries`` open windows and about ``max_bytes`` of
state (the first alert of each window is kept to make its rollup); beyond
either, the oldest window is closed early (evicted, counted) and its rollup,
if it has repeats, is emitted then. Deterministic: the output depends only on
the alerts and the times given.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, Final

import attrs

from edr.alerts.ecs import iso_time
from edr.detect.alert import Alert
from edr.event import (
    CREATE_REMOTE_THREAD,
    DNS_QUERY,
    DRIVER_LOAD,
    FILE_CHANGE,
    FILE_DELETE,
    FILE_EVENT,
    FILE_RENAME,
    IMAGE_LOAD,
    NETWORK_CONNECTION,
    PIPE_CREATED,
    PROCESS_ACCESS,
    PROCESS_CREATION,
    PROCESS_TERMINATION,
    REGISTRY_ADD,
    REGISTRY_DELETE,
    REGISTRY_EVENT,
    REGISTRY_RENAME,
    REGISTRY_SET,
    F,
)

COUNT_KEY: Final = "edr.alert.count"
FIRST_SEEN_KEY: Final = "edr.alert.first_seen"
LAST_SEEN_KEY: Final = "edr.alert.last_seen"

_REGISTRY: Final = (F.TARGET_OBJECT, F.EVENT_TYPE, F.DETAILS)
_FILE: Final = (F.TARGET_FILENAME, F.OPERATION)
#: What an event acted on, per category: alerts that differ in these are not identical.
CATEGORY_KEY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    PROCESS_CREATION: (F.IMAGE, F.COMMAND_LINE, F.CURRENT_DIRECTORY, F.USER),
    PROCESS_TERMINATION: (),
    NETWORK_CONNECTION: (F.PROTOCOL, F.INITIATED, F.DESTINATION_IP, F.DESTINATION_PORT, F.DESTINATION_HOSTNAME),
    DNS_QUERY: (F.QUERY_NAME, F.QUERY_TYPE),
    FILE_EVENT: _FILE,
    FILE_CHANGE: _FILE,
    FILE_DELETE: _FILE,
    FILE_RENAME: (F.SOURCE_FILENAME, *_FILE),
    IMAGE_LOAD: (F.IMAGE_LOADED,),
    DRIVER_LOAD: (F.IMAGE_LOADED, F.HASHES),
    REGISTRY_ADD: _REGISTRY,
    REGISTRY_SET: _REGISTRY,
    REGISTRY_DELETE: _REGISTRY,
    REGISTRY_RENAME: _REGISTRY,
    REGISTRY_EVENT: _REGISTRY,
    PROCESS_ACCESS: (F.TARGET_IMAGE, F.GRANTED_ACCESS),
    CREATE_REMOTE_THREAD: (F.TARGET_IMAGE,),
    PIPE_CREATED: (F.PIPE_NAME,),
}
#: Fields left out of the key of a category not in :data:`CATEGORY_KEY_FIELDS`: times and per-record numbers.
VOLATILE_FIELDS: Final = frozenset({
    F.UTC_TIME, F.CREATION_UTC_TIME, "EventRecordID", "RecordNumber", "SystemTime", "TimeCreated",
    F.SOURCE_PORT, "ThreadID", "ThreadId",
})
#: ``Alert.ecs`` key of a Sigma correlation alert, keyed on its type and group alone.
CORRELATION_KEY: Final = "edr.correlation.type"
_CORRELATION_FIELDS: Final = (CORRELATION_KEY, "edr.correlation.group.*")
#: Engine-specific ``Alert.ecs`` keys that are part of the key (a ``*`` suffix: every key with that prefix).
ENGINE_KEY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "yara": ("file.path", "file.hash.sha256", "process.pid", "edr.scan.object", "edr.yara.scan_target"),
    "ioc": ("threat.enrichments.matched.atomic", "threat.enrichments.matched.field", "edr.scan.object",
            "file.path"),
    "sigma": (),
    "simple": (),
}
_SOURCE_PROCESS: Final = frozenset({PROCESS_ACCESS, CREATE_REMOTE_THREAD})
_ENTRY_OVERHEAD: Final = 600  # bytes of a window beyond its fields: the window, the key tuple, the heap item
_FIELD_OVERHEAD: Final = 120  # a field: its dict slot, its key (shared), its value object


def _freeze(value: Any) -> Any:
    """A hashable form of a field value (lists and dicts become tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def acting_process(category: str, fields: dict[str, Any]) -> tuple[Any, ...]:
    """The identity of the process that did what the event records (see the module)."""
    get = fields.get
    if category == PROCESS_CREATION:
        guid = get(F.PARENT_PROCESS_GUID)
        return ("guid", guid) if guid else ("pid", get(F.PARENT_PROCESS_ID), get(F.PARENT_IMAGE))
    if category in _SOURCE_PROCESS:
        guid = get("SourceProcessGuid") or get("SourceProcessGUID")
        return ("guid", guid) if guid else ("pid", get("SourceProcessId"), get(F.SOURCE_IMAGE))
    guid = get(F.PROCESS_GUID)
    if guid:
        return ("guid", guid)
    return ("pid", get(F.PROCESS_ID), _freeze(get(F.PROCESS_START_TIME)), get(F.IMAGE))


def dedup_key(alert: Alert) -> tuple[Any, ...]:
    """What makes alerts identical for dedup (see the module): rule, category, acting process, key fields."""
    ecs = alert.ecs
    if CORRELATION_KEY in ecs:
        # a correlation fires on a group of events: its group is what it is about, not its last event
        return (alert.rule_id, alert.engine, CORRELATION_KEY, tuple(_engine_values(ecs, _CORRELATION_FIELDS)))
    event = alert.event
    if event is None:
        head: tuple[Any, ...] = (alert.rule_id, alert.engine, None)
    else:
        fields = event.fields
        names = CATEGORY_KEY_FIELDS.get(event.category)
        if names is None:
            values: tuple[Any, ...] = tuple(sorted((k, _freeze(v)) for k, v in fields.items()
                                                   if k not in VOLATILE_FIELDS))
        else:
            values = tuple(_freeze(fields.get(name)) for name in names)
        head = (alert.rule_id, alert.engine, event.category, event.service,
                acting_process(event.category, fields), values)
    wanted = ENGINE_KEY_FIELDS.get(alert.engine)
    if wanted is None:
        extra = tuple(sorted((k, _freeze(v)) for k, v in ecs.items()))
    elif not wanted or not ecs:
        return head
    else:
        extra = tuple(_engine_values(ecs, wanted))
    return (*head, extra)


def _engine_values(ecs: dict[str, Any], wanted: tuple[str, ...]) -> Iterable[Any]:
    for name in wanted:
        if name.endswith("*"):
            prefix = name[:-1]
            yield tuple(sorted((k, _freeze(v)) for k, v in ecs.items() if k.startswith(prefix)))
        else:
            yield _freeze(ecs.get(name))


def _weight(alert: Alert) -> int:
    """Approximate bytes a window holds: its first alert's strings by length, a fixed cost per field.

    Flat on purpose (one pass over the event's fields and the alert's ecs):
    it runs for every alert that opens a window, and the key's strings are
    the event's own, not copies.
    """
    total = _ENTRY_OVERHEAD + len(alert.rule_name) + len(alert.description)
    for mapping in (alert.ecs, alert.event.fields if alert.event is not None else None):
        if mapping:
            total += _FIELD_OVERHEAD * len(mapping) + sum([len(v) for v in mapping.values() if type(v) is str])
    return total


class _Window:
    """One open window: the first alert, how many identical alerts it holds, their earliest and latest time."""

    __slots__ = ("count", "end", "first", "last", "serial", "start", "weight")

    def __init__(self, alert: Alert, t: float, end: float, serial: int, weight: int) -> None:
        self.first = alert
        self.count = 1
        self.start = t  # earliest time seen
        self.last = t  # latest time seen
        self.end = end
        self.serial = serial
        self.weight = weight


@attrs.frozen
class DedupStats:
    """Counters: alerts in, emitted on their own, folded into rollups, rollups, evictions."""

    offered: int
    emitted_first: int
    counted: int
    rollups: int
    evicted: int
    evicted_rollups: int
    open_windows: int
    bytes: int


class AlertDeduplicator:
    """Folds identical alerts within ``window`` seconds into the first and one rollup (see the module).

    Not thread-safe; no I/O and no clock of its own: the times are the
    alerts' and those given to :meth:`expire`. An actor calls :meth:`offer`
    for each alert and emits what it returns, calls :meth:`expire` with its
    clock when :meth:`next_deadline` has passed (live, so that a quiet host
    still gets its rollups), and :meth:`flush` at the end of its input.
    """

    def __init__(self, window: float, *, max_entries: int = 4096, max_bytes: int = 8 << 20) -> None:
        if window <= 0 or max_entries <= 0 or max_bytes <= 0:
            raise ValueError("window, max_entries and max_bytes must be greater than 0")
        self.window = float(window)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # insertion order is opening order: the oldest window is evicted first
        self._windows: dict[tuple[Any, ...], _Window] = {}
        self._heap: list[tuple[float, int, tuple[Any, ...]]] = []  # (end, serial, key); stale items skipped
        self._serial = 0
        self._bytes = 0
        self._offered = self._emitted_first = self._counted = 0
        self._rollups = self._evicted = self._evicted_rollups = 0

    def offer(self, alert: Alert) -> list[Alert]:
        """The alerts to emit now, in order: rollups of windows this alert's time closed, then ``alert`` if first."""
        self._offered += 1
        t = alert.time
        out = self.expire(t) if self._heap and self._heap[0][0] <= t else []
        key = dedup_key(alert)
        # expire(t) closed every window ending at or before t: an open one ends after t
        win = self._windows.get(key)
        if win is not None:
            win.count += 1
            self._counted += 1
            if t < win.start:
                win.start = t
            if t > win.last:
                win.last = t
            return out
        self._open(key, alert, t, out)
        out.append(alert)
        self._emitted_first += 1
        return out

    def expire(self, now: float) -> list[Alert]:
        """Close every window that ended at or before ``now``; their rollups, oldest end first."""
        out: list[Alert] = []
        heap = self._heap
        windows = self._windows
        while heap and heap[0][0] <= now:
            _end, serial, key = heapq.heappop(heap)
            win = windows.get(key)
            if win is not None and win.serial == serial:
                self._close(key, win, out)
        return out

    def flush(self) -> list[Alert]:
        """Close every window (end of input); the rollups of those with repeats, in opening order."""
        out: list[Alert] = []
        for key, win in list(self._windows.items()):
            self._close(key, win, out)
        self._heap.clear()
        return out

    def next_deadline(self) -> float | None:
        """The earliest end of an open window (when :meth:`expire` has something to do), or None."""
        heap, windows = self._heap, self._windows
        while heap:
            _end, serial, key = heap[0]
            win = windows.get(key)
            if win is not None and win.serial == serial:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    @property
    def open_windows(self) -> int:
        """Windows open now."""
        return len(self._windows)

    @property
    def held(self) -> int:
        """Alerts counted in open windows whose rollup is not emitted yet (the repeats, not the firsts)."""
        return sum(win.count - 1 for win in self._windows.values())

    def statistics(self) -> DedupStats:
        """The counters; ``offered == emitted_first + counted`` always."""
        return DedupStats(offered=self._offered, emitted_first=self._emitted_first, counted=self._counted,
                          rollups=self._rollups, evicted=self._evicted, evicted_rollups=self._evicted_rollups,
                          open_windows=len(self._windows), bytes=self._bytes)

    def _open(self, key: tuple[Any, ...], alert: Alert, t: float, out: list[Alert]) -> None:
        self._serial += 1
        win = _Window(alert, t, t + self.window, self._serial, _weight(alert))
        self._windows[key] = win
        self._bytes += win.weight
        heapq.heappush(self._heap, (win.end, win.serial, key))
        windows = self._windows
        while len(windows) > self.max_entries or self._bytes > self.max_bytes:
            old_key = next(iter(windows))
            old = windows[old_key]
            self._evicted += 1
            if old.count > 1:
                self._evicted_rollups += 1
            self._close(old_key, old, out)
        # evicted windows leave stale heap items: rebuild before they outnumber the live ones
        if len(self._heap) > 2 * len(windows) + 64:
            self._heap = [(w.end, w.serial, k) for k, w in windows.items()]
            heapq.heapify(self._heap)

    def _close(self, key: tuple[Any, ...], win: _Window, out: list[Alert]) -> None:
        del self._windows[key]
        self._bytes -= win.weight
        if win.count > 1:
            out.append(self._rollup(win))
            self._rollups += 1

    @staticmethod
    def _rollup(win: _Window) -> Alert:
        first = win.first
        ecs = dict(first.ecs)
        ecs[COUNT_KEY] = win.count
        ecs[FIRST_SEEN_KEY] = iso_time(win.start)
        ecs[LAST_SEEN_KEY] = iso_time(win.last)
        return attrs.evolve(first, ecs=ecs, timestamp=win.last)
