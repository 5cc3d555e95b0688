"""Value tests: the leaves of a compiled Sigma rule, and the per-event context.

Each test answers "does one of this field's values satisfy me?" for a field
that is present (:meth:`hit`) and for one that is missing (:meth:`miss`).
Values are the event's values as strings, in original case (``raws``) and
lower case (``lows``); :class:`MatchContext` builds both once per field per
event, so the lower-casing cost does not grow with the number of rules.

Semantics follow the Sigma specification: strings compare case-insensitively
unless ``cased``; ``*`` and ``?`` are wildcards (pySigma has already resolved
escapes into literal text); regular expressions are unanchored,
case-sensitive searches unless flagged, run on RE2; a missing field never
equals a value; ``null`` matches a missing or empty field. Every test is a
plain slotted object whose constructor takes plain values only (strings,
numbers, booleans, tuples of them): the rule cache stores those values and
rebuilds each test through its constructor (:mod:`edr.detect.sigma.codec`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import re2

from edr.detect.sigma.regex_literals import regex_literals
from edr.text import replaced, utf8

_Values = tuple[str, ...]
_UNSET: Any = object()
#: value types whose ``str`` contains their Sigma string forms (see MatchContext.keyword_text);
#: not float: ``str(1e16)`` is ``1e+16`` where Sigma's form is ``10000000000000000``
_SCALARS = frozenset({str, int, bool, type(None)})


def to_strings(value: Any) -> _Values | None:
    """The string forms Sigma matches for one event value; None when absent.

    Booleans become ``true``/``false`` (how Windows logs spell them),
    integral floats lose their ``.0``, lists contribute each element.
    """
    if type(value) is str:
        return (value,)
    if value is None:
        return None
    if isinstance(value, bool):
        return ("true" if value else "false",)
    if isinstance(value, int):
        return (str(value),)
    if isinstance(value, float):
        return (str(int(value)) if value.is_integer() else repr(value),)
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            strings = to_strings(item)
            if strings:
                out.extend(strings)
        return tuple(out) if out else None
    return (str(value),)


class MatchContext:
    """One event's fields, with string and lower-case forms computed on demand, once."""

    __slots__ = ("_all_low", "_all_raw", "_joined", "_low", "_raw", "fields")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self._raw: dict[str, _Values | None] = {}
        self._low: dict[str, _Values | None] = {}
        self._all_raw: _Values | None = None
        self._all_low: _Values | None = None
        self._joined: str | None = None

    def raw(self, name: str) -> _Values | None:
        """The field's values as strings, None when the field is missing."""
        values = self._raw.get(name, _UNSET)
        if values is _UNSET:
            value = self.fields.get(name)
            values = (value,) if type(value) is str else to_strings(value)
            self._raw[name] = values
        return values  # type: ignore[no-any-return]

    def low(self, name: str) -> _Values | None:
        """The field's values lower-cased (computed once per event)."""
        values = self._low.get(name, _UNSET)
        if values is _UNSET:
            raw = self.raw(name)
            if raw is None:
                values = None
            elif len(raw) == 1:
                values = (raw[0].lower(),)
            else:
                values = tuple([v.lower() for v in raw])
            self._low[name] = values
        return values  # type: ignore[no-any-return]

    def values(self, name: str, need_low: bool) -> tuple[_Values | None, _Values | None]:
        """``(raw(name), low(name) if need_low else None)`` in one call.

        What a detection item evaluates on, for every candidate rule: the
        cached case costs two dict reads instead of two method calls.
        """
        raws = self._raw.get(name, _UNSET)
        if raws is _UNSET:
            raws = self.raw(name)
        if not need_low or raws is None:
            return raws, None
        lows = self._low.get(name, _UNSET)
        if lows is _UNSET:
            lows = self.low(name)
        return raws, lows

    def all_raw(self) -> _Values:
        """Every value of every field, for keyword (field-less) detections."""
        if self._all_raw is None:
            out: list[str] = []
            for value in self.fields.values():
                if type(value) is str:  # the common case, without a call
                    out.append(value)
                else:
                    strings = to_strings(value)
                    if strings:
                        out.extend(strings)
            self._all_raw = tuple(out)
        return self._all_raw

    def all_low(self) -> _Values:
        """Every value of every field, lower-cased, filling the per-field cache too.

        One ``str.lower`` over all values joined by NUL instead of one call
        per value; a value that itself holds a NUL (the split would no longer
        line up) falls back to lowering value by value.
        """
        if self._all_low is None:
            names: list[str] = []
            texts: list[str] = []
            multi: list[tuple[str, _Values]] = []
            lows = self._low
            raws = self._raw
            for name, value in self.fields.items():
                kind = type(value)
                if kind is str:  # the common cases, without a call
                    names.append(name)
                    texts.append(value)
                    continue
                if kind is int:
                    text = str(value)
                    raws[name] = (text,)
                    names.append(name)
                    texts.append(text)
                    continue
                raw = self.raw(name)
                if not raw:
                    lows[name] = None
                    continue
                if len(raw) > 1:
                    multi.append((name, raw))
                for text in raw:
                    names.append(name)
                    texts.append(text)
            joined = "\0".join(texts).lower()
            parts = joined.split("\0")
            if len(parts) != len(texts):
                parts = [t.lower() for t in texts]
                joined = "\0".join(parts)
            lows.update(zip(names, [(low,) for low in parts], strict=True))
            for name, raw in multi:  # a list value: all of its elements, not just the last
                lows[name] = tuple([t.lower() for t in raw])
            self._all_low = tuple(parts)
            self._joined = joined
        return self._all_low

    def lows(self) -> dict[str, _Values | None]:
        """The per-field lower-case cache: complete for every field once :meth:`all_low` ran."""
        return self._low

    def keyword_text(self) -> str:
        """Text holding every value's string form, lower-cased, NUL-separated: for candidate selection.

        Where every value is a scalar this is ``str`` of each value, joined and
        lower-cased in C without the per-value work of :meth:`all_low`; it may
        hold more than Sigma's string forms (``none`` for a null), so a
        literal can be found that no value has (an extra candidate, evaluated
        exactly), never the reverse. Otherwise it is :meth:`all_low_joined`.
        """
        if self._joined is not None:
            return self._joined
        values = self.fields.values()
        if _SCALARS.issuperset(map(type, values)):
            return "\0".join(map(str, values)).lower()
        return self.all_low_joined()

    def all_low_joined(self) -> str:
        """All lower-cased values joined by NUL: one automaton pass over the event.

        No Sigma literal contains NUL, so a literal found in the joined text lies
        within one value.
        """
        if self._joined is None:
            self._joined = "\0".join(self.all_low())
        return self._joined


class Test:
    """Base of the value tests; subclasses set ``needs_low`` if they read ``lows``."""

    __slots__ = ()
    needs_low: ClassVar[bool] = False

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        """True when one of the present field's values satisfies the test."""
        raise NotImplementedError

    def miss(self) -> bool:
        """Result for a missing field: False except for null / not-exists."""
        return False

    def describe(self) -> str:
        """Short text for debug output and error messages."""
        return type(self).__name__


def _glob_match(value: str, parts: tuple[str | None, ...]) -> bool:
    """Match ``value`` against literal parts separated by ``*`` (None), anchored.

    Greedy leftmost search is exact for patterns whose only wildcard is ``*``.
    """
    first = parts[0]
    last = parts[-1]
    start = 0
    end = len(value)
    if first is not None:
        if not value.startswith(first):
            return False
        start = len(first)
        if len(parts) == 1:
            return end == start
    if last is not None:
        if not value.endswith(last) or end - len(last) < start:
            return False
        end -= len(last)
    for part in parts[1:-1]:
        if part is None:
            continue
        found = value.find(part, start, end)
        if found < 0:
            return False
        start = found + len(part)
    return True


class StrGroup(Test):
    """OR of plain string patterns on one field: exact, prefix, suffix, infix, globs.

    Grouping lets one ``in``/``startswith(tuple)``/``endswith(tuple)`` call
    test a whole value list, which is how most SigmaHQ selections look.
    """

    __slots__ = ("cased", "contains", "ends", "exact", "globs", "starts")

    def __init__(self, cased: bool, *, exact: frozenset[str] = frozenset(), starts: tuple[str, ...] = (),
                 ends: tuple[str, ...] = (), contains: tuple[str, ...] = (),
                 globs: tuple[tuple[str | None, ...], ...] = ()) -> None:
        self.cased = cased
        self.exact = exact
        self.starts = starts
        self.ends = ends
        self.contains = contains
        #: literal parts with None for each ``*``, anchored at both ends
        self.globs = globs

    @property
    def needs_low(self) -> bool:  # type: ignore[override]
        return not self.cased

    def empty(self) -> bool:
        """True when no pattern was added."""
        return not (self.exact or self.starts or self.ends or self.contains or self.globs)

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        values = raws if self.cased or lows is None else lows
        exact = self.exact
        starts = self.starts
        ends = self.ends
        contains = self.contains
        for value in values:
            if value in exact:
                return True
            if starts and value.startswith(starts):
                return True
            if ends and value.endswith(ends):
                return True
            # map() keeps the scan of a long value list in C
            if contains and any(map(value.__contains__, contains)):
                return True
            if self.globs:
                for glob in self.globs:
                    if _glob_match(value, glob):
                        return True
        return False

    def describe(self) -> str:
        return (f"strings(exact={sorted(self.exact)[:3]}, starts={self.starts[:3]}, "
                f"ends={self.ends[:3]}, contains={self.contains[:3]})")


def _matcher(rx: Any, anchor: str) -> Callable[[str], bool]:
    """``value -> bool``: does compiled ``rx`` match (``UNANCHORED`` or ``ANCHOR_BOTH``)?

    The google-re2 wrapper's ``search`` builds a match object and maps byte
    offsets back to characters in Python, which costs more than RE2's own scan
    of a command line. A yes/no needs none of it: this calls RE2's ``Match``
    on the UTF-8 text directly (what the wrapper does inside), and falls back
    to the public API if a future wrapper moves its internals. Text with bytes
    that are not UTF-8 (:mod:`edr.text`) is searched too, each such byte as
    U+FFFD, where the wrapper would raise and the event would go unmatched.
    """
    regexp = getattr(rx, "_regexp", None)
    mode = getattr(getattr(re2, "_Anchor", None), anchor, None)
    if regexp is None or mode is None or not hasattr(regexp, "Match"):
        if anchor == "UNANCHORED":
            return lambda value: rx.search(replaced(value)) is not None
        return lambda value: rx.fullmatch(replaced(value)) is not None
    match = regexp.Match

    def matches(value: str) -> bool:
        text = utf8(value)  # a value with bytes that are not UTF-8 still gets searched
        return match(mode, text, 0, len(text))[0][0] != -1

    return matches


class _Regex(Test):
    """Shared RE2 plumbing: the pattern text is the test's data, the compiled matcher is derived from it."""

    __slots__ = ("_matches", "pattern")
    _anchor: ClassVar[str] = "UNANCHORED"

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compile()

    def _compile(self) -> None:
        self._matches = _matcher(re2.compile(self.pattern), self._anchor)

    def describe(self) -> str:
        return f"re({self.pattern[:80]})"


class RegexSearch(_Regex):
    """``|re``: unanchored RE2 search, case-sensitive unless the pattern carries ``(?i)``.

    For a case-sensitive pattern whose required literals (:func:`regex_literals`,
    one of which every match contains) are ASCII, ``required`` holds them in
    lower case: a value whose lower case holds none of them cannot match, and
    skips the RE2 call. Other patterns have none: RE2's case folding and
    ``str.lower`` differ outside ASCII (U+017F matches ``(?i)s``), and
    lowering a non-ASCII literal alone can differ from lowering it in context
    (a final sigma).
    """

    __slots__ = ("required",)

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self.required = _required_literals(pattern)

    @property
    def needs_low(self) -> bool:  # type: ignore[override]
        return bool(self.required)

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        matches = self._matches
        required = self.required
        if required and lows is not None and len(lows) == len(raws):
            for raw, low in zip(raws, lows, strict=True):
                if any(map(low.__contains__, required)) and matches(raw):
                    return True
            return False
        return any(map(matches, raws))


class LongRun(Test):
    """``|re`` of the shape ``.{N}``, ``.{N,}`` or ``.{N,M}``: a run of N characters.

    As an unanchored search such a pattern matches exactly when some N
    consecutive characters exist (any character with the ``s`` flag, else any
    but a newline, RE2's ``.``); the shortest run it accepts is N. RE2 runs a
    counted repetition as N program states, so ``.{1000,}`` (SigmaHQ's "Unusually
    Long PowerShell CommandLine") costs milliseconds per long command line,
    where this length test is linear and cheap. :func:`long_run` recognises the
    shape.
    """

    __slots__ = ("dotall", "length", "pattern")

    def __init__(self, pattern: str, length: int, dotall: bool) -> None:
        self.pattern = pattern
        self.length = length
        self.dotall = dotall

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        length = self.length
        for value in raws:
            if len(value) < length:
                continue
            if self.dotall or "\n" not in value:
                return True
            if any(len(line) >= length for line in value.split("\n")):
                return True
        return False

    def describe(self) -> str:
        return f"re({self.pattern[:80]})"


#: ``.{N}``, ``.{N,}``, ``.{N,M}`` (the dot alone or as a group), after an optional flag group
_LONG_RUN = re2.compile(r"(?:\(\?([imsU]*)\))?(?:\.|\(\.\)|\(\?:\.\))\{(\d+)(?:,(\d*))?\}")


def long_run(pattern: str) -> LongRun | None:
    """The :class:`LongRun` equivalent to searching ``pattern``, or None if it has another shape."""
    found = _LONG_RUN.fullmatch(pattern)
    if found is None:
        return None
    flags, low, high = found.group(1) or "", int(found.group(2)), found.group(3)
    if high and int(high) < low:
        return None  # invalid: the regex route reports RE2's error
    return LongRun(pattern, low, "s" in flags)


_FLAG_GROUP = re2.compile(r"\(\?[a-zA-Z]*i")


def _required_literals(pattern: str) -> tuple[str, ...]:
    """ASCII literals (lower case) one of which a match of case-sensitive ``pattern`` contains, or ()."""
    if _FLAG_GROUP.search(pattern) is not None:
        return ()
    found = regex_literals(pattern)
    if not found or not all(text.isascii() for text in found):
        return ()
    return tuple(sorted(found))


class WildcardPattern(_Regex):
    """A string with ``?`` wildcards, as an anchored RE2 match (on lower case unless cased)."""

    __slots__ = ("cased", "literals")
    _anchor: ClassVar[str] = "ANCHOR_BOTH"

    def __init__(self, pattern: str, cased: bool, literals: tuple[str, ...]) -> None:
        super().__init__(pattern)
        self.cased = cased
        self.literals = literals

    @property
    def needs_low(self) -> bool:  # type: ignore[override]
        return not self.cased

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        values = raws if self.cased or lows is None else lows
        return any(map(self._matches, values))


class AnyValue(Test):
    """A lone ``*``: any value, including the empty string, of a present field."""

    __slots__ = ()

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        return True


class Never(Test):
    """A value that can never match: an unresolved ``expand`` placeholder."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        return False

    def describe(self) -> str:
        return f"never({self.reason})"


def _number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


class Number(Test):
    """A numeric value: numeric equality, or the same text (``4624`` == ``"4624"``)."""

    __slots__ = ("number", "text")

    def __init__(self, number: int | float) -> None:
        self.number = number
        self.text = str(number)

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        for value in raws:
            if value == self.text:
                return True
            parsed = _number(value)
            if parsed is not None and parsed == self.number:
                return True
        return False

    def describe(self) -> str:
        return f"number({self.text})"


class Bool(Test):
    """A boolean value; event text ``true``/``false`` in any case matches."""

    __slots__ = ("text",)

    def __init__(self, value: bool) -> None:
        self.text = "true" if value else "false"

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        return any(value.lower() == self.text for value in raws)


class Null(Test):
    """``field: null``: the field is missing or empty."""

    __slots__ = ()

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        return all(value == "" for value in raws)

    def miss(self) -> bool:
        return True


class Exists(Test):
    """``|exists: true/false``: presence of the field, whatever its value."""

    __slots__ = ("exists",)

    def __init__(self, exists: bool) -> None:
        self.exists = exists

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        return self.exists

    def miss(self) -> bool:
        return not self.exists


class Cidr(Test):
    """``|cidr``: the value parses as an IP address inside the network."""

    __slots__ = ("cidr", "network")

    def __init__(self, cidr: str) -> None:
        self.cidr = cidr
        self.network = ipaddress.ip_network(cidr, strict=False)

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        for value in raws:
            try:
                address = ipaddress.ip_address(value.strip().strip("[]"))
            except ValueError:
                continue
            if address.version == self.network.version and address in self.network:
                return True
        return False

    def describe(self) -> str:
        return f"cidr({self.cidr})"


class Compare(Test):
    """``|gt``/``gte``/``lt``/``lte``: numeric comparison; non-numeric values never match."""

    __slots__ = ("number", "op")

    def __init__(self, op: str, number: int | float) -> None:
        self.op = op
        self.number = number

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        for value in raws:
            parsed = _number(value)
            if parsed is None:
                continue
            op = self.op
            if (
                (op == "LT" and parsed < self.number)
                or (op == "LTE" and parsed <= self.number)
                or (op == "GT" and parsed > self.number)
                or (op == "GTE" and parsed >= self.number)
                or (op == "NEQ" and parsed != self.number)
            ):
                return True
        return False

    def describe(self) -> str:
        return f"{self.op.lower()}({self.number})"


class FieldRef(Test):
    """``|fieldref``: compare with another field of the same event (case-insensitive)."""

    __slots__ = ("ends_with", "other", "starts_with")
    needs_low = True

    def __init__(self, other: str, starts_with: bool, ends_with: bool) -> None:
        self.other = other
        self.starts_with = starts_with
        self.ends_with = ends_with

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        others = ctx.low(self.other)
        if not others or lows is None:
            return False
        for value in lows:
            for other in others:
                if self.starts_with and self.ends_with:
                    if other in value:
                        return True
                elif self.starts_with:
                    if value.startswith(other):
                        return True
                elif self.ends_with:
                    if value.endswith(other):
                        return True
                elif value == other:
                    return True
        return False

    def describe(self) -> str:
        return f"fieldref({self.other})"


def _parse_time(text: str) -> datetime | None:
    number = _number(text)
    try:
        if number is not None:
            # epoch seconds, or milliseconds when too large to be seconds
            seconds = number / 1000 if number > 10_000_000_000 else number
            return datetime.fromtimestamp(seconds, UTC)
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TimePart(Test):
    """``|minute`` ... ``|year``: a part of the field's timestamp equals the number."""

    __slots__ = ("number", "part")

    def __init__(self, part: str, number: int) -> None:
        self.part = part
        self.number = number

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        for value in raws:
            when = _parse_time(value)
            if when is None:
                continue
            part = self.part
            got = (
                when.minute if part == "MINUTE"
                else when.hour if part == "HOUR"
                else when.day if part == "DAY"
                else when.isocalendar().week if part == "WEEK"
                else when.month if part == "MONTH"
                else when.year
            )
            if got == self.number:
                return True
        return False

    def describe(self) -> str:
        return f"{self.part.lower()}({self.number})"


class AnyOf(Test):
    """A value expansion (windash, base64offset): its alternatives are OR-linked."""

    __slots__ = ("_needs_low", "tests")

    def __init__(self, tests: tuple[Test, ...]) -> None:
        self.tests = tests
        self._needs_low = any(t.needs_low for t in tests)

    @property
    def needs_low(self) -> bool:  # type: ignore[override]
        return self._needs_low

    def hit(self, raws: _Values, lows: _Values | None, ctx: MatchContext) -> bool:
        return any(t.hit(raws, lows, ctx) for t in self.tests)

    def miss(self) -> bool:
        return any(t.miss() for t in self.tests)

    def describe(self) -> str:
        return "any(" + ", ".join(t.describe() for t in self.tests[:3]) + ")"
