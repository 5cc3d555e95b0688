"""The base of every error about something edr was given: where it is, and what is wrong with it.

Modelled on pySigma's ``SigmaError``: an error carries a :class:`Location`
(the file, the line when known, the key or item inside it) beside its
``reason``, so that a caller can report, count or group problems by place
without parsing messages. The message (``str(err)``) is the one a person
reads; subclasses keep the wording their users already know.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Location:
    """Where a problem is: a file, a line in it (1-based) and a key or item, each when known."""

    file: str | None = None
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        if self.key:
            where = f"{where}: {self.key}" if where else self.key
        return where


class EdrError(Exception):
    """An input edr cannot use: a configuration value, a graph, a rule, an indicator, a YARA file.

    ``location`` says where it is, ``reason`` what is wrong; ``message``
    (default: ``"<location>: <reason>"``) is what ``str()`` gives.
    """

    def __init__(self, reason: str, location: Location | None = None, *, message: str | None = None) -> None:
        self.location = location if location is not None else Location()
        self.reason = reason
        where = str(self.location)
        super().__init__(message if message is not None else (f"{where}: {reason}" if where else reason))

    @property
    def file(self) -> str | None:
        """The file the problem is in, when known."""
        return self.location.file

    @property
    def line(self) -> int | None:
        """The line (1-based) the problem is on, when known."""
        return self.location.line


def toml_error_line(exc: Exception) -> int | None:
    """The line a ``tomllib.TOMLDecodeError`` points at (its message ends "(at line N, column M)")."""
    text = str(exc)
    marker = "(at line "
    at = text.rfind(marker)
    if at < 0:
        return None
    digits = text[at + len(marker):].split(",", 1)[0].split(")", 1)[0]
    return int(digits) if digits.isdigit() else None
