"""Append-only daily NDJSON files: ``<directory>/<filename>.YYYY-MM-DD`` (UTC).

Blocking I/O: actors call :meth:`DailyFile.write` from a worker thread.
A failed write raises and leaves the pending lines with the caller, who
retries them; a line is written whole or the batch is retried, and the file
is reopened (and the directory recreated) on the next attempt, so a removed
directory or a full disk that frees up loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of a UNIX time, in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class DailyFile:
    """One family of daily files, rotated at UTC midnight by the injected clock."""

    def __init__(self, directory: str | Path, filename: str, *, mode: int = 0o600,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.filename = filename
        self.mode = mode
        self.clock = clock
        self._fd: int | None = None
        self._day: str | None = None
        self.lines_written = 0
        self.bytes_written = 0
        self.errors = 0
        self._pending = bytearray()
        self._pending_lines = 0

    def path_for(self, day: str) -> Path:
        """The file of UTC day ``day``."""
        return self.directory / f"{self.filename}.{day}"

    @property
    def current_path(self) -> Path:
        """The file the next write goes to."""
        return self.path_for(utc_day(self.clock()))

    def _open(self, day: str) -> int:
        if self._fd is not None and self._day == day and self._still_linked():
            return self._fd
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(day)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode)
        # O_CREAT's mode is filtered by umask and ignored for an existing file.
        os.fchmod(fd, self.mode)
        self._fd, self._day = fd, day
        return fd

    def _still_linked(self) -> bool:
        # A file whose directory was removed keeps accepting writes that no one
        # will ever read: notice and reopen.
        try:
            return os.fstat(self._fd).st_nlink > 0 if self._fd is not None else False
        except OSError:
            return False

    @property
    def pending(self) -> int:
        """Bytes accepted but not yet written (after a failure)."""
        return len(self._pending)

    def write(self, lines: Sequence[bytes]) -> None:
        """Accept ``lines`` (each ending in a newline) and write everything pending.

        Raises OSError on failure. Accepted bytes are never dropped: what was
        not written stays pending, and the next :meth:`write` or
        :meth:`flush` continues exactly where the failed one stopped, so a
        line is never duplicated or left half-written.
        """
        if lines:
            self._pending += b"".join(lines)
            self._pending_lines += len(lines)
        self.flush()

    def flush(self) -> None:
        """Write whatever is pending; raises OSError, keeping the rest pending."""
        if not self._pending:
            return
        try:
            fd = self._open(utc_day(self.clock()))
            while self._pending:
                n = os.write(fd, self._pending)
                self.bytes_written += n
                del self._pending[:n]
        except OSError:
            self.errors += 1
            self.close()
            raise
        self.lines_written += self._pending_lines
        self._pending_lines = 0

    def fsync(self) -> None:
        """Push written data to stable storage."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the current file (the next write reopens)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
