"""Build a compiled rule set from rule files: parse, compile, route, report.

:class:`RuleSet` is plain picklable data (no pySigma objects), which is what
the on-disk cache stores.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import attrs
from sigma.correlations import (
    CorrelationConditionAND,
    CorrelationConditionNOT,
    CorrelationConditionOR,
    SigmaCorrelationCondition,
    SigmaCorrelationRule,
    SigmaExtendedCorrelationCondition,
    SigmaRuleReference,
)

from edr.detect.sigma.compiler import CompileError
from edr.detect.sigma.correlation import CompiledCorrelation, RefKey
from edr.detect.sigma.index import RouteIndex
from edr.detect.sigma.loader import Rejection, parse_files
from edr.detect.sigma.logsources import Route, applies, is_fed, route_label
from edr.detect.sigma.report import LoadReport
from edr.detect.sigma.rules import CompiledRule, compile_rule, rule_meta


@attrs.define
class RuleSet:
    """Compiled detection rules and correlations, pre-built indexes for fed routes."""

    rules: list[CompiledRule]
    correlations: list[CompiledCorrelation]
    report: LoadReport
    fed: frozenset[Route]
    routes: dict[Route, RouteIndex] = attrs.field(factory=dict)

    def route_index(self, route: Route) -> RouteIndex:
        """The literal index of the rules that apply to ``route`` (built on first use)."""
        index = self.routes.get(route)
        if index is None:
            index = RouteIndex(
                (rule.number, rule.clauses) for rule in self.rules
                if applies(rule.meta.logsource, route)
            )
            self.routes[route] = index
        return index


def _label(route: Route) -> str:
    return route_label(route)


def build_ruleset(paths: list[str], *, placeholders: dict[str, list[str]] | None,
                  fed: Iterable[Route]) -> RuleSet:
    """Parse and compile every rule under ``paths``; never raises for a bad rule."""
    started = time.perf_counter()
    fed_set = frozenset(fed)
    parsed = parse_files(paths)
    report = LoadReport(files=len(parsed.files))
    for rejection in parsed.rejections:
        report.reject(rejection)

    rules: list[CompiledRule] = []
    for sigma_rule in parsed.rules:
        path = str(sigma_rule.source.path) if sigma_rule.source and sigma_rule.source.path else ""
        logsource = sigma_rule.logsource
        route: Route = (logsource.product, logsource.category, logsource.service)
        try:
            compiled = compile_rule(len(rules), sigma_rule, placeholders)
        except (CompileError, ValueError, TypeError) as exc:
            report.reject(Rejection(path, str(exc), "compile", sigma_rule.title or "",
                                    str(sigma_rule.id or ""), _label(route)))
            continue
        rules.append(compiled)
        report.count(_label(route), "loaded" if is_fed(route, fed_set) else "inert")
        for warning in compiled.warnings:
            report.warnings.append({"path": path, "title": compiled.meta.title,
                                    "id": compiled.meta.rule_id, "warning": warning})

    correlations = _compile_correlations(parsed.correlations, rules, report)
    report.correlations = len(correlations)
    _apply_generate(rules, correlations)
    ruleset = RuleSet(rules=rules, correlations=correlations, report=report, fed=fed_set)
    for route in sorted(fed_set, key=lambda r: tuple(p or "" for p in r)):
        ruleset.route_index(route)
    report.seconds = time.perf_counter() - started
    return ruleset


def _compile_correlations(parsed: list[SigmaCorrelationRule], rules: list[CompiledRule],
                          report: LoadReport) -> list[CompiledCorrelation]:
    names: dict[str, RefKey] = {}
    for rule in rules:
        names[rule.meta.rule_id] = ("r", rule.number)
        if rule.meta.name:
            names[rule.meta.name] = ("r", rule.number)
    # correlations may reference correlations: register every one first
    for number, corr in enumerate(parsed):
        if corr.id:
            names.setdefault(str(corr.id), ("c", number))
        if corr.name:
            names.setdefault(corr.name, ("c", number))
    labels = {key: label for label, key in names.items()}

    out: list[CompiledCorrelation] = []
    for number, corr in enumerate(parsed):
        path = str(corr.source.path) if corr.source and corr.source.path else ""
        try:
            out.append(_compile_correlation(number, corr, names, labels, path))
        except (KeyError, ValueError, TypeError) as exc:
            report.reject(Rejection(path, f"correlation: {exc}", "correlation",
                                    corr.title or "", str(corr.id or ""), "correlation"))
            continue
        report.count("correlation", "loaded")
    return out


def _compile_correlation(number: int, corr: SigmaCorrelationRule,
                         names: dict[str, RefKey], labels: dict[RefKey, str],
                         path: str) -> CompiledCorrelation:
    def resolve(ref: SigmaRuleReference | str) -> RefKey:
        text = ref.reference if isinstance(ref, SigmaRuleReference) else ref
        if text not in names:
            raise KeyError(f"referenced rule '{text}' not found")
        key = names[text]
        if key == ("c", number):
            raise ValueError("correlation references itself")
        return key

    condition = corr.condition
    extended: Any = None
    refs_source: list[Any] = list(corr.rules or [])
    if isinstance(condition, SigmaExtendedCorrelationCondition):
        extended = _extended(condition.parsed, resolve)
        if not refs_source:
            refs_source = list(condition.get_referenced_rules())
    if not refs_source:
        raise ValueError("correlation references no rules")
    refs = tuple(resolve(r) for r in refs_source)
    op, count, fieldref, pct = "GTE", 1.0, (), None
    if isinstance(condition, SigmaCorrelationCondition):
        op = condition.op.name
        count = float(condition.count)
        if condition.fieldref is not None:
            fieldref = (tuple(condition.fieldref) if isinstance(condition.fieldref, list)
                        else (condition.fieldref,))
        pct = float(condition.percentile) if condition.percentile is not None else None
    aliases: dict[str, dict[RefKey, str]] = {}
    for alias in corr.aliases:
        aliases[alias.alias] = {resolve(ref): field for ref, field in alias.mapping.items()}
    return CompiledCorrelation(
        number=number,
        meta=rule_meta(corr, path),
        kind=corr.type.name.lower(),
        refs=refs,
        ref_labels=tuple(labels.get(r, str(r)) for r in refs),
        group_by=tuple(corr.group_by or ()),
        aliases=aliases,
        timespan=float(corr.timespan.seconds),
        op=op,
        count=count,
        fieldref=fieldref,
        percentile=pct,
        extended=extended,
        generate=bool(corr.generate),
    )


def _extended(node: Any, resolve: Any) -> Any:
    if isinstance(node, SigmaRuleReference):
        return ("ref", resolve(node))
    if isinstance(node, CorrelationConditionNOT):
        return ("not", [_extended(node.args[0], resolve)])
    if isinstance(node, CorrelationConditionAND):
        return ("and", [_extended(a, resolve) for a in node.args])
    if isinstance(node, CorrelationConditionOR):
        return ("or", [_extended(a, resolve) for a in node.args])
    raise ValueError(f"unsupported extended condition element {node!r}")


def _apply_generate(rules: list[CompiledRule], correlations: list[CompiledCorrelation]) -> None:
    """A rule used by correlations alerts on its own only if one of them says ``generate``."""
    referenced: dict[RefKey, bool] = {}
    for corr in correlations:
        for ref in corr.refs:
            referenced[ref] = referenced.get(ref, False) or corr.generate
    for rule in rules:
        generate = referenced.get(("r", rule.number))
        rule.emits = True if generate is None else generate
    for corr in correlations:
        generate = referenced.get(("c", corr.number))
        corr.emits = True if generate is None else generate
