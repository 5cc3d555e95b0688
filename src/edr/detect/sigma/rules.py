"""A compiled Sigma rule: metadata for alerts plus its condition tree.

Also maps a rule's ``attack.*`` tags onto ECS ``threat.*`` fields. A rule
from the rule cache builds its condition tree when its route is first used
(:meth:`CompiledRule.deferred`): most of the objects of a rule set are in
those trees, and a host's events reach a fraction of the routes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs

from edr.detect.sigma.literals import Needs, clauses
from edr.detect.sigma.logsources import Route
from edr.detect.sigma.nodes import Node
from edr.severity import SEVERITIES

if TYPE_CHECKING:
    from sigma.rule import SigmaRule

#: ATT&CK tactic tags (``attack.<slug>``) -> ECS ``threat.tactic.name``.
ATTACK_TACTICS: Final[dict[str, str]] = {
    "reconnaissance": "Reconnaissance",
    "resource-development": "Resource Development",
    "initial-access": "Initial Access",
    "execution": "Execution",
    "persistence": "Persistence",
    "privilege-escalation": "Privilege Escalation",
    "defense-evasion": "Defense Evasion",
    "credential-access": "Credential Access",
    "discovery": "Discovery",
    "lateral-movement": "Lateral Movement",
    "collection": "Collection",
    "command-and-control": "Command and Control",
    "exfiltration": "Exfiltration",
    "impact": "Impact",
}
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")


def attack_ecs(tags: tuple[str, ...]) -> dict[str, Any]:
    """ECS ``threat.*`` keys for the ATT&CK tags among ``tags`` (empty if none)."""
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        namespace, _, name = tag.lower().partition(".")
        if namespace != "attack":
            continue
        if _TECHNIQUE.match(name):
            techniques.append(name.upper())
        elif name in ATTACK_TACTICS:
            tactics.append(ATTACK_TACTICS[name])
    if not techniques and not tactics:
        return {}
    out: dict[str, Any] = {"threat.framework": "MITRE ATT&CK"}
    if techniques:
        out["threat.technique.id"] = list(dict.fromkeys(techniques))
    if tactics:
        out["threat.tactic.name"] = list(dict.fromkeys(tactics))
    return out


def derived_id(title: str) -> str:
    """A stable id for a rule without one, derived from its title."""
    return "sigma-" + hashlib.sha1(title.encode("utf-8")).hexdigest()[:16]


@attrs.define(slots=True)
class RuleMeta:
    """What alerts and reports say about a rule (plain data, no pySigma objects)."""

    rule_id: str
    title: str
    name: str | None
    level: str
    tags: tuple[str, ...]
    description: str
    path: str
    logsource: Route
    ecs: dict[str, Any]
    status: str = ""


@attrs.define(slots=True)
class CompiledRule:
    """A detection rule ready to match: metadata, condition tree, index clauses."""

    number: int
    meta: RuleMeta
    condition: Node
    #: necessary literal clauses (all must be met), None when unindexable
    clauses: tuple[Needs, ...] | None
    fields: frozenset[str]
    keywords: bool
    warnings: tuple[str, ...] = ()
    #: whether the rule's own matches become alerts (False when only
    #: correlations without ``generate`` use it)
    emits: bool = True
    #: what builds ``condition`` of a deferred rule until it is built; None once it is
    _pending: Callable[[], Node] | None = attrs.field(default=None, eq=False, repr=False, alias="pending")

    @classmethod
    def deferred(cls, *, condition: Callable[[], Node], **fields: Any) -> CompiledRule:
        """A rule whose condition tree ``condition()`` builds on first use (``fields``: the other fields).

        ``condition`` is left unset until then, so that reading it (the
        engine's route index does, :meth:`build` does) builds it; equality
        and ``repr`` read it too, so a deferred rule compares as the built one.
        """
        rule = cls(condition=_UNBUILT, pending=condition, **fields)
        del rule.condition
        return rule

    @property
    def pending(self) -> bool:
        """Whether the condition tree is deferred and not built yet."""
        return self._pending is not None

    def build(self) -> None:
        """Build the condition tree now if it is deferred (raises what its constructors raise)."""
        if self._pending is not None:
            self.condition  # noqa: B018 - reading it builds it (__getattr__)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: for ``condition``, while it is deferred.
        pending = self._pending if name == "condition" else None
        if pending is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.condition = pending()
        self._pending = None
        return self.condition


#: Stands for a deferred condition while the rule is constructed (it is unset right after).
_UNBUILT: Final[Any] = object()


def rule_meta(rule: SigmaRule | Any, path: str) -> RuleMeta:
    """Metadata of a pySigma rule or correlation rule."""
    title = rule.title or ""
    rule_id = str(rule.id) if rule.id else derived_id(title or path)
    level = rule.level.name.lower() if rule.level is not None else "medium"
    if level not in SEVERITIES:
        level = "medium"
    tags = tuple(str(t) for t in rule.tags)
    ecs: dict[str, Any] = {}
    if rule.references:
        ecs["rule.reference"] = list(rule.references)
    if rule.author:
        ecs["rule.author"] = rule.author
    ecs.update(attack_ecs(tags))
    logsource = getattr(rule, "logsource", None)
    route: Route = (
        (logsource.product, logsource.category, logsource.service)
        if logsource is not None else (None, None, None)
    )
    return RuleMeta(
        rule_id=rule_id,
        title=title,
        name=rule.name,
        level=level,
        tags=tags,
        description=(rule.description or "").strip(),
        path=path,
        logsource=route,
        ecs=ecs,
        status=rule.status.name.lower() if rule.status is not None else "",
    )


def compile_rule(number: int, rule: SigmaRule, placeholders: dict[str, list[str]] | None,
                 ) -> CompiledRule:
    """Compile a parsed detection rule (raises CompileError with the reason)."""
    from edr.detect.sigma.compiler import RuleCompiler  # pySigma: only when compiling

    path = str(rule.source.path) if rule.source is not None and rule.source.path else ""
    compiler = RuleCompiler(placeholders)
    condition = compiler.compile_rule(rule)
    return CompiledRule(
        number=number,
        meta=rule_meta(rule, path),
        condition=condition,
        clauses=clauses(condition),
        fields=frozenset(compiler.fields),
        keywords=compiler.keywords,
        warnings=tuple(compiler.warnings),
    )
