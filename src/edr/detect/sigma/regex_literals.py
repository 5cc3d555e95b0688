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


#: Most alternatives a literal run may grow to by joining a run with a group's strings.
MAX_RUN_ALTERNATIVES = 16


def _exact_strings(items: Any) -> frozenset[str] | None:
    """The strings ``items`` match when they are a few fixed strings (``W|R``, ``[Ww]``, ``(?:exe|dll)``), else None."""
    out = frozenset({""})
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            part: frozenset[str] | None = frozenset({chr(arg)})
        elif name == "IN":
            part = frozenset(chr(a) for o, a in arg if str(o) == "LITERAL") if all(
                str(o) == "LITERAL" for o, _a in arg) else None
        elif name == "SUBPATTERN":
            part = _exact_strings(arg[-1])
        elif name == "BRANCH":
            strings: set[str] = set()
            for branch in arg[1]:
                found = _exact_strings(branch)
                if found is None:
                    return None
                strings |= found
            part = frozenset(strings)
        else:
            return None
        if not part or len(out) * len(part) > MAX_RUN_ALTERNATIVES:
            return None
        out = frozenset(a + b for a in out for b in part)
    return out


def _sequence_literals(items: Any) -> _Alternatives | None:
    """Best set of alternative substrings one of which every match contains.

    A literal run goes on through a group of a few fixed strings, as one
    alternative per string: ``-(W|R)`` gives ``-w`` or ``-r``, which far fewer
    values contain than ``-``.
    """
    options: list[_Alternatives] = []
    run: frozenset[str] = frozenset()

    def flush() -> None:
        nonlocal run
        if run:
            options.append(frozenset(text.lower() for text in run))
            run = frozenset()

    for op, arg in items:
        name = str(op)
        if name in ("LITERAL", "IN", "SUBPATTERN", "BRANCH"):
            strings = _exact_strings([(op, arg)])
            if strings is not None:
                if run and len(run) * len(strings) <= MAX_RUN_ALTERNATIVES:
                    run = frozenset(a + b for a in run for b in strings)
                else:
                    flush()
                    run = strings
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
