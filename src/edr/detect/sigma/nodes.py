"""Condition nodes of a compiled Sigma rule: detection items, selections, and/or/not.

A compiled rule is a small tree of these slotted objects. ``ev`` evaluates it
on a :class:`~edr.detect.sigma.matchers.MatchContext`, short-circuiting;
``explain`` re-walks a tree that matched to say which selections and fields
did (only for ``match_debug``, so the hot path pays nothing for it).
"""

from __future__ import annotations

from typing import Any

from edr.detect.sigma.matchers import MatchContext, Test

#: Longest matched value written into full debug output.
DEBUG_VALUE_LIMIT = 256


class Explanation:
    """What ``explain`` collects: selections and fields that matched, with values."""

    __slots__ = ("fields", "selections", "values")

    def __init__(self) -> None:
        self.selections: list[str] = []
        self.fields: list[str] = []
        self.values: dict[str, str] = {}


class Node:
    """Base of condition nodes."""

    __slots__ = ()

    def ev(self, ctx: MatchContext) -> bool:
        """Evaluate on one event."""
        raise NotImplementedError

    def explain(self, ctx: MatchContext, out: Explanation) -> None:
        """Record the matching parts of this (matching) node into ``out``."""


class FieldItem(Node):
    """One detection item bound to a field: its tests OR-linked (or AND with ``all``)."""

    __slots__ = ("all_", "field", "needs_low", "tests")

    def __init__(self, field: str, tests: tuple[Test, ...], all_: bool) -> None:
        self.field = field
        self.tests = tests
        self.all_ = all_
        self.needs_low = any(t.needs_low for t in tests)

    def ev(self, ctx: MatchContext) -> bool:
        raws, lows = ctx.values(self.field, self.needs_low)
        if raws is None:
            if self.all_:
                return all(t.miss() for t in self.tests)
            return any(t.miss() for t in self.tests)
        if self.all_:
            for t in self.tests:
                if not t.hit(raws, lows, ctx):
                    return False
            return True
        for t in self.tests:
            if t.hit(raws, lows, ctx):
                return True
        return False

    def explain(self, ctx: MatchContext, out: Explanation) -> None:
        if not self.ev(ctx):
            return
        if self.field not in out.fields:
            out.fields.append(self.field)
        raws = ctx.raw(self.field)
        if raws:
            out.values[self.field] = raws[0][:DEBUG_VALUE_LIMIT]


class KeywordItem(Node):
    """A field-less (keyword) detection item: tests against every value of the event."""

    __slots__ = ("all_", "needs_low", "tests")

    def __init__(self, tests: tuple[Test, ...], all_: bool) -> None:
        self.tests = tests
        self.all_ = all_
        self.needs_low = any(t.needs_low for t in tests)

    def ev(self, ctx: MatchContext) -> bool:
        raws = ctx.all_raw()
        if not raws:
            return False
        lows = ctx.all_low() if self.needs_low else None
        if self.all_:
            return all(t.hit(raws, lows, ctx) for t in self.tests)
        return any(t.hit(raws, lows, ctx) for t in self.tests)

    def explain(self, ctx: MatchContext, out: Explanation) -> None:
        if not self.ev(ctx):
            return
        if "*keywords*" not in out.fields:
            out.fields.append("*keywords*")
        lows = ctx.all_low()
        raws = ctx.all_raw()
        for raw, low in zip(raws, lows, strict=True):
            if any(t.hit((raw,), (low,), ctx) for t in self.tests):
                out.values["*keywords*"] = raw[:DEBUG_VALUE_LIMIT]
                break


class And(Node):
    """All children."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]) -> None:
        self.children = children

    def ev(self, ctx: MatchContext) -> bool:
        for child in self.children:
            if not child.ev(ctx):
                return False
        return True

    def explain(self, ctx: MatchContext, out: Explanation) -> None:
        for child in self.children:
            child.explain(ctx, out)


class Or(Node):
    """Any child."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Node, ...]) -> None:
        self.children = children

    def ev(self, ctx: MatchContext) -> bool:
        for child in self.children:
            if child.ev(ctx):
                return True
        return False

    def explain(self, ctx: MatchContext, out: Explanation) -> None:
        for child in self.children:
            child.explain(ctx, out)


class Not(Node):
    """Negation (``not``, or a negated detection item)."""

    __slots__ = ("child",)

    def __init__(self, child: Node) -> None:
        self.child = child

    def ev(self, ctx: MatchContext) -> bool:
        return not self.child.ev(ctx)

    # A negated part contributes no "matched" fields: nothing of it matched.


class Selection(Node):
    """A named detection (``selection``, ``filter_main``...) referenced by the condition."""

    __slots__ = ("child", "name")

    def __init__(self, name: str, child: Node) -> None:
        self.name = name
        self.child = child

    def ev(self, ctx: MatchContext) -> bool:
        return self.child.ev(ctx)

    def explain(self, ctx: MatchContext, out: Explanation) -> None:
        if self.child.ev(ctx):
            if self.name not in out.selections:
                out.selections.append(self.name)
            self.child.explain(ctx, out)


def explain(root: Node, ctx: MatchContext, full: bool) -> dict[str, Any]:
    """Debug detail of a matched rule: selections and fields, values when ``full``."""
    out = Explanation()
    root.explain(ctx, out)
    detail: dict[str, Any] = {"selections": out.selections, "fields": out.fields}
    if full:
        detail["values"] = out.values
    return detail
