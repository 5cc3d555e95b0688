"""The operational log: ``<directory>/<filename>.YYYY-MM-DD`` (UTC) plus an optional console.

The file is a :class:`~edr.alerts.daily_file.DailyFile`, so it gets the same
protection as the alert files: a 0700 directory only root (or the agent's
user) can change, a 0600 file opened without following links, reopened when
it or its directory disappears, and no record merged into a partial line.

A log cannot hold records back the way the alert writer does, so a record
that cannot be written is dropped and counted. Standard error gets one line
naming the directory and the reason when writing starts failing, a reminder
at most once a minute while it goes on, and a line with the count when it
works again; the log file itself gets that count as its next record. No
``--- Logging error ---`` traceback is printed for an unwritable directory.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TextIO

from edr.alerts.daily_file import DailyFile

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Seconds between two reminders on standard error that the log still cannot be written.
REPORT_EVERY = 60.0
_monotonic = time.monotonic  # the clock of those reminders (a test moves it)


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


class DailyFileHandler(logging.Handler):
    """Writes records to the file of the current UTC day, switching at midnight.

    Each record is written at once (a crash must not lose it). A record that
    cannot be written is dropped and counted (see the module's docstring):
    ``dropped`` since writing last worked, ``dropped_total`` in all; ``stream``
    (standard error by default) is where that is reported.
    """

    def __init__(self, directory: str | Path, filename: str, *, stream: TextIO | None = None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.filename = filename
        self.stream = stream
        self._created = 0.0  # the time of the record being written: it decides the day's file
        self._notes: list[str] = []
        self.file = DailyFile(self.directory, filename, clock=lambda: self._created,
                              on_partial_line=self._partial_line)
        self.dropped = 0  # records not written since writing last worked
        self.dropped_total = 0
        self._failing_since: float | None = None
        self._last_reason = ""
        self._last_report = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        """Format and append one record; if it cannot be written, count it and say so (rate-limited)."""
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)  # a bad format string or argument: a bug worth its traceback
            return
        self._created = record.created
        lines = [self._line(text)]
        if self.dropped:
            lines.insert(0, self._line(self._format_note(
                logging.WARNING, f"operational log: {self.dropped} records could not be written since "
                                 f"{self._since()} ({self._last_reason})")))
        try:
            self.file.write(lines)
        except OSError as exc:
            self.file.discard_pending()
            self._failed(str(exc))
            return
        if self._notes:  # a partial last line was cut off when the file was opened: say so in it
            notes, self._notes = self._notes, []
            try:
                self.file.write([self._line(n) for n in notes])
            except OSError:
                self.file.discard_pending()  # the record itself was written; the next failure is reported
        if self.dropped:
            self._say(f"edr: operational log in {self.directory} writable again; {self.dropped} records were "
                      f"not written")
            self.dropped = 0
            self._failing_since = None

    @staticmethod
    def _line(text: str) -> bytes:
        return (text + "\n").encode("utf-8", "backslashreplace")

    def _format_note(self, level: int, message: str) -> str:
        note = logging.LogRecord("edr.oplog", level, __file__, 0, message, None, None)
        note.created = self._created
        note.msecs = (self._created % 1) * 1000
        return self.format(note)

    def _partial_line(self, path: Path, partial: int, cut: bool) -> None:
        # Called while the file is being opened: logging it now would re-enter this handler.
        what = (f"removed {partial} bytes of a partial last line" if cut else
                f"ended a partial last line of {partial} bytes with a newline (append-only file)")
        self._notes.append(self._format_note(
            logging.WARNING, f"{path}: {what} (left by a crash or a full disk) before appending"))

    def _since(self) -> str:
        started = self._failing_since if self._failing_since is not None else time.time()
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))

    def _failed(self, reason: str) -> None:
        now = _monotonic()
        self.dropped += 1
        self.dropped_total += 1
        self._last_reason = reason
        if self._failing_since is None:
            self._failing_since = time.time()
            self._last_report = now
            self._say(f"edr: cannot write the operational log in {self.directory}: {reason}; records are "
                      f"dropped and counted until it can be written")
        elif now - self._last_report >= REPORT_EVERY:
            self._last_report = now
            self._say(f"edr: operational log in {self.directory} still cannot be written ({reason}); "
                      f"{self.dropped} records not written so far")

    def _say(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # no terminal either: the count is still written to the log when it works again

    def close(self) -> None:
        """Close the handler and its file."""
        self.file.close()
        super().close()


def setup_logging(level: str, directory: str | None, filename: str, console: bool) -> logging.Logger:
    """Configure the ``edr`` logger tree; returns it. Idempotent (replaces edr's handlers)."""
    logging.addLevelName(5, "TRACE")
    root = logging.getLogger("edr")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    root.propagate = False
    fmt = _UTCFormatter(FORMAT)
    if directory is not None:
        fh = DailyFileHandler(directory, filename)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if console:
        ch = logging.StreamHandler(sys.stderr)
        ch.setFormatter(fmt)
        root.addHandler(ch)
    return root
