"""A bounded map with least-recently-set eviction, counted.

The normalizer names later events from earlier ones through kernel pointers
(``FileObject`` -> file name, ``FileKey`` -> file name, ``KeyObject`` ->
registry key). A pointer whose closing event was missed must not make the
map grow without bound: past ``capacity`` the entry set longest ago goes, and
``evictions`` says how often that happened.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """``key -> value`` holding at most ``capacity`` entries; insertion order is eviction order."""

    __slots__ = ("_data", "capacity", "evictions")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._data: dict[K, V] = {}
        self.evictions = 0

    def set(self, key: K, value: V) -> None:
        """Insert or replace ``key`` (it becomes the newest entry)."""
        data = self._data
        data.pop(key, None)
        data[key] = value
        if len(data) > self.capacity:
            del data[next(iter(data))]
            self.evictions += 1

    def get(self, key: K) -> V | None:
        """The value of ``key``, or None."""
        return self._data.get(key)

    def pop(self, key: K) -> V | None:
        """Remove ``key`` and return its value (None if absent)."""
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def statistics(self) -> dict[str, int]:
        """Size and evictions."""
        return {"size": len(self._data), "evictions": self.evictions}
