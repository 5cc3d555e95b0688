"""Compile pySigma's parsed correlation rules, their rule references resolved to rule numbers.

Correlations refer to rules of any file (by id or name), so they are compiled
once the whole set is numbered (:func:`edr.detect.sigma.ruleset.compile_sources`),
never per rule file. Imported only when a rule set holds correlations: a
start from the rule cache does not need pySigma.
"""

from __future__ import annotations

from typing import Any

from sigma.correlations import (
    CorrelationConditionAND,
    CorrelationConditionNOT,
    CorrelationConditionOR,
    SigmaCorrelationCondition,
    SigmaCorrelationRule,
    SigmaExtendedCorrelationCondition,
    SigmaRuleReference,
)

from edr.detect.sigma.correlation import CompiledCorrelation, RefKey
from edr.detect.sigma.loader import Rejection
from edr.detect.sigma.rules import CompiledRule, rule_meta


def compile_correlations(parsed: list[SigmaCorrelationRule], rules: list[CompiledRule],
                          ) -> tuple[list[CompiledCorrelation], list[Rejection]]:
    """Compiled correlations (references resolved to rule numbers, in ``parsed`` order), and those that failed."""
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
    failures: list[Rejection] = []
    for number, corr in enumerate(parsed):
        path = str(corr.source.path) if corr.source and corr.source.path else ""
        try:
            out.append(_compile_correlation(number, corr, names, labels, path))
        except (KeyError, ValueError, TypeError) as exc:
            failures.append(Rejection(path, f"correlation: {exc}", "correlation",
                                      corr.title or "", str(corr.id or ""), "correlation"))
    return out, failures


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
