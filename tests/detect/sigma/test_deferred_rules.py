"""A start from the rule cache: condition trees built when their rule is first a candidate, and no pySigma."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edr.detect.sigma import SigmaEngine, load_sigma
from edr.detect.sigma.logsources import ALL_FED
from edr.detect.sigma.nodes import FieldItem
from edr.detect.sigma.report import LoadReport
from edr.detect.sigma.rules import CompiledRule, RuleMeta
from edr.detect.sigma.ruleset import RuleSet
from tests.detect.sigma.conftest import fired, make_event, rule
from tests.detect.sigma.test_rule_cache import write_rules

REPO = Path(__file__).resolve().parents[3]


def _pending(compiled: CompiledRule) -> bool:
    return compiled._pending is not None


def test_conditions_from_the_cache_are_built_when_first_needed(tmp_path: Path) -> None:
    paths = [write_rules(tmp_path / "rules", {
        "proc.yml": rule("sel:\n  Image|endswith: '\\evil.exe'\ncondition: sel", title="Proc"),
        "net.yml": rule("sel:\n  DestinationPort: 4444\ncondition: sel", title="Net", category="network_connection"),
    })]
    cache = str(tmp_path / "cache")
    compiled, _report = load_sigma(paths, cache_dir=cache)
    assert not any(map(_pending, compiled.rules))  # compiled from source: built
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.cached and all(map(_pending, engine.rules))
    assert fired(engine, {"Image": "C:\\x\\evil.exe"}) == ["Proc"]
    assert [_pending(r) for r in engine.rules] == [True, False]  # net.yml sorts first; its route saw nothing
    assert isinstance(engine.rules[1].condition.child, FieldItem)
    assert fired(engine, {"DestinationPort": 4444}, category="network_connection") == ["Net"]
    assert not any(map(_pending, engine.rules))


def test_only_the_rules_an_event_may_match_have_their_trees_built(tmp_path: Path) -> None:
    # three rules of one route: building the index of the route builds none of them, an event builds
    # the trees of its candidates only (SigmaHQ: 430 of the 2,287 rules of the attack samples' routes)
    paths = [write_rules(tmp_path / "rules", {
        f"{name}.yml": rule(f"sel:\n  Image|endswith: '\\{name}.exe'\ncondition: sel", title=name.title())
        for name in ("evil", "other", "third")})]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.cached and [r.meta.title for r in engine.rules] == ["Evil", "Other", "Third"]
    assert fired(engine, {"Image": "C:\\x\\evil.exe"}) == ["Evil"]
    assert [_pending(r) for r in engine.rules] == [False, True, True]
    assert fired(engine, {"Image": "C:\\x\\third.exe"}) == ["Third"]
    assert [_pending(r) for r in engine.rules] == [False, True, False]


def test_a_condition_that_cannot_be_built_leaves_only_its_rule_out(caplog: pytest.LogCaptureFixture) -> None:
    def refused() -> FieldItem:
        raise ValueError("a pattern RE2 refuses")

    def meta(title: str) -> RuleMeta:
        return RuleMeta(rule_id=title, title=title, name=None, level="high", tags=(), description="",
                        path=f"/rules/{title}.yml", logsource=("windows", "process_creation", None), ecs={})

    from edr.detect.sigma.matchers import StrGroup

    good = StrGroup(False)
    good.exact = frozenset({"x"})
    rules = [CompiledRule.deferred(number=0, meta=meta("Broken"), condition=refused, clauses=None,
                                   fields=frozenset({"A"}), keywords=False),
             CompiledRule.deferred(number=1, meta=meta("Fine"), condition=lambda: FieldItem("A", (good,), False),
                                   clauses=None, fields=frozenset({"A"}), keywords=False)]
    engine = SigmaEngine(RuleSet(rules, [], LoadReport(), frozenset(ALL_FED)))
    with caplog.at_level(logging.ERROR):
        assert [a.rule_name for a in engine.match(make_event({"A": "x"}))] == ["Fine"]
    assert "'Broken' (/rules/Broken.yml) from the rule cache cannot be built" in caplog.text
    assert "ValueError: a pattern RE2 refuses" in caplog.text
    assert engine.errors == 0
    caplog.clear()
    assert [a.rule_name for a in engine.match(make_event({"A": "x"}))] == ["Fine"]
    assert "cannot be built" not in caplog.text  # logged once: never built again
    assert engine.errors == 0


def test_a_start_from_the_cache_imports_neither_pysigma_nor_yaml(tmp_path: Path) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="R")})]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    script = textwrap.dedent(f"""
        import sys
        from edr.detect.sigma import load_sigma
        engine, report = load_sigma({paths!r}, cache_dir={cache!r})
        assert report.cached, report
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sigma", "yaml", "pyparsing"))
        print(loaded)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
