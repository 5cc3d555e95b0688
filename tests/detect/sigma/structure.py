"""Structural comparison of compiled rule sets, independent of the codec under test.

Walks two object graphs side by side (attrs fields, ``__slots__`` of every
class in the MRO, containers) and lists every place where they differ: type,
value, length, keys. Compiled matchers (RE2 closures) cannot be compared and
are only required to exist on both sides; the pattern text they come from is
compared. Route indexes compare their tables and the words of their automata.
"""

from __future__ import annotations

import math
from typing import Any

import ahocorasick
import ahocorasick_rs
import attrs

#: Facts about one load, not about what was loaded (a rule file's digest is taken only to key a cache),
#: and what matching remembers (a route index's memories of recurring values).
LOAD_FACTS = frozenset({"seconds", "cached", "files_parsed", "digest", "field_memo", "keyword_memo"})


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in names and name != "__weakref__":
                names.append(name)
    return names


def differences(a: Any, b: Any, path: str = "$", *, ignore: frozenset[str] = LOAD_FACTS,
                limit: int = 20) -> list[str]:
    """Where ``a`` and ``b`` differ (empty when they are structurally equal), at most ``limit`` places."""
    out: list[str] = []
    _walk(a, b, path, ignore, out, limit)
    return out


def _walk(a: Any, b: Any, path: str, ignore: frozenset[str], out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if type(a) is not type(b):
        out.append(f"{path}: {type(a).__name__} != {type(b).__name__}")
        return
    if isinstance(a, float):
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            out.append(f"{path}: {a!r} != {b!r}")
        return
    if a is None or isinstance(a, (str, bytes, int, bool, frozenset, set)):
        if a != b:
            out.append(f"{path}: {a!r:.200} != {b!r:.200}")
        return
    if isinstance(a, ahocorasick.Automaton):
        if sorted(a.items()) != sorted(b.items()):
            out.append(f"{path}: automata hold different words")
        return
    if isinstance(a, ahocorasick_rs.AhoCorasick):
        return  # built from the index's keyword_words, which are compared beside it
    if callable(a) and not attrs.has(type(a)) and not hasattr(type(a), "__slots__"):
        return  # a compiled matcher: the data it is compiled from is compared beside it
    if isinstance(a, dict):
        if list(a) != list(b):
            out.append(f"{path}: keys {sorted(map(repr, a))[:5]} != {sorted(map(repr, b))[:5]} (or their order)")
            return
        for key in a:
            _walk(a[key], b[key], f"{path}[{key!r}]", ignore, out, limit)
        return
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", ignore, out, limit)
        return
    if attrs.has(type(a)):
        for field in attrs.fields(type(a)):
            if field.eq and field.name not in ignore:
                _walk(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}", ignore, out, limit)
        return
    if any("__slots__" in klass.__dict__ for klass in type(a).__mro__[:-1]):
        for name in _slots(type(a)):
            if name in ignore:
                continue
            x, y = getattr(a, name, None), getattr(b, name, None)
            _walk(x, y, f"{path}.{name}", ignore, out, limit)
        return
    if a != b:  # anything else with an equality of its own (ip networks, automata of ahocorasick_rs...)
        out.append(f"{path}: {a!r:.200} != {b!r:.200}")
