"""Build a compiled rule set from rule files: parse, compile, route, report.

A set is built per rule file first (:class:`RuleFile`: what one file compiles
to on its own, whatever the other files and the fed routes), then assembled
(:func:`assemble`): rules numbered in file order, correlations compiled
across files, the load report counted for the fed routes (route indexes are
built per route, on its first event). The rule cache (:mod:`edr.detect.sigma.cache`) stores the per-file
parts and the correlations as data (:mod:`edr.detect.sigma.codec`) and hands
back the files whose content is unchanged (``reuse``), so that editing one
rule file recompiles that file only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
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
from edr.detect.sigma.loader import ParsedFiles, Rejection, find_rule_files, parse_files
from edr.detect.sigma.logsources import Route, applies, is_fed, route_label
from edr.detect.sigma.report import LoadReport
from edr.detect.sigma.rules import CompiledRule, compile_rule, rule_meta


def file_digest(path: str) -> str:
    """SHA-256 (hex) of a file's content, or "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


@attrs.define(frozen=True)
class Sources:
    """The rule files under the configured paths, each with the digest of its content."""

    #: rule files, as :func:`~edr.detect.sigma.loader.find_rule_files` names them, sorted
    files: tuple[str, ...]
    #: SHA-256 (hex) of each file's content when found, "" when unreadable (or not digested)
    digests: tuple[str, ...]
    #: configured paths that do not exist
    missing: tuple[Rejection, ...]

    @classmethod
    def find(cls, paths: list[str], *, digests: bool = True) -> Sources:
        """Find every rule file under ``paths`` and digest it (reads each file; not without ``digests``)."""
        found, missing = find_rule_files(paths)
        files = tuple(str(path) for path in found)
        return cls(files, tuple(map(file_digest, files)) if digests else ("",) * len(files), tuple(missing))


@attrs.define
class RuleFile:
    """What one rule file compiles to on its own: the unit the rule cache reuses.

    Independent of the other files and of the fed routes, except that Sigma
    filters apply across files: when any file holds one, the whole set is
    compiled as one unit (``path`` "", ``filters`` > 0), never reused file by file.
    """

    path: str
    #: SHA-256 (hex) of the content compiled; "" when unknown (unreadable)
    digest: str
    #: in file order; numbered when the set is assembled
    rules: list[CompiledRule]
    #: read, parse and filter rejections, in the loader's order
    rejections: list[Rejection]
    #: rules pySigma parsed that this engine could not compile
    failures: list[Rejection]
    #: correlation rules in the file (compiled with the whole set: they refer to any file)
    correlations: int = 0
    #: Sigma filters in the file
    filters: int = 0


@attrs.define
class RuleSet:
    """Compiled detection rules and correlations, and the route indexes built so far."""

    rules: list[CompiledRule]
    correlations: list[CompiledCorrelation]
    report: LoadReport
    fed: frozenset[Route]
    routes: dict[Route, RouteIndex] = attrs.field(factory=dict)
    #: the per-file parts ``rules`` was assembled from (what the rule cache stores)
    files: list[RuleFile] = attrs.field(factory=list)
    #: rule numbers per distinct logsource, in load order (derived, for building route indexes)
    _by_logsource: dict[Route, list[int]] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def route_index(self, route: Route) -> RouteIndex:
        """The literal index of the rules that apply to ``route`` (built on first use)."""
        index = self.routes.get(route)
        if index is None:
            if not self._by_logsource:
                for rule in self.rules:
                    self._by_logsource.setdefault(rule.meta.logsource, []).append(rule.number)
            # a few hundred distinct logsources, not thousands of rules, are tested against the route
            numbers = sorted(number for logsource, group in self._by_logsource.items()
                             if applies(logsource, route) for number in group)
            rules = self.rules
            index = RouteIndex((number, rules[number].clauses) for number in numbers)
            self.routes[route] = index
        return index


def _label(route: Route) -> str:
    return route_label(route)


def build_ruleset(paths: list[str], *, placeholders: dict[str, list[str]] | None,
                  fed: Iterable[Route]) -> RuleSet:
    """Parse and compile every rule under ``paths``; never raises for a bad rule."""
    # without a cache to key, the files need not be digested
    ruleset, _stable = compile_sources(Sources.find(paths, digests=False), placeholders=placeholders, fed=fed)
    return ruleset


def compile_sources(sources: Sources, *, placeholders: dict[str, list[str]] | None, fed: Iterable[Route],
                    reuse: Mapping[tuple[str, str], RuleFile] | None = None) -> tuple[RuleSet, bool]:
    """Compile the rule files of ``sources``, taking unchanged ones from ``reuse``; never raises for a bad rule.

    ``reuse`` maps (path, content digest) to a file compiled earlier with the
    same placeholders and engine. Returns the rule set and whether every file
    parsed still has the content it had when ``sources`` digested it (else
    the set may mix two versions of a file and must not be cached).
    """
    started = time.perf_counter()
    reuse = reuse or {}
    known = [reuse.get((path, digest)) if digest else None
             for path, digest in zip(sources.files, sources.digests, strict=True)]
    # a reused file with correlations is parsed again for them: they are compiled with the whole set
    wanted = [path for path, entry in zip(sources.files, known, strict=True)
              if entry is None or entry.correlations]
    parsed = parse_files(wanted)
    per_file = _per_file(parsed, wanted)
    files: list[RuleFile]
    if per_file is None:
        # A Sigma filter applies to rules of every file: compile everything together, as one unit
        if len(wanted) < len(sources.files):
            wanted = list(sources.files)
            parsed = parse_files(wanted)
        files = [_compile_file("", "", parsed, placeholders)]
    else:
        files = [entry if entry is not None else _compile_file(path, digest, per_file[path], placeholders)
                 for path, digest, entry in zip(sources.files, sources.digests, known, strict=True)]
    compiled, failures = _compile_correlations(parsed.correlations, _number(files))
    ruleset = assemble(sources, files, compiled, failures, fed)
    ruleset.report.files_parsed = len(wanted)
    ruleset.report.seconds = time.perf_counter() - started
    digests = dict(zip(sources.files, sources.digests, strict=True))
    stable = all(file_digest(path) == digests[path] for path in wanted if digests[path])
    return ruleset, stable


def _per_file(parsed: ParsedFiles, paths: list[str]) -> dict[str, ParsedFiles] | None:
    """What ``parse_files(paths)`` found, split by file; None when filters make the files depend on each other.

    Also None, to be safe, for anything that names no file of ``paths`` (the
    loader gives every item its file, so this does not happen).
    """
    if parsed.filters:
        return None
    out = {path: ParsedFiles([], [], [], [], []) for path in paths}
    items = [*((str(r.source.path) if r.source else "", "rules", r) for r in parsed.rules),
             *((str(c.source.path) if c.source else "", "correlations", c) for c in parsed.correlations),
             *((r.path, "rejections", r) for r in parsed.rejections)]
    for path, kind, item in items:
        part = out.get(path)
        if part is None:
            return None
        getattr(part, kind).append(item)
    return out


def _compile_file(path: str, digest: str, parsed: ParsedFiles,
                  placeholders: dict[str, list[str]] | None) -> RuleFile:
    rules: list[CompiledRule] = []
    failures: list[Rejection] = []
    for sigma_rule in parsed.rules:
        source = str(sigma_rule.source.path) if sigma_rule.source and sigma_rule.source.path else ""
        logsource = sigma_rule.logsource
        route: Route = (logsource.product, logsource.category, logsource.service)
        try:
            rules.append(compile_rule(len(rules), sigma_rule, placeholders))
        except (CompileError, ValueError, TypeError) as exc:
            failures.append(Rejection(source, str(exc), "compile", sigma_rule.title or "",
                                      str(sigma_rule.id or ""), _label(route)))
    return RuleFile(path, digest, rules, list(parsed.rejections), failures, len(parsed.correlations),
                    len(parsed.filters))


def _number(files: list[RuleFile]) -> list[CompiledRule]:
    """Every file's rules in file order, numbered by their place in that order."""
    rules: list[CompiledRule] = []
    for entry in files:
        for rule in entry.rules:
            rule.number = len(rules)
            rules.append(rule)
    return rules


def assemble(sources: Sources, files: list[RuleFile], correlations: list[CompiledCorrelation],
             correlation_failures: list[Rejection], fed: Iterable[Route]) -> RuleSet:
    """The rule set of compiled ``files`` and ``correlations``: numbered, reported for ``fed``.

    The report lists rejections in the loader's order: missing paths, then
    read, parse and filter failures, compile failures (each in file order),
    and correlation failures.
    """
    fed_set = frozenset(fed)
    rules = _number(files)
    report = LoadReport(files=len(sources.files))
    for rejection in sources.missing:
        report.reject(rejection)
    for entry in files:
        for rejection in entry.rejections:
            report.reject(rejection)
    reached: dict[Route, bool] = {}
    for entry in files:
        for rule in entry.rules:
            route = rule.meta.logsource
            if route not in reached:
                reached[route] = is_fed(route, fed_set)
            report.count(_label(route), "loaded" if reached[route] else "inert")
            for warning in rule.warnings:
                report.warnings.append({"path": rule.meta.path, "title": rule.meta.title,
                                        "id": rule.meta.rule_id, "warning": warning})
        for rejection in entry.failures:
            report.reject(rejection)
    for rejection in correlation_failures:
        report.reject(rejection)
    for _correlation in correlations:
        report.count("correlation", "loaded")
    report.correlations = len(correlations)
    _apply_generate(rules, correlations)
    # Route indexes are built on each route's first event (RuleSet.route_index), not here:
    # all 88 fed routes of the full SigmaHQ set take 0.1-0.2 s, where a Linux host's
    # events reach 8 of them and a replay of Windows logs a dozen.
    return RuleSet(rules=rules, correlations=correlations, report=report, fed=fed_set, files=files)


def _compile_correlations(parsed: list[SigmaCorrelationRule], rules: list[CompiledRule],
                          ) -> tuple[list[CompiledCorrelation], list[Rejection]]:
    """Compiled correlations (references resolved to rule numbers), and those that failed."""
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
