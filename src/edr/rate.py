"""Rate limits, sans-IO: a token bucket read with times the caller gives (no clock of its own).

Shared by the responder's kill budgets (:mod:`edr.response.budget`) and the memory sweep's pacing
(:mod:`edr.scan.memory`).
"""

from __future__ import annotations

import attrs


@attrs.define
class TokenBucket:
    """At most ``rate_per_minute`` takes per minute, with bursts up to one minute's worth.

    Unlike a plain limiter it can be asked without taking (:meth:`ready`), so
    that two buckets (a rule's and the global one) are only drawn from when
    both have a token.
    """

    rate_per_minute: int
    tokens: float = 0.0
    last: float | None = None

    def _refill(self, now: float) -> None:
        if self.last is None:
            self.tokens = float(self.rate_per_minute)
        elif now > self.last:
            self.tokens = min(float(self.rate_per_minute),
                              self.tokens + (now - self.last) * self.rate_per_minute / 60.0)
        self.last = now if self.last is None else max(self.last, now)

    def ready(self, now: float) -> bool:
        """Whether a token is available at ``now`` (takes nothing)."""
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float) -> bool:
        """Take one token if available at ``now``."""
        if not self.ready(now):
            return False
        self.tokens -= 1.0
        return True
