"""Aggregation of repeated identical network connections, sans-IO.

A connection is identical to an earlier one when every field that any loaded
rule reads for its category is equal (plus the connection's own identity),
so an aggregate can never hide a detection: the first occurrence passes
through at once, the repeats within the window are counted, and when the
window ends one event carrying ``count = repeats`` stands for them, so a
counting correlation still counts every connection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
import msgspec

from edr.event import NETWORK_CONNECTION, Event, F

#: Always part of the key, whatever the rules read.
IDENTITY_FIELDS = (F.PROCESS_ID, F.IMAGE, F.PROTOCOL, F.INITIATED, F.SOURCE_IP, F.DESTINATION_IP,
                   F.DESTINATION_PORT, F.DESTINATION_HOSTNAME)


@attrs.define
class _Slot:
    first: Event
    started: float
    repeats: int = 0
    last: Event | None = None


class ConnectionAggregator:
    """Collapses identical network_connection events within a window."""

    def __init__(self, fields_read: Callable[[str], frozenset[str] | None], *, window: float,
                 max_entries: int) -> None:
        read = fields_read(NETWORK_CONNECTION)
        # None: some engine could not say which fields it reads; key on all of them.
        self._key_fields: tuple[str, ...] | None = (
            None if read is None else tuple(sorted(set(IDENTITY_FIELDS) | set(read)))
        )
        self.window = window
        self.max_entries = max_entries
        self._slots: OrderedDict[tuple[Any, ...], _Slot] = OrderedDict()
        self.aggregated = 0
        self.evicted = 0

    def _key(self, event: Event) -> tuple[Any, ...]:
        f = event.fields
        if self._key_fields is None:
            return tuple(sorted((k, repr(v)) for k, v in f.items() if k not in (F.SOURCE_PORT, F.UTC_TIME)))
        return tuple(repr(f.get(k)) for k in self._key_fields)

    def offer(self, event: Event, now: float) -> tuple[bool, list[Event]]:
        """(pass ``event`` on now?, aggregates that became due). Non-network events always pass."""
        due = self.expire(now)
        if event.category != NETWORK_CONNECTION:
            return True, due
        return self.add(event, now, due)

    def add(self, event: Event, now: float, due: list[Event]) -> tuple[bool, list[Event]]:
        """:meth:`offer` for a network event without expiring first (the caller did, at ``now``).

        An aggregate evicted to make room is appended to ``due``.
        """
        key = self._key(event)
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= self.max_entries:
                _, old = self._slots.popitem(last=False)
                self.evicted += 1
                if old.repeats:
                    due.append(self._emit(old))
            self._slots[key] = _Slot(first=event, started=now)
            return True, due
        slot.repeats += event.count
        slot.last = event
        self.aggregated += event.count
        return False, due

    def _emit(self, slot: _Slot) -> Event:
        last = slot.last or slot.first
        return msgspec.structs.replace(last, count=slot.repeats)

    def expire(self, now: float) -> list[Event]:
        """Aggregates whose window has ended (in arrival order)."""
        due: list[Event] = []
        while self._slots:
            key, slot = next(iter(self._slots.items()))
            if now - slot.started < self.window:
                break
            del self._slots[key]
            if slot.repeats:
                due.append(self._emit(slot))
        return due

    def flush(self) -> list[Event]:
        """Every pending aggregate (shutdown)."""
        due = [self._emit(s) for s in self._slots.values() if s.repeats]
        self._slots.clear()
        return due

    def __len__(self) -> int:
        return len(self._slots)
