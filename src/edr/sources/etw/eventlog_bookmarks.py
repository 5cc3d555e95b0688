"""Where each Event Log channel was left: the last record passed on, kept across restarts.

A channel's position is its last record's ``EventRecordID``, the number
Windows gives each record of a channel in order. :class:`Bookmarks` holds
them (sans-IO); :class:`BookmarkFile` keeps them in one small JSON file in a
private directory (:class:`~edr.platform.private_files.PrivateDir`: created
readable by the agent's side only, replaced atomically, never through a
link), so a restart subscribes after it (:func:`bookmark_xml` is the
bookmark ``EvtCreateBookmark`` takes) and reads what was logged while the
agent was down.

The file is data, read defensively: a file that cannot be read or parsed,
or a channel entry that is no record number, is reported (file, key, why)
and that channel starts with new events, as on a first start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import quoteattr

import orjson

from edr.platform.private_files import PrivateDir

log = logging.getLogger("edr.eventlog")

FILE_NAME: Final = "eventlog-bookmarks.json"
FORMAT: Final = 1
#: A bookmark file is a few lines; anything larger is not one.
MAX_FILE_BYTES: Final = 1 << 20


def bookmark_xml(channel: str, record_id: int) -> str:
    """The bookmark of record ``record_id`` of ``channel``, in the XML ``EvtRender(EvtRenderBookmark)`` gives."""
    return (f"<BookmarkList><Bookmark Channel={quoteattr(channel)} RecordId='{int(record_id)}' IsCurrent='true'/>"
            "</BookmarkList>")


class Bookmarks:
    """The last record id passed on, per channel; ``dirty`` until written."""

    def __init__(self, positions: dict[str, int] | None = None) -> None:
        self._positions: dict[str, int] = dict(positions or {})
        self.dirty = False

    def get(self, channel: str) -> int | None:
        """The last record of ``channel`` passed on, None when none ever was."""
        return self._positions.get(channel)

    def advance(self, channel: str, record_id: int) -> None:
        """``record_id`` of ``channel`` was passed on (the later record of a channel is the later one sent)."""
        if self._positions.get(channel) != record_id:
            self._positions[channel] = record_id
            self.dirty = True

    def positions(self) -> dict[str, int]:
        """A copy of every channel's position."""
        return dict(self._positions)

    def to_bytes(self) -> bytes:
        """The file's content."""
        return orjson.dumps({"format": FORMAT, "channels": self._positions},
                            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> tuple[Bookmarks, list[str]]:
        """Bookmarks from a file's content, and what had to be left out of it (each problem names ``where``).

        Entries of channels not configured now are kept: a channel taken out
        of the configuration and put back resumes where it was.
        """
        problems: list[str] = []
        try:
            document: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return cls(), [f"{where}: not JSON ({exc}): every channel starts with new events"]
        if not isinstance(document, dict) or not isinstance(document.get("channels"), dict):
            return cls(), [f"{where}: no \"channels\" object: every channel starts with new events"]
        if document.get("format") != FORMAT:
            return cls(), [f"{where}: format {document.get('format')!r} is not {FORMAT}: "
                           "every channel starts with new events"]
        positions: dict[str, int] = {}
        for channel, record_id in document["channels"].items():
            if type(record_id) is not int or record_id < 0:
                problems.append(f"{where}: channels.{channel}: {record_id!r} is no record number: "
                                "that channel starts with new events")
                continue
            positions[channel] = record_id
        return cls(positions), problems


class BookmarkFile:
    """The bookmark file in ``directory`` (created private when missing)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._dir = PrivateDir(self.directory)

    @property
    def path(self) -> Path:
        """The file."""
        return self.directory / FILE_NAME

    def load(self) -> Bookmarks:
        """The saved bookmarks; none when there is no file yet. Problems are logged, never raised (blocking)."""
        try:
            fd = self._dir.open_read(FILE_NAME)
        except FileNotFoundError:
            return Bookmarks()
        except OSError as exc:
            log.warning("eventlog: %s: cannot be read (%s): every channel starts with new events", self.path, exc)
            return Bookmarks()
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            log.warning("eventlog: %s: larger than %d bytes, not a bookmark file: every channel starts with "
                        "new events", self.path, MAX_FILE_BYTES)
            return Bookmarks()
        bookmarks, problems = Bookmarks.from_bytes(data, str(self.path))
        for problem in problems:
            log.warning("eventlog: %s", problem)
        return bookmarks

    def write(self, content: bytes) -> None:
        """Replace the file with ``content`` (:meth:`Bookmarks.to_bytes`) in one step; raises OSError
        (UnsafePath included) when it cannot (blocking)."""
        self._dir.write_atomic(FILE_NAME, content)

    def close(self) -> None:
        """Let go of the directory."""
        self._dir.close()
