"""Rules that can be replaced while the agent runs: :class:`RuleSet`, :class:`RuleSetHolder`.

A hot reload compiles a whole new :class:`RuleSet` (every engine and the
YARA rules) off the event loop, then :meth:`RuleSetHolder.replace` publishes
it under the next version number. Nothing is swapped inside a running
engine: each consumer (the detection actor, the scan dispatcher) keeps the
set it started a batch with and compares :attr:`RuleSetHolder.version` with
its own only *between* batches, so a batch is always matched by one rule set
from its first event to its last, and no event is matched by none.

Correlation state (the Sigma windows being counted) is carried from the old
engine to the new one by :func:`carry_correlations`, for each correlation
whose identity did not change: its rule id and the content digest of its
file, and the same of every rule it refers to. A correlation whose file or
referenced rules changed starts afresh, since its old matches were counted
under other definitions.

Plain synchronous code: no trio. The holder is written from the event loop
only; readers on worker threads take :attr:`RuleSetHolder.current` once per
job (a single attribute read, atomic in CPython).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from edr.detect.engines import Detection

if TYPE_CHECKING:
    from edr.detect.sigma import SigmaEngine
    from edr.detect.sigma.correlation import CompiledCorrelation
    from edr.detect.yara_rules import YaraRuleSet


@attrs.frozen
class RuleSet:
    """One generation of rules: the detection engines and the compiled YARA rules.

    ``version`` counts from 1 (the rules loaded at start); each accepted
    reload is the next one.
    """

    version: int
    detection: Detection
    yara: YaraRuleSet | None = None
    #: Sigma rule file -> SHA-256 of what was compiled (see :func:`sigma_digests`)
    sigma_digests: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def problems(self) -> tuple[str, ...]:
        """Every rule error loading found (each naming its file): Sigma, IOC, simple rules, YARA."""
        yara = () if self.yara is None else tuple(f"yara: {err}" for err in self.yara.errors)
        return self.detection.problems + yara

    def counts(self) -> dict[str, int]:
        """What is loaded, per engine, for the reload's before/after line (engines that are off are absent)."""
        out: dict[str, int] = {}
        d = self.detection
        if d.sigma is not None:
            out["sigma rules"] = d.sigma.ruleset.report.loaded
            out["sigma correlations"] = len(d.sigma.ruleset.correlations)
        if d.iocs is not None:
            out["iocs"] = sum(d.iocs.counts().values())
        if d.simple is not None:
            out["simple rules"] = len(d.simple.rules)
        if self.yara is not None:
            out["yara rules"] = self.yara.rule_count
        return out


class RuleSetHolder:
    """The rule set in force, versioned; consumers read it at batch boundaries.

    :meth:`replace` is the only write and is made from the event loop; a
    consumer that sees :attr:`version` differ from the version it holds
    takes :attr:`current` before its next batch.
    """

    def __init__(self, initial: RuleSet) -> None:
        self.current = initial

    @property
    def version(self) -> int:
        """The version of :attr:`current`."""
        return self.current.version

    def replace(self, detection: Detection, yara: YaraRuleSet | None,
                digests: Mapping[str, str] | None = None) -> RuleSet:
        """Publish a new rule set under the next version; returns it."""
        new = RuleSet(self.current.version + 1, detection, yara, dict(digests or {}))
        self.current = new
        return new


#: A correlation's identity: (rule id, file digest, identities of what it refers to).
Identity = tuple[Hashable, ...]


def sigma_digests(detection: Detection) -> dict[str, str]:
    """SHA-256 of each Sigma rule file of ``detection``: the rule cache's, else read now. Blocking.

    Call it right after the load, before the files can change: a file
    edited in between gets the digest of its new content, and its
    correlations are then carried over one reload too many or too few (a
    window of milliseconds). Unreadable files are left out (never carried).
    """
    out: dict[str, str] = {}
    if detection.sigma is None:
        return out
    for f in detection.sigma.ruleset.files:
        if not f.path:
            continue
        if f.digest:
            out[f.path] = f.digest
            continue
        try:
            out[f.path] = hashlib.sha256(Path(f.path).read_bytes()).hexdigest()
        except OSError:
            continue
    return out


def _identities(engine: SigmaEngine, digests: Mapping[str, str]) -> dict[Identity, CompiledCorrelation]:
    """Each correlation of ``engine`` by identity; those whose identity is unknown are left out."""
    ruleset = engine.ruleset
    rules = ruleset.rules
    by_number = {c.number: c for c in ruleset.correlations}
    memo: dict[int, Identity | None] = {}

    def corr_identity(number: int, depth: int = 0) -> Identity | None:
        if number in memo:
            return memo[number]
        corr = by_number.get(number)
        if corr is None or depth > 16:  # references are resolved; the bound stops cycles
            return None
        digest = digests.get(corr.meta.path)
        if digest is None:
            memo[number] = None
            return None
        refs: list[Identity] = []
        for kind, ref in corr.refs:
            if kind == "r":
                if not 0 <= ref < len(rules):
                    memo[number] = None
                    return None
                rule_digest = digests.get(rules[ref].meta.path)
                if rule_digest is None:
                    memo[number] = None
                    return None
                refs.append(("r", rules[ref].meta.rule_id, rule_digest))
            else:
                inner = corr_identity(ref, depth + 1)
                if inner is None:
                    memo[number] = None
                    return None
                refs.append(("c", *inner))
        ident: Identity = (corr.meta.rule_id, digest, tuple(refs))
        memo[number] = ident
        return ident

    out: dict[Identity, CompiledCorrelation] = {}
    for corr in ruleset.correlations:
        ident = corr_identity(corr.number)
        if ident is not None:
            out[ident] = corr
    return out


def carry_correlations(old: SigmaEngine, new: SigmaEngine, old_digests: Mapping[str, str],
                       new_digests: Mapping[str, str]) -> tuple[int, int]:
    """Move the correlation state of every unchanged correlation from ``old`` into ``new``.

    ``old_digests`` and ``new_digests`` are the engines' :func:`sigma_digests`.

    Returns (correlations carried, groups carried). Group keys and the
    rule references inside retained matches are renumbered for ``new``;
    least-recently-updated order is kept, and ``new``'s own bounds
    (groups, bytes) are applied afterwards. ``old`` must not be fed again.
    """
    src, dst = old.correlation, new.correlation
    if not src.groups:
        return 0, 0
    old_ids = _identities(old, old_digests)
    numbers: dict[int, int] = {}
    refs: dict[int, dict[tuple[str, int], tuple[str, int]]] = {}
    for ident, new_corr in _identities(new, new_digests).items():
        old_corr = old_ids.get(ident)
        if old_corr is None:
            continue
        numbers[old_corr.number] = new_corr.number
        # same identity: same references in the same order, possibly renumbered
        mapped = dict(zip(old_corr.refs, new_corr.refs, strict=True))
        # a reference to a correlation is renumbered like that correlation
        refs[old_corr.number] = mapped
    groups = 0
    for (number, values), group in src.groups.items():
        new_number = numbers.get(number)
        if new_number is None:
            continue
        mapping = refs[number]
        moved = copy.copy(group)
        moved.entries = [(t, arrival, mapping.get(ref, ref), value, weight)
                         for t, arrival, ref, value, weight in group.entries]
        key = (new_number, values)
        previous = dst.groups.pop(key, None)
        if previous is not None:
            dst.bytes -= previous.bytes
        dst.groups[key] = moved
        dst.bytes += moved.bytes
        groups += 1
    dst._arrival = max(dst._arrival, src._arrival)
    while len(dst.groups) > dst.max_groups:
        dst.bytes -= dst.groups.popitem(last=False)[1].bytes
        dst.evictions += 1
    if dst.bytes > dst.max_bytes:
        dst._shed()
    return len(numbers), groups
