"""Tracking freshly written files until they have been quiet long enough to scan."""

from __future__ import annotations


class SettleTracker:
    """Paths written recently and when they were last written.

    A path is due once ``settle_secs`` pass without a new write, so a file
    is scanned once when its writer is done rather than on every write. At
    most ``capacity`` paths are pending; more are dropped and counted.
    """

    def __init__(self, settle_secs: float, capacity: int = 4096) -> None:
        self.settle_secs = settle_secs
        self.capacity = capacity
        self._last: dict[str, float] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._last)

    def touch(self, path: str, now: float) -> bool:
        """Note a write to ``path`` at ``now``; False if it had to be dropped (tracker full)."""
        if path not in self._last and len(self._last) >= self.capacity:
            self.dropped += 1
            return False
        # Re-inserting moves the path to the end: the dict stays ordered by last write.
        self._last.pop(path, None)
        self._last[path] = now
        return True

    def forget(self, path: str) -> None:
        """Stop tracking ``path`` (it was deleted or renamed away)."""
        self._last.pop(path, None)

    def due(self, now: float) -> list[str]:
        """Paths quiet for ``settle_secs``, removed from the tracker, oldest first."""
        out = []
        for path, last in self._last.items():
            if now - last < self.settle_secs:
                break  # ordered by last write: everything after is newer
            out.append(path)
        for path in out:
            del self._last[path]
        return out

    def next_due(self) -> float | None:
        """When the oldest pending path becomes due, or None."""
        for last in self._last.values():
            return last + self.settle_secs
        return None

    def flush(self) -> list[str]:
        """Every pending path (at shutdown), removed."""
        out = list(self._last)
        self._last.clear()
        return out
