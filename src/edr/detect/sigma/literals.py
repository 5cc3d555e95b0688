"""Necessary literals of a compiled rule: what an event must contain for it to match.

For a condition tree this computes a set of *needs* such that every event the
rule matches satisfies at least one of them, or None when no such set exists
(the rule must then be evaluated on every event of its logsource). A need is
``(field, "eq", value)``: the field's lower-cased value equals ``value``; or
``(field, "sub", text)``: the lower-cased value contains ``text``. The
literal index (:mod:`edr.detect.sigma.index`) turns needs into dictionary
lookups and Aho-Corasick automata, so an event only evaluates rules whose
needs it meets.

Rules: a positive field item needs one literal from each of its OR-linked
values (from one value if AND-linked); ``and`` needs every clause its
children need; ``or`` needs, for each choice of one clause per branch, the
union of the chosen clauses; ``not`` and non-string tests give no need;
keyword items need a literal in any field (pseudo-field ``*``); regular
expressions need their required literal runs, found with Python's regex
parser. :func:`clauses` keeps the cheapest few by :func:`_cost`.
"""

from __future__ import annotations

import itertools
import math

from edr.detect.sigma import matchers as m
from edr.detect.sigma.nodes import And, FieldItem, KeywordItem, Node, Or, Selection
from edr.detect.sigma.regex_literals import regex_literals, substring_cost

#: Pseudo-field of keyword needs: any value of the event.
ANY_FIELD = "*"

Need = tuple[str, str, str]
Needs = frozenset[Need]


def _cost(needs: Needs) -> float:
    """Expected candidate rate of a need set (:func:`substring_cost` per substring, 1 per exact value).

    Summed with :func:`math.fsum`, whose correctly rounded result does not depend on the order of the
    terms: a plain ``sum`` follows the set's iteration order, i.e. the hash seed, and its last bit then
    decided ties between clauses, so which clauses a rule kept (and the rule cache) differed between
    processes (a fork server's workers against their parent).
    """
    return math.fsum(1.0 if kind == "eq" else substring_cost(text) for _field, kind, text in needs)


def _longest(parts: tuple[str | None, ...] | tuple[str, ...]) -> str:
    return max((p for p in parts if p), key=len, default="")


def _test_needs(field: str, test: m.Test) -> Needs | None:
    if isinstance(test, m.StrGroup):
        needs: set[Need] = {(field, "eq", v.lower()) for v in test.exact}
        for text in (*test.starts, *test.ends, *test.contains):
            if not text:
                return None
            needs.add((field, "sub", text.lower()))
        for glob in test.globs:
            text = _longest(glob)
            if not text:
                return None
            needs.add((field, "sub", text.lower()))
        return frozenset(needs)
    if isinstance(test, m.WildcardPattern):
        text = _longest(test.literals)
        return frozenset({(field, "sub", text.lower())}) if text else None
    if isinstance(test, m.Number) and isinstance(test.number, int):
        return frozenset({(field, "eq", test.text)})
    if isinstance(test, m.Bool):
        return frozenset({(field, "eq", test.text)})
    if isinstance(test, m.AnyOf):
        return _union([_test_needs(field, t) for t in test.tests])
    if isinstance(test, m.RegexSearch):
        alternatives = regex_literals(test.pattern)
        if not alternatives:
            return None
        return frozenset((field, "sub", text) for text in alternatives)
    if isinstance(test, m.Never):
        return frozenset()  # matches nothing: needs nothing to be excluded
    return None


def _union(parts: list[Needs | None]) -> Needs | None:
    out: set[Need] = set()
    for part in parts:
        if part is None:
            return None
        out |= part
    return frozenset(out)


#: Clauses kept per rule: more make candidates rarer; the index checks them in one C-level subset test.
MAX_CLAUSES = 4
#: Clauses of each ``or`` branch combined into clauses of the ``or`` (the cheapest ones) ...
OR_BRANCH_CLAUSES = 2
#: ... while the combinations stay this few (else one per branch).
MAX_OR_COMBINATIONS = 8


def _order(needs: Needs) -> tuple[float, list[Need]]:
    return _cost(needs), sorted(needs)


def _clauses(node: Node) -> list[Needs] | None:
    if isinstance(node, Selection):
        return _clauses(node.child)
    if isinstance(node, (FieldItem, KeywordItem)):
        field = node.field if isinstance(node, FieldItem) else ANY_FIELD
        per_test = [_test_needs(field, t) for t in node.tests]
        if node.all_:
            kept = [n for n in per_test if n is not None]
            return kept or None
        union = _union(per_test)
        return None if union is None else [union]
    if isinstance(node, And):
        out: list[Needs] = []
        for child in node.children:
            sub = _clauses(child)
            if sub is not None:
                out.extend(sub)
        return out or None
    if isinstance(node, Or):
        # (a1 and a2) or b == (a1 or b) and (a2 or b): every choice of one clause per
        # branch unites into a necessary clause of the whole. A branch's cheapest clause
        # alone can be a common literal (``.exe``) where its second is a rare one.
        options: list[list[Needs]] = []
        for child in node.children:
            sub = _clauses(child)
            if sub is None:
                return None
            options.append(sorted(set(sub), key=_order)[:OR_BRANCH_CLAUSES])
        if math.prod(map(len, options)) > MAX_OR_COMBINATIONS:
            options = [option[:1] for option in options]
        return [frozenset().union(*combo) for combo in itertools.product(*options)]
    return None  # Not: nothing necessary can be said


def clauses(node: Node) -> tuple[Needs, ...] | None:
    """Necessary clauses of a condition tree: every one must be met by a matching event.

    Each clause is a need set (at least one of its needs holds for a matching
    event). ``and`` contributes the clauses of all its children, so a rule
    with a common literal in one selection and a rare one in another is only
    a candidate when both are present. None: the rule cannot be indexed.
    """
    found = _clauses(node)
    if found is None:
        return None
    unique = sorted(set(found), key=_order)
    if any(not n for n in unique):
        return (frozenset(),)  # an unsatisfiable clause: the rule never matches
    return tuple(unique[:MAX_CLAUSES])


def needs(node: Node) -> Needs | None:
    """The single most selective necessary need set of a condition tree, or None."""
    found = clauses(node)
    return found[0] if found else None
