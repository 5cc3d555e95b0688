"""Cheap, deterministic estimates of the memory a value holds, for byte budgets.

Caches that an attacker can fill (correlation state, the process cache) are
bounded in bytes as well as in entries. They keep a running total: an entry's
estimate is added when it is stored and the same estimate (recomputed from the
same immutable value) is subtracted when it leaves, so no one ever walks the
whole state. The estimate must therefore be a pure function of the value, cost
little, and err on the side of too much rather than too little.

The formula, in CPython 3.11 object sizes (``sys.getsizeof``):

- ``str``: ``49 + len`` when ASCII (exact: a compact ASCII string is its
  characters plus a 49-byte header; ``isascii`` is O(1)). Other strings
  ``80 + 8 * len``: the widest storage (4 bytes a character) plus the UTF-8
  copy CPython caches once a C library asked for it (RE2, ahocorasick-rs,
  orjson do). That is an upper bound, at most 8 times the real size for a
  Latin-1 string that was never encoded.
- ``bytes``: ``33 + len`` (exact).
- ``int``: ``28 + 4`` per 30-bit digit beyond the first (exact; the small ints
  CPython shares cost nothing really, so those are over by 28).
- ``float``: 24 (exact). ``None`` and ``bool``: 0 (shared singletons).
- ``tuple`` and ``list``: ``56 + 8 * len`` plus the elements (a tuple is 40 +
  8 per slot; the 16 more cover a list's header and part of its spare
  capacity; a list may hold up to 12 % more spare slots).
- ``dict``: ``64 + 48 * len`` plus keys and values (CPython's tables run
  from about 30 to 90 bytes an item depending on where they are in their
  growth, so this is within half either way for the table itself).
- anything else: ``sys.getsizeof`` (its header only).

Objects shared between entries (a forked process's command line is its
parent's string) are counted once per entry that holds them: an overestimate,
never an underestimate, since any one entry can outlive the others.
"""

from __future__ import annotations

import sys
from typing import Any, Final

#: header of a compact ASCII ``str`` (``sys.getsizeof("")``)
ASCII_STR_BYTES: Final = 49
#: header allowance of a non-ASCII ``str`` (its real header is 73 to 76 bytes)
WIDE_STR_BYTES: Final = 80
#: bytes a non-ASCII character may take: 4 (UCS-4) + up to 4 in the cached UTF-8 copy
WIDE_CHAR_BYTES: Final = 8
BYTES_BYTES: Final = 33
INT_BYTES: Final = 28
FLOAT_BYTES: Final = 24
#: pointer size: one slot of a tuple, list, object or dict index
SLOT_BYTES: Final = 8
SEQUENCE_BYTES: Final = 56
DICT_BYTES: Final = 64
DICT_ITEM_BYTES: Final = 48


def text_bytes(text: str) -> int:
    """Estimated bytes of one ``str``: exact for ASCII, an upper bound otherwise."""
    if text.isascii():
        return ASCII_STR_BYTES + len(text)
    return WIDE_STR_BYTES + WIDE_CHAR_BYTES * len(text)


def value_bytes(value: Any) -> int:
    """Estimated bytes held by ``value`` and everything it contains (see the module doc).

    Iterative, so a value nested thousands deep costs time in proportion to
    its size and never overflows the stack.
    """
    total = 0
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        v = pop()
        kind = type(v)
        if kind is str:
            total += (ASCII_STR_BYTES + len(v)) if v.isascii() else (WIDE_STR_BYTES + WIDE_CHAR_BYTES * len(v))
        elif v is None or kind is bool:
            continue
        elif kind is int:
            bits = v.bit_length()
            total += INT_BYTES + 4 * ((bits - 1) // 30) if bits > 30 else INT_BYTES
        elif kind is float:
            total += FLOAT_BYTES
        elif kind is tuple or kind is list:
            total += SEQUENCE_BYTES + SLOT_BYTES * len(v)
            push(v)
        elif kind is dict:
            total += DICT_BYTES + DICT_ITEM_BYTES * len(v)
            push(v.keys())
            push(v.values())
        elif kind is bytes:
            total += BYTES_BYTES + len(v)
        else:
            total += sys.getsizeof(v)
    return total
