"""The bounded batch buffer behind every edge, and its overflow policies.

This is the one place a policy is enforced. It is sans-IO: the trio edge in
:mod:`edr.runtime.channel` only adds waiting. Capacity counts batches (what a
hop moves at once); the statistics count events, so ``sent == received +
dropped + depth`` holds at every moment.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs


class Policy(enum.Enum):
    """What an edge does with a batch offered while it is full."""

    #: The sender waits (backpressure); nothing is ever dropped.
    BLOCK = "block"
    #: The offered batch is discarded; what is queued is kept.
    DROP_NEWEST = "drop_newest"
    #: The oldest queued batch is discarded to make room; the newest data is kept.
    DROP_OLDEST = "drop_oldest"


@attrs.frozen
class EdgeStatistics:
    """A snapshot of one edge's counters (events, except where named batches)."""

    name: str
    capacity: int
    policy: str
    sent: int
    received: int
    dropped: int
    depth: int
    high_water: int
    batches_buffered: int
    closed: bool


class BoundedBuffer:
    """A FIFO of batches with a capacity (in batches) and an overflow policy."""

    __slots__ = ("_queue", "capacity", "depth", "dropped", "high_water", "policy", "received", "sent")

    def __init__(self, capacity: int, policy: Policy) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.policy = policy
        self._queue: deque[Sequence[Any]] = deque()
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.depth = 0
        self.high_water = 0

    def full(self) -> bool:
        """True when one more batch would exceed the capacity."""
        return len(self._queue) >= self.capacity

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, batch: Sequence[Any]) -> bool:
        """Queue ``batch`` according to the policy.

        Returns False only for ``BLOCK`` when full: the caller must wait for
        room and offer again; nothing was counted. Empty batches are ignored.
        """
        n = len(batch)
        if n == 0:
            return True
        if len(self._queue) >= self.capacity:
            if self.policy is Policy.BLOCK:
                return False
            self.sent += n
            if self.policy is Policy.DROP_NEWEST:
                self.dropped += n
                return True
            oldest = self._queue.popleft()
            self.dropped += len(oldest)
            self.depth -= len(oldest)
        else:
            self.sent += n
        self._queue.append(batch)
        self.depth += n
        if self.depth > self.high_water:
            self.high_water = self.depth
        return True

    def take(self) -> Sequence[Any] | None:
        """Remove and return the oldest batch, or None when empty."""
        if not self._queue:
            return None
        batch = self._queue.popleft()
        self.received += len(batch)
        self.depth -= len(batch)
        return batch

    def statistics(self, name: str, closed: bool) -> EdgeStatistics:
        """Counters as an immutable snapshot."""
        return EdgeStatistics(
            name=name,
            capacity=self.capacity,
            policy=self.policy.value,
            sent=self.sent,
            received=self.received,
            dropped=self.dropped,
            depth=self.depth,
            high_water=self.high_water,
            batches_buffered=len(self._queue),
            closed=closed,
        )
