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
