"""Sigma detection: load SigmaHQ-style rules with pySigma, compile, index, correlate.

Public API::

    from edr.detect.sigma import SigmaEngine, LoadReport, load_sigma, rules_check
    from edr.detect.sigma.logsources import ALL_FED, WINDOWS_EVENTLOG_FED, LINUX_EBPF_FED

    engine, report = load_sigma(paths, placeholders=None, cache_dir=None, match_mode="all",
                                match_debug="off", max_groups=10000, max_bytes=64 << 20, fed=None)
    alerts = engine.match(event)            # list[edr.detect.alert.Alert]
    engine.statistics(); engine.fields_read("process_creation")

    text, doc, exit_code = rules_check(paths, placeholders=None, strict=False)

``rules_check`` backs ``edr rules check [PATH...] [--strict] [--json]``: it
loads every rule (no cache) and returns the per-logsource table as text, the
same report as a JSON-able dict, and the exit code: 0 when every rule loaded
(or was only inert), 1 when ``strict`` and any rule or file was rejected,
2 when no rule file was found at all.

Modules: ``loader`` (pySigma parsing), ``compiler`` (parsed objects ->
matchers), ``matchers`` and ``nodes`` (what runs per event), ``literals`` and
``index`` (candidate selection), ``logsources`` (routing, fed sets),
``ruleset`` (building), ``cache``, ``correlation``, ``report``, ``engine``.
"""

from __future__ import annotations

from typing import Any

from edr.detect.sigma.engine import SigmaEngine, load_sigma
from edr.detect.sigma.logsources import ALL_FED, Route
from edr.detect.sigma.report import LoadReport

__all__ = ["LoadReport", "SigmaEngine", "load_sigma", "rules_check"]


def rules_check(
    paths: list[str],
    placeholders: dict[str, list[str]] | None = None,
    strict: bool = False,
    fed: frozenset[Route] | None = None,
    progress: Any = None,
) -> tuple[str, dict[str, Any], int]:
    """Load ``paths`` and report: (text table, JSON dict, exit code); see module doc.

    ``progress`` hears how many rule files are compiled (see
    :func:`~edr.detect.sigma.ruleset.build_ruleset`; ``"terminal"``: a bar
    on standard error if it is a terminal).
    """
    from edr.detect.sigma.ruleset import build_ruleset

    ruleset = build_ruleset(list(paths), placeholders=placeholders,
                            fed=ALL_FED if fed is None else fed, progress=progress)
    report = ruleset.report
    doc = report.to_json()
    doc["compile_failures"] = len(report.compile_failures())
    code = 0
    if report.files == 0:
        code = 2
    elif strict and report.rejected:
        code = 1
    doc["exit_code"] = code
    return report.to_text(), doc, code
