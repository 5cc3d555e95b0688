"""The load report: per logsource, rules loaded, inert and rejected, with reasons.

:class:`LoadReport` is filled while a rule set is built and rendered by
:meth:`LoadReport.to_text` (a table for people) and :meth:`LoadReport.to_json`
(for machines). :func:`edr.detect.sigma.rules_check` wraps both for
``edr rules check``.
"""

from __future__ import annotations

from typing import Any

import attrs

from edr.detect.sigma.loader import Rejection


@attrs.define
class SourceCounts:
    """Counts for one logsource."""

    loaded: int = 0
    inert: int = 0
    rejected: int = 0


@attrs.define
class LoadReport:
    """What loading a rule set did.

    ``loaded`` rules are compiled and reachable from a fed logsource;
    ``inert`` rules are compiled but for logsources no collector feeds;
    ``rejected`` rules (and files) failed with the reason given;
    ``warnings`` are rules that loaded with a caveat (unresolved placeholders).
    """

    files: int = 0
    per_logsource: dict[str, SourceCounts] = attrs.field(factory=dict)
    rejections: list[Rejection] = attrs.field(factory=list)
    warnings: list[dict[str, str]] = attrs.field(factory=list)
    correlations: int = 0
    #: True when the whole compiled set came from the rule cache
    cached: bool = False
    #: rule files pySigma parsed for this load (0 on a cache hit; 1 after editing one file)
    files_parsed: int = 0
    seconds: float = 0.0

    def count(self, logsource: str, kind: str) -> None:
        """Add one rule of ``kind`` ("loaded", "inert", "rejected") to ``logsource``."""
        counts = self.per_logsource.setdefault(logsource, SourceCounts())
        setattr(counts, kind, getattr(counts, kind) + 1)

    def reject(self, rejection: Rejection) -> None:
        """Record a rejection and count it under its logsource."""
        self.rejections.append(rejection)
        self.count(rejection.logsource or "?", "rejected")

    @property
    def loaded(self) -> int:
        """Rules compiled for fed logsources."""
        return sum(c.loaded for c in self.per_logsource.values())

    @property
    def inert(self) -> int:
        """Rules compiled for logsources nothing feeds."""
        return sum(c.inert for c in self.per_logsource.values())

    @property
    def rejected(self) -> int:
        """Rules or files that failed."""
        return len(self.rejections)

    def compile_failures(self) -> list[Rejection]:
        """Rejections of rules pySigma parsed but this engine could not compile."""
        return [r for r in self.rejections if r.stage in ("compile", "correlation")]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the whole report."""
        return {
            "files": self.files,
            "loaded": self.loaded,
            "inert": self.inert,
            "rejected": self.rejected,
            "correlations": self.correlations,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "logsources": {
                name: attrs.asdict(counts)
                for name, counts in sorted(self.per_logsource.items())
            },
            "rejections": [attrs.asdict(r) for r in self.rejections],
            "warnings": self.warnings,
        }

    def to_text(self, *, max_reasons: int = 200) -> str:
        """A table per logsource, then totals, rejections and warnings."""
        rows = sorted(self.per_logsource.items())
        width = max([len("logsource (product/category/service)"), *(len(n) for n, _ in rows)])
        lines = [f"{'logsource (product/category/service)':<{width}}  {'loaded':>7} {'inert':>7} "
                 f"{'rejected':>8}"]
        lines.append("-" * len(lines[0]))
        for name, c in rows:
            lines.append(f"{name:<{width}}  {c.loaded:>7} {c.inert:>7} {c.rejected:>8}")
        lines.append("-" * len(lines[0]))
        lines.append(f"{'total':<{width}}  {self.loaded:>7} {self.inert:>7} {self.rejected:>8}")
        lines.append(f"files: {self.files}, correlations: {self.correlations}, "
                     f"compile failures: {len(self.compile_failures())}"
                     + (", from cache" if self.cached else ""))
        if self.rejections:
            lines.append("")
            lines.append("rejected:")
            for r in self.rejections[:max_reasons]:
                who = " ".join(x for x in (r.title and f"'{r.title}'", r.rule_id and f"({r.rule_id})")
                               if x)
                lines.append(f"  [{r.stage}] {r.path}{': ' + who if who else ''}: {r.reason}")
            if len(self.rejections) > max_reasons:
                lines.append(f"  ... and {len(self.rejections) - max_reasons} more")
        if self.warnings:
            lines.append("")
            lines.append("warnings:")
            for w in self.warnings[:max_reasons]:
                lines.append(f"  {w['path']}: '{w['title']}': {w['warning']}")
            if len(self.warnings) > max_reasons:
                lines.append(f"  ... and {len(self.warnings) - max_reasons} more")
        return "\n".join(lines)
