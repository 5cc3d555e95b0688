"""Recorded-log formats ``edr replay`` reads, how to tell them apart, and which files it refuses.

- ``ndjson``: edr's own event stream (what ``[events] enabled`` writes), one
  ``{"ts", "seq", "category", "product", "fields", ...}`` object per line.
- ``evtx``: Windows event log files (``.evtx``).
- ``evtx_json``: ``evtx_dump -o json`` output (pretty-printed objects).

A format is recognised by what the file holds, never by its name:

- ``evtx``: the file starts with the EVTX signature ``ElfFile\\0``.
- ``evtx_json``: its first record (after an optional ``Record N`` line) is a
  JSON object whose first key is ``"Event"`` (or ``"System"``) holding an
  object, which is how every Windows event record starts.
- ``ndjson``: text in which one of the first lines starts with ``{``, even
  if that line is invalid, truncated or huge: the lines are then read one by
  one and a bad line is rejected alone. An empty file is an empty stream.

Any other file is "not a recognised format" (binary data, compressed logs,
UTF-16 text, text without a JSON object line) and counts as failed, as does a path that
is not a regular file (a FIFO, device or socket): it is reported as such
and never opened in a way that could block.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

#: The first bytes of every EVTX file.
EVTX_MAGIC = b"ElfFile\0"
_GZIP_MAGIC = b"\x1f\x8b"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: Bytes of a file looked at to tell its format.
HEAD = 1 << 16
#: Lines, and bytes, looked through for one that starts a JSON object.
_LINES_LOOKED_AT = 16
_BYTES_LOOKED_AT = 16 << 20
_BOM = b"\xef\xbb\xbf"
_EVTX_JSON = re.compile(rb'\A(?:\xef\xbb\xbf)?\s*(?:Record \d+\s*)?\{\s*"(?:Event|System)"\s*:\s*\{')
#: C0 controls other than NUL, tab, LF and CR: JSON text holds none (encoders escape
#: them in strings; DEL, which they need not escape, is not among them).
_CONTROLS = bytes([*range(1, 9), 11, 12, *range(14, 32)])
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


class UnusableFile(Exception):
    """A file replay cannot use at all; the message says why (it follows the path in reports)."""


def open_recording(path: str | Path) -> tuple[BinaryIO, str]:
    """Open ``path`` for replay: (the file, positioned at its start; its format).

    Raises :class:`UnusableFile` for a path that cannot be read, is not a
    regular file, or holds no recognised format. Never blocks on a FIFO: the
    file is opened non-blocking, and its type is checked on the open file
    too, in case the path was replaced after the first check.
    """
    try:
        mode = os.stat(path).st_mode
        _require_regular(mode)
        fh = os.fdopen(os.open(path, _O_FLAGS), "rb")
    except OSError as exc:
        raise UnusableFile(f"cannot read: {exc}") from None
    try:
        _require_regular(os.fstat(fh.fileno()).st_mode)
        return fh, detect_format(fh)
    except OSError as exc:
        fh.close()
        raise UnusableFile(f"cannot read: {exc}") from None
    except BaseException:
        fh.close()
        raise


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise UnusableFile(f"not a regular file ({kind})")


def detect_format(fh: BinaryIO) -> str:
    """The format of the open file ``fh``, read from its start (and left there); raises :class:`UnusableFile`."""
    head = fh.read(HEAD)
    try:
        if head.startswith(EVTX_MAGIC):
            return "evtx"
        if _EVTX_JSON.match(head):
            return "evtx_json"
        if head.startswith(_GZIP_MAGIC):
            raise UnusableFile("not a recognised format: gzip-compressed (decompress it first)")
        if head.startswith(_UTF16_BOMS):  # what PowerShell's ">" writes
            raise UnusableFile("not a recognised format: UTF-16 text (convert it to UTF-8 first)")
        if not is_text(head):
            raise UnusableFile("not a recognised format: binary data that is no EVTX file")
        if not head.strip(b" \t\r\n\0"):
            return "ndjson"  # an empty stream: a day on which nothing was recorded
        fh.seek(0)
        if _object_line_ahead(fh):
            return "ndjson"
        raise UnusableFile(f"not a recognised format: none of the first {_LINES_LOOKED_AT} lines "
                           "is a JSON object")
    finally:
        fh.seek(0)


def is_text(head: bytes) -> bool:
    """Whether ``head`` looks like JSON text: at most 1 % C0 control characters, not counting NULs.

    Valid JSON has no raw C0 control but tab, LF and CR, so the margin is
    for damage only. NUL runs are left out because a log file whose writer
    crashed can hold them (unwritten blocks) between good lines; random or
    binary data has about 10 % such controls.
    """
    body = head.replace(b"\0", b"")
    controls = len(body) - len(body.translate(None, _CONTROLS))
    return controls * 100 <= len(body)


def _object_line_ahead(fh: BinaryIO) -> bool:
    """Whether one of the first non-blank lines of ``fh`` starts with ``{`` (a huge line is skipped, not held)."""
    looked_at = lines = 0
    at_line_start = True
    while lines < _LINES_LOOKED_AT and looked_at < _BYTES_LOOKED_AT:
        part = fh.readline(HEAD)
        if not part:
            return False
        looked_at += len(part)
        if at_line_start:
            start = part.removeprefix(_BOM).lstrip(b" \t\r\0")
            if start.startswith(b"{"):
                return True
            if start.strip():
                lines += 1
        at_line_start = part.endswith(b"\n")
    return False


#: What a directory given to ``edr replay`` contributes: these suffixes, and
#: the daily files of edr's own event stream (``events.json.YYYY-MM-DD``).
REPLAY_SUFFIXES = (".evtx", ".json", ".ndjson", ".jsonl")


def expand_inputs(paths: list[str]) -> tuple[list[str], list[str]]:
    """(files to replay, arguments that name nothing): directories are walked recursively.

    Files named on the command line are taken whatever their name and type
    (the replay source says why a FIFO or device cannot be replayed); inside
    a directory only recorded logs are (see :data:`REPLAY_SUFFIXES`), in
    sorted order so that a replay is repeatable.
    """
    files: list[str] = []
    missing: list[str] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if not f.is_dir() and _is_recorded_log(f))
        elif p.exists():
            files.append(arg)
        else:
            missing.append(arg)
    return files, missing


def _is_recorded_log(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(REPLAY_SUFFIXES) or name.startswith("events.json.")
