"""The doctor's report: one verdict per check, rendered for people and for machines (sans-IO).

A :class:`Check` is one thing the doctor looked at (the kernel, a
capability, a configured directory...) with its :class:`Verdict`: ``pass``,
``warn`` (the agent runs, but less well than it could: some rules refused,
a capability that active response needs missing) or ``fail`` (the agent
cannot start, or something it is configured to do will not happen). A
check that does not pass says why (``reason``) and what to do (``fix``).

:class:`Report` holds the checks in sections, plus the rule verdicts
(:class:`~edr.doctor.rule_verdicts.RuleSummary`), and gives the exit code:
0 when every check passes, 1 when any warns, 2 when any fails.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from edr.doctor.rule_verdicts import RuleSummary

EXIT_PASS: Final = 0
EXIT_WARN: Final = 1
EXIT_FAIL: Final = 2


class Verdict(enum.Enum):
    """A check's outcome, in order of gravity."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        """0, 1, 2: also the exit code of a report whose worst check this is."""
        return _RANK[self]


_RANK: Final = {Verdict.PASS: EXIT_PASS, Verdict.WARN: EXIT_WARN, Verdict.FAIL: EXIT_FAIL}

#: Sections in report order, with their headings.
SECTIONS: Final = {
    "host": "Host",
    "capabilities": "Capabilities",
    "configuration": "Configuration",
    "paths": "Paths",
    "rules": "Rules",
    "service": "Service",
}


@attrs.frozen
class Check:
    """One check: ``id`` is stable for machines (``host.tracefs``, ``paths.alerts.directory``...),
    ``title`` short for people, ``found`` what was found; ``reason`` and ``fix`` say, when the
    verdict is not pass, what is wrong and what to do about it."""

    id: str
    section: str
    title: str
    verdict: Verdict
    found: str
    reason: str = ""
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        """For ``--json``."""
        return {"id": self.id, "section": self.section, "title": self.title, "verdict": self.verdict.value,
                "found": self.found, "reason": self.reason, "fix": self.fix}

    def line(self) -> str:
        """One line for a terminal (two more when there is a reason and a fix)."""
        text = f"  [{self.verdict.value.upper():<4}] {self.title}: {self.found}"
        if self.verdict is not Verdict.PASS:
            if self.reason:
                text += f"\n         why: {self.reason}"
            if self.fix:
                text += f"\n         fix: {self.fix}"
        return text


@attrs.define
class Report:
    """Every check the doctor made, and the rule verdicts when rules were looked at."""

    platform: str
    checks: list[Check] = attrs.field(factory=list)
    rules: RuleSummary | None = None
    #: what the doctor was told and how it ran (configuration file, user, dry run...)
    context: dict[str, Any] = attrs.field(factory=dict)
    #: warnings the checked code logged while the doctor ran it
    messages: list[str] = attrs.field(factory=list)

    def add(self, check: Check) -> None:
        """Append one check."""
        self.checks.append(check)

    def extend(self, checks: list[Check]) -> None:
        """Append several checks."""
        self.checks.extend(checks)

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of any check (pass when there are none)."""
        return max((c.verdict for c in self.checks), key=lambda v: v.rank, default=Verdict.PASS)

    @property
    def exit_code(self) -> int:
        """0 every check passed, 1 any warned, 2 any failed."""
        return self.verdict.rank

    def totals(self) -> dict[str, int]:
        """Checks per verdict."""
        out = {v.value: 0 for v in Verdict}
        for check in self.checks:
            out[check.verdict.value] += 1
        return out

    def failing(self) -> list[Check]:
        """The checks that did not pass, worst first."""
        return sorted((c for c in self.checks if c.verdict is not Verdict.PASS), key=lambda c: -c.verdict.rank)

    def to_json(self) -> dict[str, Any]:
        """The whole report as a JSON-able dict."""
        return {
            "platform": self.platform,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "totals": self.totals(),
            "context": dict(self.context),
            "checks": [c.to_json() for c in self.checks],
            "rules": self.rules.to_json() if self.rules is not None else None,
            "messages": list(self.messages),
        }

    def to_text(self) -> str:
        """Sections of one line per check, the rule verdicts, then the totals."""
        lines = [f"edr doctor ({self.platform}): "
                 + ", ".join(f"{k}={v}" for k, v in self.context.items() if v not in (None, ""))]
        for section, heading in SECTIONS.items():
            checks = [c for c in self.checks if c.section == section]
            if not checks:
                continue
            lines.append("")
            lines.append(heading)
            lines.extend(c.line() for c in checks)
        if self.rules is not None:
            lines.append("")
            lines.append(f"Rule verdicts on this platform ({self.rules.profile.sensor} sensor, "
                         f"{self.rules.profile.platform})")
            lines.extend(self.rules.to_text())
        if self.messages:
            lines.append("")
            lines.append("Logged while checking")
            lines.extend(f"  {m}" for m in self.messages)
        totals = self.totals()
        lines.append("")
        lines.append(f"{len(self.checks)} checks: {totals['pass']} pass, {totals['warn']} warn, "
                     f"{totals['fail']} fail; verdict {self.verdict.value} (exit {self.exit_code})")
        return "\n".join(lines)
