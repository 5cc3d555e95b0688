"""Append-only daily NDJSON files: ``<directory>/<filename>.YYYY-MM-DD`` (UTC).

Blocking I/O: actors call :meth:`DailyFile.write` from a worker thread.
A failed write raises and leaves the pending lines with the caller, who
retries them; a line is written whole or the batch is retried, and the file
is reopened (and the directory recreated) on the next attempt, so a removed
directory or a full disk that frees up loses nothing.

Every file is opened through a :class:`~edr.platform.private_files.PrivateDir`: the
directory is created 0700 and must be one only root (or the agent's user)
can change, the file is opened without following links and created 0600,
and a planted link, a hard link or a file of another user is refused with
:class:`~edr.platform.private_files.UnsafePath`, which is a write failure like any other.

The files stay parseable through any crash. A line that was only partly
written when a write failed (a full disk) is taken back at once, and a file
that does not end with a newline when it is opened (a crash, a power cut)
has its partial last line cut off before anything is appended to it (or,
in an append-only file, ended with a newline), so a new line is never merged
into half of an old one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edr.platform.private_files import PrivateDir, UnsafePath

_DAY = 86_400.0  # POSIX time has no leap seconds: every UTC day is this long
_READ_BACK = 65_536  # bytes read per step when looking back for the last newline

_log = logging.getLogger(__name__)


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of a UNIX time, in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def partial_line(fd: int) -> tuple[int, int]:
    """``(size, partial)`` of the file open on ``fd`` (readable): ``partial`` bytes follow its last newline.

    ``partial`` is 0 when the file is empty or ends with a newline, the whole
    size when it holds no newline at all. Reads back from the end in steps,
    so a long partial line costs a few reads and a whole file is never read.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size, 0
    end = size
    while end > 0:
        start = max(0, end - _READ_BACK)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            return size, size - (start + at + 1)
        end = start
    return size, size


def trim_partial_line(fd: int) -> int:
    """Cut the file open on ``fd`` (readable and writable) back to just after its last newline.

    Returns the number of bytes removed; raises OSError if the file cannot
    be cut (an append-only file, ``chattr +a``).
    """
    size, partial = partial_line(fd)
    if partial:
        os.ftruncate(fd, size - partial)
    return partial


def _log_partial_line(path: Path, partial: int, cut: bool) -> None:
    if cut:
        _log.warning("%s: removed %d bytes of a partial last line (left by a crash or a full disk) before "
                     "appending", path, partial)
    else:
        _log.warning("%s: ends with a partial line of %d bytes (left by a crash or a full disk) that cannot be "
                     "removed (append-only file): ended it with a newline before appending", path, partial)


class DailyFile:
    """One family of daily files, rotated at UTC midnight by the injected clock.

    Not thread-safe: one writer uses it from one thread at a time.
    ``on_partial_line(path, nbytes, cut)`` is called when a file is opened
    that ends in a partial line of ``nbytes``: ``cut`` is True when it was
    removed, False when the file is append-only (``chattr +a``) and the line
    was ended with a newline instead, so that the next line is not merged
    into it. By default it is a warning on the ``edr.alerts.daily_file``
    logger.
    """

    def __init__(self, directory: str | Path, filename: str, *, clock: Callable[[], float] = time.time,
                 on_partial_line: Callable[[Path, int, bool], None] = _log_partial_line) -> None:
        self.directory = Path(directory)
        self.filename = filename
        self.clock = clock
        self.on_partial_line = on_partial_line
        self._dir = PrivateDir(self.directory)
        self._fd: int | None = None
        self._path = ""  # the open file's path, as a string for a cheap lstat
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._day_start = self._day_end = 0.0  # the UTC day [start, end) of the open file
        self.lines_written = 0
        self.bytes_written = 0
        self.errors = 0
        self.refused = 0
        self.partial_lines_truncated = 0
        self.partial_bytes_truncated = 0
        self.partial_lines_terminated = 0
        self._pending = bytearray()
        self._pending_lines = 0

    def path_for(self, day: str) -> Path:
        """The file of UTC day ``day``."""
        return self.directory / f"{self.filename}.{day}"

    @property
    def current_path(self) -> Path:
        """The file the next write goes to."""
        return self.path_for(utc_day(self.clock()))

    @property
    def pending(self) -> int:
        """Bytes accepted but not yet written (after a failure)."""
        return len(self._pending)

    def statistics(self) -> dict[str, Any]:
        """Counters: lines and bytes written, bytes pending, write errors (of which refusals), partial lines found."""
        return {
            "lines_written": self.lines_written,
            "bytes_written": self.bytes_written,
            "pending_bytes": len(self._pending),
            "write_errors": self.errors,
            "refused": self.refused,
            "partial_lines_truncated": self.partial_lines_truncated,
            "partial_bytes_truncated": self.partial_bytes_truncated,
            "partial_lines_terminated": self.partial_lines_terminated,
        }

    def write(self, lines: Sequence[bytes]) -> None:
        """Accept ``lines`` (each ending in a newline) and write everything pending.

        Raises OSError on failure (:class:`~edr.platform.private_files.UnsafePath` when
        the file or its directory is refused). Accepted bytes are never
        dropped: what was not written stays pending, and the next
        :meth:`write` or :meth:`flush` writes it, so a line is never
        duplicated, lost or left half-written.
        """
        if lines:
            self._pending += b"".join(lines)
            self._pending_lines += len(lines)
        self.flush()

    def flush(self) -> None:
        """Write whatever is pending; raises OSError, keeping the rest pending.

        The cost on success is one ``lstat`` of the current file (to notice it
        was removed, or its directory removed or renamed) and the writes.
        """
        if not self._pending:
            return
        sent = 0
        fd: int | None = None
        try:
            fd = self._current_fd()
            while sent < len(self._pending):
                sent += os.write(fd, self._pending[sent:] if sent else self._pending)
        except OSError as exc:
            self.errors += 1
            if isinstance(exc, UnsafePath):
                self.refused += 1
            whole = self._pending.rfind(b"\n", 0, sent) + 1
            if sent > whole and fd is not None:
                # Part of a line reached the file (a full disk): take it back now, so that this file
                # ends on a whole line even if the next attempt goes to another day's file. If that
                # fails too, the next open of this file cuts it off.
                with contextlib.suppress(OSError):
                    trim_partial_line(fd)
            del self._pending[:whole]
            self.bytes_written += whole
            self.close()
            raise
        self.bytes_written += sent
        self._pending.clear()
        self.lines_written += self._pending_lines
        self._pending_lines = 0

    def discard_pending(self) -> int:
        """Drop what is pending (for a writer that cannot keep it, such as a log); returns the lines dropped."""
        dropped = self._pending_lines
        self._pending.clear()
        self._pending_lines = 0
        return dropped

    def _current_fd(self) -> int:
        now = self.clock()
        if self._fd is not None and self._day_start <= now < self._day_end:
            # Still the file its path names? It was not deleted, nor its directory removed or renamed.
            with contextlib.suppress(OSError):
                st = os.stat(self._path, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == self._identity:
                    return self._fd
        return self._open(now)

    def _open(self, now: float) -> int:
        self._close_file()
        day_start = now - now % _DAY
        path = self.path_for(utc_day(day_start))  # named from the range it serves, rounding cannot disagree
        fd = self._dir.open_append(path.name, readable=True)
        try:
            size, partial = partial_line(fd)
            cut = True
            if partial:
                try:
                    os.ftruncate(fd, size - partial)
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EACCES):
                        raise
                    # An append-only file cannot be cut: end the partial line, so nothing is merged into it.
                    cut = False
                    os.write(fd, b"\n")
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._path, self._identity = fd, os.fspath(path), (st.st_dev, st.st_ino)
        self._day_start, self._day_end = day_start, day_start + _DAY
        if partial:
            if cut:
                self.partial_lines_truncated += 1
                self.partial_bytes_truncated += partial
            else:
                self.partial_lines_terminated += 1
            self.on_partial_line(path, partial, cut)
        return fd

    def fsync(self) -> None:
        """Push written data to stable storage."""
        if self._fd is not None:
            os.fsync(self._fd)

    def _close_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._identity = None

    def close(self) -> None:
        """Close the current file and directory (the next write opens and checks them again)."""
        self._close_file()
        self._dir.close()
