"""One JSON document per line, for the alert and event files, whatever the document holds.

orjson refuses what an event can carry: text with lone surrogates (a file
name with bytes that are not UTF-8, see :mod:`edr.text`), integers beyond 64
bits (a replayed record may hold any JSON number), and nesting deeper than
255 levels. Rather than the writer failing, and the agent with it, such a
document is written with that text spelt out (:func:`edr.text.printable`),
those integers as decimal (or, beyond Python's 4,300-digit limit,
hexadecimal) strings, lists and objects deeper than :data:`MAX_DEPTH` levels
replaced by a note (:data:`TOO_DEEP`), and any other object as its text.
Documents without any of these take orjson's path unchanged.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from edr.text import printable

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_INT_MIN = -(1 << 63)
_INT_END = 1 << 64
#: Levels of lists and objects written below the document; deeper ones become
#: :data:`TOO_DEEP`. Well under orjson's limit of 255, and a recursion that
#: deep is safe wherever the writer runs.
MAX_DEPTH: Final = 64
#: What stands for a list or object nested deeper than :data:`MAX_DEPTH`.
TOO_DEEP: Final = f"[nested deeper than {MAX_DEPTH} levels; not written]"


def dumps_line(doc: Any) -> bytes:
    """``doc`` as one NDJSON line (ending in a newline); never raises, whatever ``doc`` holds."""
    try:
        return orjson.dumps(doc, option=_OPTIONS, default=str)
    except TypeError:  # orjson.JSONEncodeError
        # _clean leaves only what orjson always writes: this cannot raise
        return orjson.dumps(_clean(doc, 0), option=_OPTIONS)


def _clean(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return printable(value)
    if kind is int:
        return value if _INT_MIN <= value < _INT_END else _int_text(value)
    if kind is float or kind is bool or value is None:
        return value
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        if kind is dict:
            return {_key(k): _clean(v, depth + 1) for k, v in value.items()}
        return [_clean(v, depth + 1) for v in value]
    return _text(value)


def _key(key: Any) -> Any:
    kind = type(key)
    if kind is str:
        return printable(key)
    if kind is int:
        return key if _INT_MIN <= key < _INT_END else _int_text(key)
    if kind is float or kind is bool or key is None:
        return key
    return _text(key)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond sys.get_int_max_str_digits(); hexadecimal has no such limit
        return hex(value)


def _text(value: Any) -> str:
    try:
        return printable(str(value))
    except Exception:  # an object whose str() fails is still written as something
        return f"<{type(value).__name__}>"
