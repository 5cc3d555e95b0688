"""Address -> host name, from DNS answers, so connections can name their destination."""

from __future__ import annotations

from collections import OrderedDict


class DnsCache:
    """Answered addresses and the name that was queried for them.

    TTL-aware on event time (no clock reads): an entry lives for the answer's
    TTL, but at least ``min_ttl`` seconds, as programs connect a little
    after short-TTL answers (CDNs answer with 5-60 s) and should still be
    named, and at most ``max_ttl``.  Bounded LRU; evictions counted.
    """

    def __init__(self, max_entries: int = 16384, min_ttl: float = 300.0, max_ttl: float = 86400.0) -> None:
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._max = max_entries
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self.evictions = 0
        self.expired = 0

    def add(self, address: str, name: str, ttl: float, now: float) -> None:
        """Remember that ``address`` answered a query for ``name`` at ``now`` (epoch seconds)."""
        ttl = min(max(ttl, self._min_ttl), self._max_ttl)
        self._entries[address] = (name, now + ttl)
        self._entries.move_to_end(address)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.evictions += 1

    def lookup(self, address: str, now: float) -> str | None:
        """The name ``address`` was the answer for, if that answer is still valid at ``now``."""
        hit = self._entries.get(address)
        if hit is None:
            return None
        name, expires = hit
        if now > expires:
            del self._entries[address]
            self.expired += 1
            return None
        return name

    def __len__(self) -> int:
        return len(self._entries)
