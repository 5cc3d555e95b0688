"""Memory sweep planning (sans-IO): which processes a periodic sweep scans next, and how fast."""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.define
class TokenBucket:
    """At most ``rate_per_minute`` takes per minute, with bursts up to one minute's worth."""

    rate_per_minute: int
    tokens: float = 0.0
    last: float | None = None

    def take(self, now: float) -> bool:
        """Take one token if available at ``now``."""
        if self.last is None:
            self.tokens = float(self.rate_per_minute)
        else:
            self.tokens = min(float(self.rate_per_minute),
                              self.tokens + (now - self.last) * self.rate_per_minute / 60.0)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SweepPlanner:
    """Which running processes a periodic memory sweep scans next, rate-limited.

    ``start(pids, now)`` begins a round (unless one is still in progress);
    ``take(now)`` hands out the pids the rate limit allows right now. Pids
    in ``exclude`` (the agent itself) are never handed out.
    """

    def __init__(self, rate_per_minute: int, exclude: Iterable[int] = ()) -> None:
        self.bucket = TokenBucket(rate_per_minute)
        self.exclude = frozenset(exclude)
        self.pending: list[int] = []
        self.rounds = 0

    def start(self, pids: Iterable[int]) -> bool:
        """Queue a new round of ``pids``; False if the previous round has not finished."""
        if self.pending:
            return False
        self.pending = [p for p in sorted(pids, reverse=True) if p > 4 and p not in self.exclude]
        self.rounds += 1
        return True

    def take(self, now: float) -> list[int]:
        """Pids to scan now (possibly none)."""
        out = []
        while self.pending and self.bucket.take(now):
            out.append(self.pending.pop())
        return out
