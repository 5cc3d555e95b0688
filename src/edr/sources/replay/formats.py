"""Recorded-log formats ``edr replay`` reads, and how to tell them apart.

- ``ndjson``: edr's own event stream (what ``[events] enabled`` writes), one
  ``{"ts", "seq", "category", "product", "fields", ...}`` object per line.
- ``evtx``: Windows event log files (``.evtx``).
- ``evtx_json``: ``evtx_dump -o json`` output (pretty-printed objects).
"""

from __future__ import annotations

from pathlib import Path

import orjson

FORMATS = ("ndjson", "evtx", "evtx_json")


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name and first bytes."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(8)
        if head.startswith(b"ElfFile"):
            return "evtx"
        fh.seek(0)
        first = fh.readline(1 << 20).strip()
    if p.suffix.lower() == ".evtx":
        return "evtx"
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        # A pretty-printed object starts with a lone "{": an evtx JSON dump.
        return "evtx_json" if first.startswith(b"{") or first.startswith(b"Record") else "ndjson"
    if isinstance(obj, dict) and "category" in obj and "fields" in obj:
        return "ndjson"
    if isinstance(obj, dict) and ("Event" in obj or "System" in obj):
        return "evtx_json"
    return "ndjson"


#: What a directory given to ``edr replay`` contributes: these suffixes, and
#: the daily files of edr's own event stream (``events.json.YYYY-MM-DD``).
REPLAY_SUFFIXES = (".evtx", ".json", ".ndjson", ".jsonl")


def expand_inputs(paths: list[str]) -> tuple[list[str], list[str]]:
    """(files to replay, arguments that name nothing): directories are walked recursively.

    Files named on the command line are taken whatever their name; inside a
    directory only recorded logs are (see :data:`REPLAY_SUFFIXES`), in sorted
    order so that a replay is repeatable.
    """
    files: list[str] = []
    missing: list[str] = []
    for arg in paths:
        p = Path(arg)
        if p.is_file():
            files.append(arg)
        elif p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if f.is_file() and _is_recorded_log(f))
        else:
            missing.append(arg)
    return files, missing


def _is_recorded_log(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(REPLAY_SUFFIXES) or name.startswith("events.json.")
