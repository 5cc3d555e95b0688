"""Sigma 2 correlations on event time, with bounded state.

Supported types: ``event_count``, ``value_count``, ``temporal``,
``temporal_ordered`` (including extended boolean conditions over rule
references), ``value_sum``, ``value_avg``, ``value_percentile`` and
``value_median``; ``group-by`` (with ``aliases`` giving per-rule field
names), ``timespan`` and ``generate``. Correlations may reference other
correlations.

Windows use the events' own timestamps. Each group keeps the matches of the
last ``timespan`` plus an allowed lateness (another ``timespan``), sorted by
time, so events arriving out of order still land in the right window. When a
match arrives, every window of length ``timespan`` that ends at a retained
match at or after it (up to ``timespan`` later) is checked, which for an
in-order stream is just the window ending at the new match. A group that
fires is cleared, so one burst raises one alert, not one per further event.

``temporal`` requires every referenced rule (as the specification says),
``temporal_ordered`` requires them in the listed order; an extended condition
(``condition: "rule_a and not rule_b"``) replaces "every rule".

State is bounded in entries and in bytes:

- at most ``max_groups`` groups over all correlations (least recently updated
  groups are evicted first, counted in ``correlation_evictions``);
- at most ``MAX_ENTRIES_PER_GROUP`` matches per group (oldest dropped,
  counted in ``correlation_dropped_entries``);
- at most ``max_bytes`` of estimated memory (``sigma.correlation_max_bytes``).
  Each group and each match carries an estimate (:func:`group_bytes`,
  :func:`entry_bytes`, built on :mod:`edr.footprint`: strings by length,
  containers by count), and the engine keeps their running total, adding on
  insert and subtracting on every removal, so no one walks the state. Over
  budget, the least recently updated groups are evicted whole
  (``correlation_byte_evictions``); if the group just fed is the only one
  left and still too large, its oldest matches go
  (``correlation_byte_dropped_entries``). The check runs after the new match
  was evaluated, so a match that completes a correlation fires even when it
  is the one that crosses the budget.

Under the budget nothing is evicted for bytes, so the results are those of
an unbounded engine (up to the two count bounds above). The estimate is
meant as an upper bound of what tracemalloc sees: for ASCII values it is 0
to 25 % over (groups are charged for the OrderedDict at its largest), more
for non-ASCII text and shared objects (see :mod:`edr.footprint`); the tests
measure it.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from typing import Any

import attrs

from edr.detect.sigma.rules import RuleMeta
from edr.footprint import FLOAT_BYTES, INT_BYTES, SEQUENCE_BYTES, SLOT_BYTES, value_bytes

MAX_ENTRIES_PER_GROUP = 10_000
#: Default of ``sigma.correlation_max_bytes``.
DEFAULT_MAX_BYTES = 64 << 20
#: Windows checked per incoming match (bounds the cost of a late event).
MAX_WINDOWS_PER_MATCH = 64

#: Reference key of a detection rule ("r", number) or a correlation ("c", number).
RefKey = tuple[str, int]


@attrs.define(slots=True)
class CompiledCorrelation:
    """A correlation rule with its references resolved to rule numbers."""

    number: int
    meta: RuleMeta
    kind: str
    refs: tuple[RefKey, ...]
    ref_labels: tuple[str, ...]
    group_by: tuple[str, ...]
    #: alias -> {reference: field name in that rule's events}
    aliases: dict[str, dict[RefKey, str]]
    timespan: float
    op: str
    count: float
    fieldref: tuple[str, ...]
    percentile: float | None
    #: extended condition: nested ("and"|"or"|"not", [...]) / ("ref", RefKey)
    extended: Any
    generate: bool
    emits: bool = True

    def field_for(self, name: str, ref: RefKey) -> str:
        """Field ``name`` means in events matched by ``ref`` (aliases resolved)."""
        alias = self.aliases.get(name)
        if alias is not None:
            return alias.get(ref, name)
        return name


@attrs.define(slots=True)
class Fired:
    """One correlation that fired: what, for which group, on which value."""

    correlation: CompiledCorrelation
    group: dict[str, Any]
    value: float
    contributing: tuple[str, ...]


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(int(value, 0))
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _compare(op: str, got: float, want: float) -> bool:
    return {
        "GT": got > want, "GTE": got >= want, "LT": got < want,
        "LTE": got <= want, "EQ": got == want, "NEQ": got != want,
    }.get(op, False)


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolation percentile (the numpy default) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (pct / 100.0) * (len(ordered) - 1)
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _extended(node: Any, present: set[RefKey]) -> bool:
    kind = node[0]
    if kind == "ref":
        return node[1] in present
    if kind == "not":
        return not _extended(node[1][0], present)
    if kind == "and":
        return all(_extended(n, present) for n in node[1])
    return any(_extended(n, present) for n in node[1])


# An entry: (timestamp, arrival, ref, value, weight); arrival breaks ties in order.
_Entry = tuple[float, int, RefKey, Any, int]

#: One match without its value: the 5-tuple, its timestamp and arrival number,
#: the ("r", number) reference tuple made per match, and two slots of the
#: group's list (a list keeps spare slots, up to as many again after deletions).
ENTRY_BYTES = (40 + 5 * SLOT_BYTES) + FLOAT_BYTES + INT_BYTES + (40 + 2 * SLOT_BYTES) + 2 * SLOT_BYTES
#: One group without its group-by values tuple (``value_bytes`` counts that):
#: the (number, values) key, the _Group object with its list, time and byte
#: count, and its share of the OrderedDict at its largest (the table is
#: rebuilt at 3x the live items and grows until evictions fill it, so up to
#: 6 index and fast-node slots and 4 entries an item, plus its link node).
GROUP_BYTES = (40 + 2 * SLOT_BYTES) + (48 + 3 * SLOT_BYTES) + SEQUENCE_BYTES + FLOAT_BYTES + INT_BYTES + 208


def entry_bytes(entry: _Entry) -> int:
    """Estimated bytes of one retained match: fixed part plus its value (see :mod:`edr.footprint`)."""
    value = entry[3]
    return ENTRY_BYTES if value is None else ENTRY_BYTES + value_bytes(value)


def group_bytes(key: tuple[int, tuple[Any, ...]]) -> int:
    """Estimated bytes of an empty group under ``key``: fixed part plus the group-by values."""
    return GROUP_BYTES + value_bytes(key[1])


class _Group:
    """The retained matches of one group, sorted by (time, arrival), and their estimated bytes."""

    __slots__ = ("bytes", "entries", "latest")

    def __init__(self, size: int) -> None:
        self.entries: list[_Entry] = []
        self.latest = -math.inf
        #: group_bytes(key) plus entry_bytes of every retained entry
        self.bytes = size

    def drop_oldest(self, count: int) -> int:
        """Remove the ``count`` oldest entries; return their estimated bytes."""
        entries = self.entries
        freed = sum(entry_bytes(e) for e in entries[:count])
        del entries[:count]
        self.bytes -= freed
        return freed


class CorrelationEngine:
    """Runtime state of every loaded correlation; fed with detection-rule matches."""

    def __init__(self, correlations: list[CompiledCorrelation], max_groups: int,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.correlations = correlations
        self.max_groups = max(1, max_groups)
        self.max_bytes = max(1, max_bytes)
        self.by_ref: dict[RefKey, list[CompiledCorrelation]] = {}
        for corr in correlations:
            for ref in dict.fromkeys(corr.refs):
                self.by_ref.setdefault(ref, []).append(corr)
        self.groups: OrderedDict[tuple[int, Any], _Group] = OrderedDict()
        self.evictions = 0
        self.dropped_entries = 0
        #: running total of every group's ``bytes``
        self.bytes = 0
        self.byte_evictions = 0
        self.byte_dropped_entries = 0
        self._arrival = 0

    def feed(self, ref: RefKey, fields: dict[str, Any], timestamp: float, weight: int,
             ) -> list[Fired]:
        """Record one match of ``ref``; return the correlations it completes (chained)."""
        fired: list[Fired] = []
        pending: list[tuple[RefKey, dict[str, Any]]] = [(ref, fields)]
        depth = 0
        while pending and depth < 16:  # chains are short; the bound stops reference cycles
            depth += 1
            next_round: list[tuple[RefKey, dict[str, Any]]] = []
            for current, current_fields in pending:
                for corr in self.by_ref.get(current, ()):
                    result = self._feed_one(corr, current, current_fields, timestamp, weight)
                    if result is not None:
                        fired.append(result)
                        next_round.append((("c", corr.number), result.group))
            pending = next_round
        return fired

    def _feed_one(self, corr: CompiledCorrelation, ref: RefKey, fields: dict[str, Any],
                  timestamp: float, weight: int) -> Fired | None:
        fired = self._record(corr, ref, fields, timestamp, weight)
        if self.bytes > self.max_bytes:
            self._shed()
        return fired

    def _record(self, corr: CompiledCorrelation, ref: RefKey, fields: dict[str, Any],
                timestamp: float, weight: int) -> Fired | None:
        group_values = {
            name: fields.get(corr.field_for(name, ref)) for name in corr.group_by
        }
        key = (corr.number, tuple(_hashable(v) for v in group_values.values()))
        groups = self.groups
        group = groups.get(key)
        if group is None:
            group = _Group(group_bytes(key))
            groups[key] = group
            self.bytes += group.bytes
            while len(groups) > self.max_groups:
                self.bytes -= groups.popitem(last=False)[1].bytes
                self.evictions += 1
        else:
            groups.move_to_end(key)
        value: Any = None
        if corr.fieldref:
            parts = [fields.get(corr.field_for(f, ref)) for f in corr.fieldref]
            value = _hashable(parts[0]) if len(parts) == 1 else tuple(_hashable(p) for p in parts)
        self._arrival += 1
        entry: _Entry = (timestamp, self._arrival, ref, value, max(1, weight))
        size = entry_bytes(entry)
        group.bytes += size
        self.bytes += size
        entries = group.entries
        bisect.insort(entries, entry, key=lambda e: (e[0], e[1]))
        group.latest = max(group.latest, timestamp)
        horizon = group.latest - 2 * corr.timespan
        if entries[0][0] < horizon:
            self.bytes -= group.drop_oldest(bisect.bisect_left(entries, horizon, key=lambda e: e[0]))
        if len(entries) > MAX_ENTRIES_PER_GROUP:
            excess = len(entries) - MAX_ENTRIES_PER_GROUP
            self.bytes -= group.drop_oldest(excess)
            self.dropped_entries += excess
        if not entries or timestamp < horizon:
            return None
        # windows [end - span, end] for each retained end in [timestamp, timestamp + span]
        times = [e[0] for e in entries]
        first_end = bisect.bisect_left(times, timestamp)
        last_end = bisect.bisect_right(times, timestamp + corr.timespan)
        ends = range(first_end, last_end)
        if len(ends) > MAX_WINDOWS_PER_MATCH:
            ends = range(first_end, first_end + MAX_WINDOWS_PER_MATCH)
        seen_end: float | None = None
        for i in ends:
            end = times[i]
            if end == seen_end:
                continue
            seen_end = end
            j = bisect.bisect_right(times, end)
            start = bisect.bisect_left(times, end - corr.timespan)
            window = entries[start:j]
            ok, measured = self._evaluate(corr, window)
            if ok:
                del groups[key]  # fired: start afresh for this group
                self.bytes -= group.bytes
                contributing = tuple(dict.fromkeys(
                    corr.ref_labels[corr.refs.index(e[2])] for e in window if e[2] in corr.refs))
                return Fired(corr, group_values, measured, contributing)
        return None

    def _shed(self) -> None:
        """Bring the state back under ``max_bytes``: least recently updated groups first.

        The group fed last is the most recent; when it is the only one left
        and still over budget, its oldest matches go, and the group itself if
        even its key does not fit.
        """
        groups = self.groups
        while self.bytes > self.max_bytes and len(groups) > 1:
            self.bytes -= groups.popitem(last=False)[1].bytes
            self.byte_evictions += 1
        if self.bytes <= self.max_bytes or not groups:
            return
        key, group = next(iter(groups.items()))
        excess = self.bytes - self.max_bytes
        freed = count = 0
        for entry in group.entries:
            if freed >= excess:
                break
            freed += entry_bytes(entry)
            count += 1
        self.bytes -= group.drop_oldest(count)
        self.byte_dropped_entries += count
        if self.bytes > self.max_bytes:
            del groups[key]
            self.bytes -= group.bytes
            self.byte_evictions += 1

    def recount_bytes(self) -> int:
        """The estimated bytes of the whole state, recomputed from scratch (a check on ``bytes``).

        Walks every group and entry: for tests and diagnostics, never per event.
        """
        return sum(group_bytes(key) + sum(entry_bytes(e) for e in group.entries)
                   for key, group in self.groups.items())

    @staticmethod
    def _evaluate(corr: CompiledCorrelation, window: list[_Entry]) -> tuple[bool, float]:
        kind = corr.kind
        if kind == "event_count":
            total = float(sum(e[4] for e in window))
            return _compare(corr.op, total, corr.count), total
        if kind == "value_count":
            distinct = float(len({e[3] for e in window if e[3] is not None}))
            return _compare(corr.op, distinct, corr.count), distinct
        if kind in ("temporal", "temporal_ordered"):
            present = {e[2] for e in window}
            if corr.extended is not None:
                return _extended(corr.extended, present), float(len(present))
            if kind == "temporal":
                ok = all(r in present for r in corr.refs)
                return ok, float(len(present))
            position = 0
            for entry in window:  # sorted by time: look for the refs as a subsequence
                if position < len(corr.refs) and entry[2] == corr.refs[position]:
                    position += 1
            return position == len(corr.refs), float(position)
        numbers: list[float] = []
        for e in window:
            n = _number(e[3])
            if n is not None:
                numbers.extend([n] * e[4])
        if not numbers:
            return False, 0.0
        if kind == "value_sum":
            measured = math.fsum(numbers)
        elif kind == "value_avg":
            measured = math.fsum(numbers) / len(numbers)
        elif kind == "value_median":
            measured = percentile(numbers, 50.0)
        else:  # value_percentile
            measured = percentile(numbers, corr.percentile if corr.percentile is not None else 50.0)
        return _compare(corr.op, measured, corr.count), measured

    def statistics(self) -> dict[str, int]:
        """Live groups and their estimated bytes, evictions and dropped matches (by count and by bytes)."""
        return {
            "correlation_groups": len(self.groups),
            "correlation_bytes": self.bytes,
            "correlation_evictions": self.evictions,
            "correlation_dropped_entries": self.dropped_entries,
            "correlation_byte_evictions": self.byte_evictions,
            "correlation_byte_dropped_entries": self.byte_dropped_entries,
        }
