"""One JSON document per line, for the alert and event files, whatever the document holds.

orjson refuses two things an event can carry: text with lone surrogates (a
file name with bytes that are not UTF-8, see :mod:`edr.text`) and integers
beyond 64 bits (a replayed record may hold any JSON number). Rather than
the writer failing, and the agent with it, such a document is written with
that text spelt out (:func:`edr.text.printable`) and those integers as
decimal strings. Documents without either take orjson's path unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from edr.text import printable

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_INT_MIN = -(1 << 63)
_INT_END = 1 << 64


def dumps_line(doc: Any) -> bytes:
    """``doc`` as one NDJSON line (ending in a newline); never raises for event content."""
    try:
        return orjson.dumps(doc, option=_OPTIONS, default=str)
    except TypeError:
        return orjson.dumps(_clean(doc), option=_OPTIONS, default=_text)


def _text(value: Any) -> str:
    return printable(str(value))


def _clean(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return printable(value)
    if kind is int:
        return value if _INT_MIN <= value < _INT_END else str(value)
    if kind is dict:
        return {_clean(k): _clean(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_clean(v) for v in value]
    return value
