"""How long a drain of the rings waits after a wake-up, sans-IO: a batch window only while records arrive fast.

Every batch costs each actor of the graph a scheduling round, so under load
the sensor lets the rings fill for one window (``batch_window_ms``) and hands
over one larger batch. On a quiet host that window is pure latency: the
first record after a quiet spell waits for it for nothing.

What decides is the rate of *records*, not of wake-ups. A drain waits for
the window only when the drains of the last window brought at least
:data:`FAST_RECORDS` records (a storm: thousands of records a second, where
one batch per window is what keeps the agent's CPU down), and then only
until one window has passed since the last drain: the time the graph spent
on the last batch before the sensor was polled again counts towards the
window instead of being added to it (a storm's records wait half a window
on average, not a window plus the processing). Below that, a
drain goes at once (after :data:`SETTLE_NS`, for the records of the same
moment still being committed), so a lone burst (a fork, its exec, its exit,
a few milliseconds apart) goes through in a few milliseconds even while
unrelated records trickle in from the rest of the host.

Quick drains are still bounded, by a token bucket: :data:`QUICK_BURST` may
go back to back, and on average :data:`QUICK_PER_WINDOW` per window. A
burst takes two drains (the sensor holds back the records stamped while
the first ran, see ``HOLD_NS`` in sensor.py), so the drain that follows a
quick one within :data:`FOLLOW_UP_NS` is free, once. With no token left a
drain waits only until the next token, never a whole window. So batches per
second stay bounded at every rate: about 1/window in a storm, at most twice
QUICK_PER_WINDOW/window (plus the burst) below it. Every batch costs the
graph about a millisecond of CPU: at 100 and 400 exec/s with SigmaHQ, three
tokens a window without the free follow-up cost 17.8 and 24.8 % of a core,
one token with it 10.3 and 13.6 % (the rule before: 8.6 and 11.1 %), the
quiet host's p99 staying at 6.5-6.7 ms (scripts/bench_exec_storm.py,
scripts/bench_latency.py, 2026-12-02).

The previous rule (the third drain with records within one window waited a
whole window) put an exec behind 25 ms whenever two unrelated drains had
happened just before it: on a host that is quiet but not silent, the
occasional 25 to 30 ms alert among 5 ms ones (``scripts/bench_latency.py
--trace`` shows the drain and its window).
"""

from __future__ import annotations

from collections import deque
from typing import Final

#: After a wake-up on a quiet host: long enough for the records of the same burst that are stamped but not yet
#: committed to their ring (the sensor's hold, 2 ms, covers the rest).
SETTLE_NS: Final = 1_000_000
#: Records drained within the last window from which records count as arriving fast (2,560/s at 25 ms):
#: a storm is thousands a second (3 to 4 records per exec), a host at rest a few dozen.
FAST_RECORDS: Final = 64
#: Quick drains allowed back to back (a fork, its exec, its exit, and what else happened meanwhile).
QUICK_BURST: Final = 8
#: Quick drains per window on average: the batch rate below a storm is at most this many per window
#: (each with one free follow-up, see FOLLOW_UP_NS).
QUICK_PER_WINDOW: Final = 1
#: A drain this soon after a quick one is its follow-up (the records the sensor held back, stamped while the
#: first drain ran: settle, hold and a poll): free once per token, so a burst costs one token, not two.
FOLLOW_UP_NS: Final = 4_000_000


class BatchPacer:
    """Decides the pause between a wake-up and the drain (:meth:`pause_ns`), told of each drain (:meth:`drained`).

    Times are ``CLOCK_BOOTTIME`` nanoseconds given by the caller; no clock,
    no I/O. ``windowed`` counts the drains that waited for the window
    (records arriving fast), ``paced`` those that waited for a quick-drain
    token, ``quick`` those that went at once.
    """

    def __init__(self, window_ns: int, *, fast_records: int = FAST_RECORDS, burst: int = QUICK_BURST,
                 per_window: int = QUICK_PER_WINDOW) -> None:
        self.window_ns = max(window_ns, 0)
        self.fast_records = max(fast_records, 1)
        self.burst = max(burst, 1)
        # one token every window/per_window
        self._token_ns = self.window_ns // max(per_window, 1)
        self._tokens = float(self.burst)
        self._tokens_at: int | None = None
        #: (time, records) of the drains of the last window that found records
        self._recent: deque[tuple[int, int]] = deque()
        self._recent_records = 0
        self._last_quick_ns: int | None = None
        self._follow_up_free = False
        self.windowed = 0
        self.paced = 0
        self.quick = 0

    def _forget_before(self, start_ns: int) -> None:
        recent = self._recent
        while recent and recent[0][0] < start_ns:
            self._recent_records -= recent.popleft()[1]

    def _is_free_follow_up(self, now_ns: int) -> bool:
        last = self._last_quick_ns
        return self._follow_up_free and last is not None and now_ns - last <= FOLLOW_UP_NS

    def _refill(self, now_ns: int) -> None:
        if self._tokens_at is None or not self._token_ns:
            self._tokens_at = now_ns
            return
        if now_ns > self._tokens_at:
            self._tokens = min(float(self.burst), self._tokens + (now_ns - self._tokens_at) / self._token_ns)
            self._tokens_at = now_ns

    def pause_ns(self, now_ns: int) -> int:
        """How long to let the rings fill before draining, woken at ``now_ns`` with records waiting."""
        if not self.window_ns:
            return 0
        self._forget_before(now_ns - self.window_ns)
        settle = min(SETTLE_NS, self.window_ns)
        if self._recent_records >= self.fast_records:
            # one drain per window, counted from the last drain: the time the graph took with the last
            # batch before asking again is part of the window, not added to it
            self.windowed += 1
            return max(settle, self._recent[-1][0] + self.window_ns - now_ns)
        if self._is_free_follow_up(now_ns):
            self.quick += 1
            return settle
        self._refill(now_ns)
        if self._tokens >= 1.0:
            self.quick += 1
            return settle
        # no token: wait for the next one (at most window/per_window), never a whole window
        self.paced += 1
        return max(settle, int((1.0 - self._tokens) * self._token_ns))

    def drained(self, now_ns: int, records: int) -> None:
        """A drain at ``now_ns`` found ``records`` records (an empty drain costs no token)."""
        if not records:
            return
        self._recent.append((now_ns, records))
        self._recent_records += records
        if self._is_free_follow_up(now_ns):
            self._follow_up_free = False
            return
        self._refill(now_ns)
        self._tokens = max(self._tokens - 1.0, 0.0)
        self._last_quick_ns = now_ns
        self._follow_up_free = True
