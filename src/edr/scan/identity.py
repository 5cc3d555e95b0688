"""File identity and the bounded, thread-safe cache of scan results keyed by it."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

import attrs

V = TypeVar("V")


@attrs.frozen
class FileIdentity:
    """(device, inode, size, mtime): the same key means the same bytes, without reading them.

    A file rewritten in place changes mtime (and usually size); a new file at
    the same path gets a new inode, so the path is deliberately not part of it.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """The identity of a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class IdentityCache(Generic[V]):
    """LRU map from :class:`FileIdentity` to a result, at most ``capacity`` entries.

    Worker threads read and fill it concurrently, hence the lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._data: OrderedDict[FileIdentity, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: FileIdentity) -> V | None:
        """The cached result, refreshed as most recently used; None if absent."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: FileIdentity, value: V) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
                self.evictions += 1
