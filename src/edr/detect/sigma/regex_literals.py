"""Literals every match of a regular expression contains.

Used twice: the literal index (:mod:`edr.detect.sigma.literals`) indexes a
regex rule by them, and :class:`~edr.detect.sigma.matchers.RegexSearch` skips
the RE2 call on a value that holds none of them.
"""

from __future__ import annotations

from typing import Any

_Alternatives = frozenset[str]


def substring_cost(text: str) -> float:
    """Expected rate at which a value contains ``text``, relative to an exact value's 1.

    The rate falls steeply with the length (``.exe`` is in nearly every
    ``Image``, ``\\edr-freeze`` in almost none), hence the cube: a four-character
    literal costs as much as sixteen exact values. The one cost model of the
    index's literal choice (:mod:`edr.detect.sigma.literals`) and of this module's.
    """
    return 1.0 + 1024.0 / max(len(text), 1) ** 3


def _alt_cost(alternatives: _Alternatives) -> float:
    return sum(map(substring_cost, alternatives))


def _pick(options: list[_Alternatives]) -> _Alternatives | None:
    options = [o for o in options if o and all(o)]
    return min(options, key=_alt_cost) if options else None


def _sequence_literals(items: Any) -> _Alternatives | None:
    """Best set of alternative substrings one of which every match contains."""
    options: list[_Alternatives] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            options.append(frozenset({"".join(run).lower()}))
            run.clear()

    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            run.append(chr(arg))
            continue
        flush()
        if name == "SUBPATTERN":
            inner = _sequence_literals(arg[-1])
            if inner:
                options.append(inner)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, inner_items = arg
            if low >= 1:
                inner = _sequence_literals(inner_items)
                if inner:
                    options.append(inner)
        elif name == "BRANCH":
            alternatives: set[str] = set()
            for branch in arg[1]:
                inner = _sequence_literals(branch)
                if not inner:
                    alternatives = set()
                    break
                alternatives |= inner
            if alternatives:
                options.append(frozenset(alternatives))
        elif name == "ATOMIC_GROUP":
            inner = _sequence_literals(arg)
            if inner:
                options.append(inner)
        # anything else (classes, anchors, lookarounds) only ends a literal run
    flush()
    return _pick(options)


def regex_literals(pattern: str) -> _Alternatives | None:
    """Substrings (lower-cased) one of which every match of ``pattern`` contains.

    Uses Python's regex parser on the RE2 pattern; a pattern it cannot parse
    (RE2-only syntax) yields None, which only makes the rule unindexed.
    """
    try:
        from re import _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern)
    except Exception:
        return None
    return _sequence_literals(list(parsed))
