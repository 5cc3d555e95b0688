"""How long a drain of the rings waits after a wake-up, sans-IO: a batch window only while records keep coming.

Every batch costs each actor of the graph a scheduling round, so under load
the sensor lets the rings fill for one window (``batch_window_ms``) and hands
over one larger batch. On a quiet host that window is pure latency: the
first record after a quiet spell waits for it for nothing. So a drain goes at
once (after :data:`SETTLE_NS`, for the records of the same moment still being
committed) unless :data:`QUICK_DRAINS` drains that found records already
happened within the last window: then records are arriving fast, and the
drain waits one window. Batches per second stay bounded (at most
``QUICK_DRAINS + 1`` per window) while a lone burst (a fork, its exec, its
exit, a few milliseconds apart) goes through in a few milliseconds.
"""

from __future__ import annotations

from collections import deque
from typing import Final

#: After a wake-up on a quiet host: long enough for the records of the same burst that are stamped but not yet
#: committed to their ring (the sensor's hold, 2 ms, covers the rest).
SETTLE_NS: Final = 1_000_000
#: Drains that may go at once within one window before the window applies.
QUICK_DRAINS: Final = 2


class BatchPacer:
    """Decides the pause between a wake-up and the drain (:meth:`pause_ns`), told of each drain (:meth:`drained`).

    Times are ``CLOCK_BOOTTIME`` nanoseconds given by the caller; no clock,
    no I/O. ``windowed`` and ``quick`` count the two kinds of pauses.
    """

    def __init__(self, window_ns: int, quick_drains: int = QUICK_DRAINS) -> None:
        self.window_ns = max(window_ns, 0)
        self._recent: deque[int] = deque(maxlen=max(quick_drains, 1))
        self.windowed = 0
        self.quick = 0

    def pause_ns(self, now_ns: int) -> int:
        """How long to let the rings fill before draining, woken at ``now_ns`` with records waiting."""
        if not self.window_ns:
            return 0
        recent = self._recent
        if len(recent) == recent.maxlen and now_ns - recent[0] < self.window_ns:
            self.windowed += 1
            return self.window_ns
        self.quick += 1
        return min(SETTLE_NS, self.window_ns)

    def drained(self, now_ns: int, records: int) -> None:
        """A drain at ``now_ns`` found ``records`` records."""
        if records:
            self._recent.append(now_ns)
