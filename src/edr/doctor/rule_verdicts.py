"""Will each rule fire here? Verdicts of compiled Sigma rules against one platform's live sensor (sans-IO).

A :class:`SensorProfile` says which routes (product, category, service) the
live sensor of a platform feeds and which fields each carries (built from
:mod:`edr.doctor.sensor_fields` by :mod:`edr.doctor.profiles`). Against it,
each rule gets one of three verdicts:

- **never fires on this platform** (:data:`NEVER`): no route the sensor feeds
  reaches the rule's logsource (a Windows rule on Linux, a category or
  service no collector here produces, a sensor family switched off), or
  every way the rule's condition can match needs a field the sensor never
  fills on those routes (a rule that only tests ``Hashes`` on Linux);
- **degraded** (:data:`DEGRADED`): it reaches fed routes and can match, but
  reads fields the sensor never fills there, so the parts of it that test
  them never match (``Hashes`` or ``OriginalFileName`` on Linux beside
  ``Image``);
- **can fire** (:data:`CAN_FIRE`): every field it reads may be filled.

"Can match" is decided by evaluating the rule's condition tree with the
unfilled fields absent and every other test unknown (three-valued logic):
a rule whose condition is false whatever the known fields hold never fires.
Keyword (field-less) rules search every value, so only routing limits them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from edr.detect.sigma.logsources import Route, applies, route_label
from edr.detect.sigma.matchers import FieldRef, MatchContext
from edr.detect.sigma.nodes import And, FieldItem, KeywordItem, Node, Not, Or, Selection
from edr.detect.sigma.rules import CompiledRule

CAN_FIRE: Final = "can fire"
DEGRADED: Final = "degraded"
NEVER: Final = "never fires on this platform"
VERDICTS: Final = (CAN_FIRE, DEGRADED, NEVER)
#: The JSON keys of the verdicts.
VERDICT_KEYS: Final = {CAN_FIRE: "can_fire", DEGRADED: "degraded", NEVER: "never"}

#: A route's fields; None: open (the event carries whatever its source record held).
RouteFields = frozenset[str] | None


@attrs.frozen
class SensorProfile:
    """What the live sensor of one platform feeds the rules, as configured.

    ``routes`` maps each fed route to the fields its events may carry (None:
    any). ``disabled`` maps a category the sensor could produce but is
    configured not to (a family or provider switched off) to why, for the
    verdict's reason. ``product`` is the platform's event product
    (``linux``/``windows``), ``sensor`` the sensor's name for messages.
    """

    platform: str
    sensor: str
    product: str
    routes: Mapping[Route, RouteFields]
    disabled: Mapping[str, str] = attrs.field(factory=dict)

    def categories(self) -> list[str]:
        """The categories fed, sorted."""
        return sorted({route[1] for route in self.routes if route[1]})

    def services(self) -> list[str]:
        """The services fed, sorted."""
        return sorted({route[2] for route in self.routes if route[2]})


@attrs.frozen
class RuleVerdict:
    """One rule's verdict: which fed routes reach it, which fields it reads and which of them are never filled."""

    verdict: str
    reason: str
    routes: tuple[Route, ...] = ()
    #: every field the rule reads, sorted
    reads: tuple[str, ...] = ()
    #: the fields it reads that the sensor may fill on those routes (all of them when a route is open)
    filled: tuple[str, ...] = ()
    #: the fields it reads that the sensor never fills on those routes
    unfilled: tuple[str, ...] = ()
    keywords: bool = False


# --- three-valued evaluation ---------------------------------------------------------------------------

_UNKNOWN: Final = None
_NO_FIELDS: Final = MatchContext({})


def _tri(node: Node, absent: frozenset[str]) -> bool | None:
    """``node``'s value on an event where the ``absent`` fields are missing and the rest unknown (None)."""
    if isinstance(node, FieldItem):
        if node.field in absent:
            # exactly what matching does for a missing field (null / not-exists tests hold)
            return node.ev(_NO_FIELDS)
        if node.tests and all(isinstance(t, FieldRef) and t.other in absent for t in node.tests):
            return False  # every test compares with a field that is never there: none can hit
        return _UNKNOWN
    if isinstance(node, KeywordItem):
        return _UNKNOWN
    if isinstance(node, Selection):
        return _tri(node.child, absent)
    if isinstance(node, Not):
        value = _tri(node.child, absent)
        return None if value is None else not value
    if isinstance(node, And):
        result: bool | None = True
        for child in node.children:
            value = _tri(child, absent)
            if value is False:
                return False
            if value is None:
                result = None
        return result
    if isinstance(node, Or):
        result = False
        for child in node.children:
            value = _tri(child, absent)
            if value is True:
                return True
            if value is None:
                result = None
        return result
    return _UNKNOWN  # a node kind this module does not know: claim nothing


def can_match_without(condition: Node, absent: Iterable[str]) -> bool:
    """Whether ``condition`` may hold on an event that lacks every field in ``absent``."""
    return _tri(condition, frozenset(absent)) is not False


# --- verdicts ------------------------------------------------------------------------------------------

def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def _why_unreached(logsource: Route, profile: SensorProfile) -> str:
    """Why no fed route reaches a rule with ``logsource``."""
    product, category, service = logsource
    label = route_label(logsource)
    if product is not None and product != profile.product:
        return (f"logsource {label}: product '{product}'; the {profile.sensor} sensor on {profile.platform} "
                f"produces '{profile.product}' events only")
    if service is not None and service not in profile.services():
        fed = _names(f"'{s}'" for s in profile.services()) or "none"
        return (f"logsource {label}: service '{service}'; no collector on {profile.platform} reads it "
                f"(services fed here: {fed})")
    if category is not None and category in profile.disabled:
        return f"logsource {label}: category '{category}' {profile.disabled[category]}"
    if category is not None and category not in profile.categories():
        return (f"logsource {label}: category '{category}'; the {profile.sensor} sensor does not produce it "
                f"(it produces {_names(profile.categories())})")
    return f"logsource {label}: no route the {profile.sensor} sensor feeds reaches it"


def rule_verdict(logsource: Route, reads: Iterable[str], keywords: bool, condition: Node,
                 profile: SensorProfile) -> RuleVerdict:
    """The verdict of a rule with this logsource, fields read, keyword use and condition (see the module doc)."""
    fields = tuple(sorted(set(reads)))
    routes = tuple(sorted((r for r in profile.routes if applies(logsource, r)),
                          key=lambda r: tuple(p or "" for p in r)))
    if not routes:
        return RuleVerdict(NEVER, _why_unreached(logsource, profile), (), fields, (), fields, keywords)
    per_route = [profile.routes[r] for r in routes]
    if any(f is None for f in per_route):
        return RuleVerdict(CAN_FIRE, "its logsource's events carry whatever their source record holds",
                           routes, fields, fields, (), keywords)
    filled_anywhere = frozenset().union(*(f for f in per_route if f is not None))
    unfilled = tuple(f for f in fields if f not in filled_anywhere)
    filled = tuple(f for f in fields if f in filled_anywhere)
    where = ", ".join(route_label(r) for r in routes)
    if not unfilled:
        return RuleVerdict(CAN_FIRE, f"the {profile.sensor} sensor may fill every field it reads ({where})",
                           routes, fields, filled, (), keywords)
    missing = _names(unfilled)
    if not can_match_without(condition, unfilled):
        return RuleVerdict(NEVER, f"every way it can match needs {missing}, which the {profile.sensor} sensor "
                                  f"never fills ({where})", routes, fields, filled, unfilled, keywords)
    return RuleVerdict(DEGRADED, f"reads {missing}, which the {profile.sensor} sensor never fills ({where}): the "
                                 "parts of it that test them never match", routes, fields, filled, unfilled,
                       keywords)


def verdict_of(rule: CompiledRule, profile: SensorProfile) -> RuleVerdict:
    """:func:`rule_verdict` of a compiled rule."""
    return rule_verdict(rule.meta.logsource, rule.fields, rule.keywords, rule.condition, profile)


# --- many rules ----------------------------------------------------------------------------------------

@attrs.define
class VerdictCounts:
    """How many rules got each verdict."""

    can_fire: int = 0
    degraded: int = 0
    never: int = 0

    def add(self, verdict: str) -> None:
        """Count one rule of ``verdict``."""
        key = VERDICT_KEYS[verdict]
        setattr(self, key, getattr(self, key) + 1)

    @property
    def total(self) -> int:
        """Rules counted."""
        return self.can_fire + self.degraded + self.never


@attrs.define
class RuleSummary:
    """Verdicts of a rule set: per logsource, in all, and which unfilled fields degrade most rules."""

    profile: SensorProfile
    totals: VerdictCounts = attrs.field(factory=VerdictCounts)
    per_logsource: dict[str, VerdictCounts] = attrs.field(factory=dict)
    #: unfilled field -> how many degraded or never-firing (for want of fields) rules read it
    unfilled_fields: dict[str, int] = attrs.field(factory=dict)
    #: the rules the sensor feeds but that read fields it never fills (degraded, or never for want of them),
    #: in load order: what a user can act on, unlike the rules of a platform or service this host lacks
    wanting: list[dict[str, object]] = attrs.field(factory=list)

    def add(self, rule: CompiledRule, verdict: RuleVerdict) -> None:
        """Count one rule."""
        logsource = route_label(rule.meta.logsource)
        self.totals.add(verdict.verdict)
        self.per_logsource.setdefault(logsource, VerdictCounts()).add(verdict.verdict)
        if verdict.routes and verdict.unfilled:
            for name in verdict.unfilled:
                self.unfilled_fields[name] = self.unfilled_fields.get(name, 0) + 1
            self.wanting.append({"id": rule.meta.rule_id, "title": rule.meta.title, "logsource": logsource,
                                 "verdict": verdict.verdict, "unfilled": list(verdict.unfilled)})

    def to_json(self) -> dict[str, object]:
        """For ``--json``."""
        return {
            "platform": self.profile.platform,
            "sensor": self.profile.sensor,
            "totals": attrs.asdict(self.totals),
            "logsources": {label: attrs.asdict(c) for label, c in sorted(self.per_logsource.items())},
            "unfilled_fields": dict(sorted(self.unfilled_fields.items(), key=lambda kv: (-kv[1], kv[0]))),
            "wanting_fields": list(self.wanting),
        }

    def to_text(self, *, top_fields: int = 10, top_rules: int = 10) -> list[str]:
        """A table per logsource, the totals, the unfilled fields that cost most rules and the first such rules."""
        header = ("logsource (product/category/service)", "can fire", "degraded", "never")
        rows = sorted(self.per_logsource.items())
        width = max([len(header[0]), *(len(name) for name, _ in rows)])
        lines = [f"{header[0]:<{width}}  {header[1]:>8} {header[2]:>8} {header[3]:>8}"]
        rule = "-" * len(lines[0])
        lines.append(rule)
        for name, c in rows:
            lines.append(f"{name:<{width}}  {c.can_fire:>8} {c.degraded:>8} {c.never:>8}")
        lines.append(rule)
        t = self.totals
        lines.append(f"{'total':<{width}}  {t.can_fire:>8} {t.degraded:>8} {t.never:>8}")
        if self.unfilled_fields:
            common = sorted(self.unfilled_fields.items(), key=lambda kv: (-kv[1], kv[0]))[:top_fields]
            lines.append(f"fields the {self.profile.sensor} sensor never fills, by rules reading them: "
                         + ", ".join(f"{name} ({n})" for name, n in common))
        if self.wanting:
            lines.append(f"rules reading them ({len(self.wanting)}; `edr doctor --rule ID` explains one"
                         + (", --json lists all" if len(self.wanting) > top_rules else "") + "):")
            lines.extend(f"  {r['id']}  {r['title']}: {'degraded' if r['verdict'] == DEGRADED else 'never fires'}, "
                         f"{', '.join(map(str, r['unfilled']))} never filled" for r in self.wanting[:top_rules])
        return lines


def summarize(rules: Iterable[CompiledRule], profile: SensorProfile) -> RuleSummary:
    """The verdict of every rule, counted."""
    summary = RuleSummary(profile)
    for rule in rules:
        summary.add(rule, verdict_of(rule, profile))
    return summary


def explain(rule: CompiledRule, profile: SensorProfile) -> dict[str, object]:
    """``--rule ID``: one rule's logsource, the fields it reads, which of them this platform fills, the verdict."""
    verdict = verdict_of(rule, profile)
    meta = rule.meta
    return {
        "id": meta.rule_id,
        "title": meta.title,
        "path": meta.path,
        "logsource": route_label(meta.logsource),
        "platform": profile.platform,
        "sensor": profile.sensor,
        "routes": [route_label(r) for r in verdict.routes],
        "reads": list(verdict.reads),
        "keywords": verdict.keywords,
        "filled": list(verdict.filled),
        "unfilled": list(verdict.unfilled),
        "verdict": verdict.verdict,
        "reason": verdict.reason,
    }


def explanation_text(doc: Mapping[str, object]) -> str:
    """:func:`explain`'s dict for people."""

    def names(key: str) -> str:
        value = doc[key]
        return ", ".join(str(v) for v in value) if isinstance(value, list) and value else "none"

    lines = [f"rule '{doc['title']}' ({doc['id']})",
             f"  file:       {doc['path'] or '-'}",
             f"  logsource:  {doc['logsource']}",
             f"  fed by:     {names('routes')} ({doc['sensor']} sensor, {doc['platform']})",
             f"  reads:      {names('reads')}" + (" and every value (keywords)" if doc["keywords"] else ""),
             f"  filled:     {names('filled')}",
             f"  never:      {names('unfilled')}",
             f"  verdict:    {doc['verdict']}: {doc['reason']}"]
    return "\n".join(lines)
