"""When to try again: exponential backoff with jitter, ``Retry-After``, and a log that does not flood, sans-IO.

- :class:`Backoff`: the n-th consecutive failure waits a random time in
  ``[d/2, d]`` where ``d = min(maximum, initial * 2**n)`` ("equal jitter":
  never less than half the step, so a fleet of agents that lost the same
  receiver spreads out without hammering it).
- :func:`retry_after`: an HTTP ``Retry-After`` value, in seconds
  (``"120"``) or as an HTTP date (``"Wed, 21 Oct 2026 07:28:00 GMT"``), as a
  wait from ``now``; None when absent or unreadable.
- :class:`Throttle`: how a long outage is logged: the first failure at once,
  then one line per interval saying how many more there were, and one line
  when delivery works again.
"""

from __future__ import annotations

import random
from typing import Final

_MAX_RETRY_AFTER_TEXT: Final = 64


class Backoff:
    """Waits between consecutive failures (see the module's notes); :meth:`reset` after a success."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, not {initial} and {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng if rng is not None else random.Random()

    def next(self) -> float:
        """The wait before the next attempt; counts one more failure."""
        step = min(self.maximum, self.initial * (2 ** min(self.failures, 62)))
        self.failures += 1
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        """The last attempt succeeded."""
        self.failures = 0


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``now`` (UNIX time) per a ``Retry-After`` header; None when absent or unreadable.

    A date in the past waits 0. Negative or fractional seconds are not
    HTTP (RFC 9110: a non-negative integer) and are ignored, as is anything
    longer than a date can be.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_RETRY_AFTER_TEXT:
        return None
    if text.isdigit():
        return float(int(text))
    import email.utils  # ~5 ms to import (email.charset...): only for a webhook's Retry-After date

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # HTTP dates are GMT; one without a zone is not one
    return max(0.0, when.timestamp() - now)


class Throttle:
    """Rate-limits the log lines of one recurring condition (a receiver down, a spool full).

    :meth:`hit` returns True when a line should be logged now (the first
    occurrence, then at most one per ``interval`` seconds), with
    :attr:`since` the occurrences since the last line logged; :meth:`clear`
    ends the condition and returns how many occurrences it had in all (0 if
    none), so the caller can log that it is over.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.total = 0
        self.since = 0
        self._last: float | None = None

    def hit(self, now: float, n: int = 1) -> bool:
        """Count ``n`` occurrences at ``now`` (monotonic seconds); True when a line is due."""
        self.total += n
        self.since += n
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def logged(self) -> int:
        """Call after logging the line :meth:`hit` asked for: returns the count it reported and restarts it."""
        n, self.since = self.since, 0
        return n

    def clear(self) -> int:
        """The condition is over: the occurrences it had (0 when it never occurred), and a fresh start."""
        n = self.total
        self.total = self.since = 0
        self._last = None
        return n
