"""Memory sweep planning (sans-IO): which processes a periodic sweep scans next, and how fast."""

from __future__ import annotations

from collections.abc import Iterable

from edr.rate import TokenBucket


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
