"""The operational log: ``<directory>/<filename>.YYYY-MM-DD`` (UTC) plus an optional console."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from edr.alerts.daily_file import utc_day

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


class DailyFileHandler(logging.Handler):
    """Writes records to the file of the current UTC day, switching at midnight."""

    def __init__(self, directory: str | Path, filename: str) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.filename = filename
        self._day: str | None = None
        self._stream: object | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Format and append one record (flushed at once: crashes must not lose it)."""
        try:
            day = utc_day(record.created)
            if day != self._day or self._stream is None:
                self.close_stream()
                self.directory.mkdir(parents=True, exist_ok=True)
                self._stream = open(self.directory / f"{self.filename}.{day}", "a", encoding="utf-8")  # noqa: SIM115
                self._day = day
            stream = self._stream
            stream.write(self.format(record) + "\n")  # type: ignore[attr-defined]
            stream.flush()  # type: ignore[attr-defined]
        except Exception:
            self.handleError(record)

    def close_stream(self) -> None:
        """Close the current file."""
        if self._stream is not None:
            self._stream.close()  # type: ignore[attr-defined]
            self._stream = None

    def close(self) -> None:
        """Close the handler and its file."""
        self.close_stream()
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
