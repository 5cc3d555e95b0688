"""Compile pySigma's parsed rule objects into condition trees of fast matchers.

pySigma has already applied every modifier when it parsed a rule: values
arrive as ``SigmaString`` (wildcards as ``SpecialChars``, escapes resolved),
``SigmaCasedString``, ``SigmaRegularExpression`` (with flags),
``SigmaCIDRExpression``, ``SigmaCompareExpression``, ``SigmaNull``,
``SigmaExists``, ``SigmaFieldReference``, ``SigmaExpansion`` (windash,
base64offset alternatives), ``SigmaTimestampPart``, ``SigmaNumber``,
``SigmaBool``. This module maps each onto a test from
:mod:`edr.detect.sigma.matchers`; it never re-parses rule text.

Decisions where the specification leaves room:

* ``expand`` placeholders are resolved from the ``placeholders`` table
  (each value is a Sigma string, so it may hold wildcards). An unresolved
  placeholder compiles to a value that never matches and the rule still
  loads, with a warning in the load report: in a selection the rule then
  cannot fire on that value; in a filter (``not filter``) the exclusion is
  void, so the rule errs towards alerting rather than silence.
* Keyword (field-less) values match anywhere inside any field value, as
  full-text search does in the SIEMs Sigma targets: an unanchored keyword is
  treated as ``*keyword*``.
* ``1 of``/``all of`` a pattern that names no detection is an error, as in
  pySigma (an empty ``all of`` would otherwise match every event).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionIdentifier,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionSelector,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SigmaType,
    SpecialChars,
)

from edr.detect.sigma import matchers as m
from edr.detect.sigma.nodes import And, FieldItem, KeywordItem, Node, Not, Or, Selection

_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}


class CompileError(Exception):
    """A parsed rule that cannot be compiled (reason in the message)."""


class RuleCompiler:
    """Compiles one rule's detections and condition; collects warnings."""

    def __init__(self, placeholders: dict[str, list[str]] | None) -> None:
        self.placeholders = placeholders or {}
        self.warnings: list[str] = []
        self.fields: set[str] = set()
        self.keywords = False

    # --- conditions -----------------------------------------------------------
    def compile_rule(self, rule: SigmaRule) -> Node:
        """The condition tree of ``rule`` (several conditions are OR-linked)."""
        detections = rule.detection.detections
        cache: dict[str, Node] = {}
        roots: list[Node] = []
        for condition in rule.detection.parsed_condition:
            try:
                tree = condition.parse(postprocess=False)
            except Exception as exc:
                raise CompileError(f"condition '{condition.condition}': {exc}") from exc
            if tree is None:
                raise CompileError(f"condition '{condition.condition}' is empty")
            roots.append(self._condition(tree, detections, cache))
        if not roots:
            raise CompileError("rule has no condition")
        return roots[0] if len(roots) == 1 else Or(tuple(roots))

    def _condition(self, item: Any, detections: dict[str, SigmaDetection],
                   cache: dict[str, Node]) -> Node:
        if isinstance(item, ConditionIdentifier):
            return self._selection(item.identifier, detections, cache)
        if isinstance(item, ConditionSelector):
            names = _select(item.pattern, detections)
            if not names:
                raise CompileError(
                    f"'{item.args[0]} of {item.pattern}' matches no detection identifier")
            children = tuple(self._selection(n, detections, cache) for n in names)
            if len(children) == 1:
                return children[0]
            return And(children) if item.cond_class is ConditionAND else Or(children)
        if isinstance(item, ConditionNOT):
            return Not(self._condition(item.args[0], detections, cache))
        if isinstance(item, (ConditionAND, ConditionOR)):
            children = tuple(self._condition(a, detections, cache) for a in item.args if a is not None)
            return And(children) if isinstance(item, ConditionAND) else Or(children)
        if isinstance(item, ConditionItem):
            raise CompileError(f"unsupported condition element {type(item).__name__}")
        raise CompileError(f"unsupported condition element {item!r}")

    def _selection(self, name: str, detections: dict[str, SigmaDetection],
                   cache: dict[str, Node]) -> Node:
        if name not in cache:
            if name not in detections:
                raise CompileError(f"condition references undefined detection '{name}'")
            cache[name] = Selection(name, self._detection(detections[name]))
        return cache[name]

    def _detection(self, detection: SigmaDetection) -> Node:
        children: list[Node] = []
        for item in detection.detection_items:
            if isinstance(item, SigmaDetection):
                children.append(self._detection(item))
            else:
                children.append(self._item(item))
        if len(children) == 1:
            return children[0]
        if detection.item_linking is ConditionOR:
            return Or(tuple(children))
        return And(tuple(children))

    # --- detection items ------------------------------------------------------
    def _item(self, item: SigmaDetectionItem) -> Node:
        field = item.field
        keyword = field is None
        all_ = item.value_linking is ConditionAND
        values: list[SigmaType] = list(item.value) or [SigmaNull()]
        if keyword:
            self.keywords = True
        else:
            assert field is not None
            self.fields.add(field)
        if all_:
            tests = tuple(self._tests([v], keyword)[0] for v in values)
        else:
            tests = tuple(self._tests(values, keyword))
        node: Node = KeywordItem(tests, all_) if keyword else FieldItem(field or "", tests, all_)
        return Not(node) if item.negated else node

    def _tests(self, values: list[SigmaType], keyword: bool) -> list[m.Test]:
        """Tests for OR-linked values; plain strings share one StrGroup per casing."""
        groups: dict[bool, _GroupBuilder] = {}
        tests: list[m.Test] = []
        for value in values:
            for kind, payload in self._value(value, keyword):
                if kind == "str":
                    cased, shape = payload
                    groups.setdefault(cased, _GroupBuilder(cased)).add(shape)
                else:
                    tests.append(payload)
        for builder in groups.values():
            group_tests = builder.build()
            tests[:0] = group_tests
        if not tests:
            tests.append(m.Never("empty value list"))
        return tests

    def _value(self, value: SigmaType, keyword: bool) -> Iterator[tuple[str, Any]]:
        """Yield ("str", (cased, shape)) for groupable strings, ("test", Test) otherwise."""
        if isinstance(value, SigmaString):  # includes SigmaCasedString
            cased = isinstance(value, SigmaCasedString)
            for resolved in self._resolve_string(value):
                if resolved is None:
                    yield "test", m.Never("unresolved placeholder")
                    continue
                parts = list(resolved.s)
                if keyword:
                    parts = _unanchor(parts)
                shape = _shape(parts, cased)
                if shape[0] == "wildcard":
                    yield "test", _wildcard_test(parts, cased)
                else:
                    yield "str", (cased, shape)
        elif isinstance(value, SigmaRegularExpression):
            for regex in self._resolve_regex(value):
                if regex is None:
                    yield "test", m.Never("unresolved placeholder")
                    continue
                flags = "".join(sorted(_RE_FLAGS[f] for f in regex.flags))
                pattern = str(regex.regexp)
                if flags:
                    pattern = f"(?{flags}){pattern}"
                run = m.long_run(pattern)
                if run is not None:
                    yield "test", run
                    continue
                try:
                    yield "test", m.RegexSearch(pattern)
                except Exception as exc:  # re2.error
                    raise CompileError(f"regular expression not supported by RE2: {exc}") from exc
        elif isinstance(value, SigmaExpansion):
            yield "test", m.AnyOf(tuple(self._tests(list(value.values), keyword)))
        elif isinstance(value, SigmaTimestampPart):
            yield "test", m.TimePart(value.timestamp_part.name, int(value.number))
        elif isinstance(value, SigmaNumber):
            yield "test", m.Number(value.number)
        elif isinstance(value, SigmaBool):
            yield "test", m.Bool(value.boolean)
        elif isinstance(value, SigmaNull):
            if keyword:
                raise CompileError("null value must be bound to a field")
            yield "test", m.Null()
        elif isinstance(value, SigmaExists):
            yield "test", m.Exists(value.exists)
        elif isinstance(value, SigmaCIDRExpression):
            yield "test", m.Cidr(str(value.network))
        elif isinstance(value, SigmaCompareExpression):
            yield "test", m.Compare(value.op.name, value.number.number)
        elif isinstance(value, SigmaFieldReference):
            self.fields.add(value.field)
            yield "test", m.FieldRef(value.field, value.starts_with, value.ends_with)
        else:
            raise CompileError(f"unsupported value type {type(value).__name__}")

    def _callback(self, missing: list[str]) -> Callable[[Placeholder], Iterator[Any]]:
        def callback(placeholder: Placeholder) -> Iterator[Any]:
            values = self.placeholders.get(placeholder.name)
            if values is None:
                missing.append(placeholder.name)
                yield placeholder  # left in place: the caller turns it into Never
                return
            for v in values:
                yield SigmaString(str(v))
        return callback

    def _resolve_string(self, value: SigmaString) -> list[SigmaString | None]:
        if not value.contains_placeholder():
            return [value]
        missing: list[str] = []
        resolved = value.replace_placeholders(self._callback(missing))
        self._warn_missing(missing)
        out: list[SigmaString | None] = []
        for s in resolved:
            if any(isinstance(p, Placeholder) for p in s.s):
                out.append(None)
            else:
                if isinstance(value, SigmaCasedString):
                    s = SigmaCasedString.from_sigma_string(s)
                out.append(s)
        return out

    def _resolve_regex(self, value: SigmaRegularExpression) -> list[SigmaRegularExpression | None]:
        if not value.contains_placeholder():
            return [value]
        missing: list[str] = []
        resolved = value.replace_placeholders(self._callback(missing))
        self._warn_missing(missing)
        return [None if "%" in str(r.regexp) and missing else r for r in resolved]

    def _warn_missing(self, missing: list[str]) -> None:
        for name in dict.fromkeys(missing):
            message = f"unresolved placeholder %{name}% (values never match)"
            if message not in self.warnings:
                self.warnings.append(message)


# --- string shapes --------------------------------------------------------------

_Shape = tuple[str, Any]


def _merge(parts: list[Any]) -> list[Any]:
    """Join adjacent literal parts and collapse runs of ``*``."""
    out: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            if part == "":
                continue
            if out and isinstance(out[-1], str):
                out[-1] += part
                continue
        elif part is SpecialChars.WILDCARD_MULTI and out and out[-1] is SpecialChars.WILDCARD_MULTI:
            continue
        out.append(part)
    return out


def _unanchor(parts: list[Any]) -> list[Any]:
    parts = _merge(parts)
    if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
        parts = [SpecialChars.WILDCARD_MULTI, *parts]
    if parts[-1] is not SpecialChars.WILDCARD_MULTI:
        parts = [*parts, SpecialChars.WILDCARD_MULTI]
    return parts


def _shape(parts: list[Any], cased: bool) -> _Shape:
    """Classify a string: exact / startswith / endswith / contains / glob / any / wildcard."""
    parts = _merge(parts)
    if any(p is SpecialChars.WILDCARD_SINGLE for p in parts):
        return ("wildcard", None)
    lits = [p if cased else p.lower() for p in parts if isinstance(p, str)]
    star = SpecialChars.WILDCARD_MULTI
    if not parts:
        return ("exact", "")
    if all(p is star for p in parts):
        return ("any", None)
    if len(parts) == 1:
        return ("exact", lits[0])
    if len(parts) == 2:
        return ("starts", lits[0]) if parts[1] is star else ("ends", lits[0])
    if len(parts) == 3 and parts[0] is star and parts[2] is star:
        return ("contains", lits[0])
    glob = tuple(None if p is star else (p if cased else p.lower()) for p in parts)
    return ("glob", glob)


def _wildcard_test(parts: list[Any], cased: bool) -> m.Test:
    """A string with ``?``: an anchored RE2 pattern (``*``/``?`` also match newlines)."""
    pieces: list[str] = []
    literals: list[str] = []
    for part in _merge(parts):
        if part is SpecialChars.WILDCARD_MULTI:
            pieces.append(".*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            pieces.append(".")
        else:
            text = part if cased else part.lower()
            literals.append(text)
            pieces.append(re.escape(text))
    return m.WildcardPattern("(?s)" + "".join(pieces), cased, tuple(literals))


class _GroupBuilder:
    """Collects string shapes of one casing into StrGroup (+ AnyValue) tests."""

    def __init__(self, cased: bool) -> None:
        self.cased = cased
        self.exact: set[str] = set()
        self.starts: list[str] = []
        self.ends: list[str] = []
        self.contains: list[str] = []
        self.globs: list[tuple[str | None, ...]] = []
        self.any = False

    def add(self, shape: _Shape) -> None:
        kind, payload = shape
        if kind == "exact":
            self.exact.add(payload)
        elif kind == "starts":
            self.starts.append(payload)
        elif kind == "ends":
            self.ends.append(payload)
        elif kind == "contains":
            self.contains.append(payload)
        elif kind == "glob":
            self.globs.append(payload)
        elif kind == "any":
            self.any = True

    def build(self) -> list[m.Test]:
        group = m.StrGroup(self.cased)
        group.exact = frozenset(self.exact)
        group.starts = tuple(dict.fromkeys(self.starts))
        group.ends = tuple(dict.fromkeys(self.ends))
        group.contains = tuple(dict.fromkeys(self.contains))
        group.globs = tuple(dict.fromkeys(self.globs))
        tests: list[m.Test] = []
        if self.any:
            tests.append(m.AnyValue())
        if not group.empty():
            tests.append(group)
        return tests


def _select(pattern: str, detections: dict[str, SigmaDetection]) -> list[str]:
    """Detection names a ``1 of``/``all of`` pattern selects, the way pySigma selects them.

    ``them`` is every detection; ``*`` is a wildcard; identifiers starting with
    ``_`` (filters pySigma merged into the rule) are only selected by patterns
    that start with ``_`` themselves.
    """
    regex = re.compile(".*" if pattern == "them" else re.escape(pattern).replace(r"\*", ".*"))
    return [
        name for name in detections
        if regex.fullmatch(name) and (pattern.startswith("_") or not name.startswith("_"))
    ]
