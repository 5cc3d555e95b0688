"""Per-rule cost accounting: the sampling arithmetic, the budget, and the engine's use of it on real rules."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from edr.detect.sigma import load_sigma
from edr.detect.sigma.costs import MIN_SAMPLES, WARN_EVERY_SECS, RuleCosts
from tests.detect.sigma.conftest import make_event, rule


def names(number: int) -> tuple[str, str]:
    return f"id-{number}", f"rule {number}"


def test_estimates_scale_the_samples_by_the_period() -> None:
    costs = RuleCosts(3, names, every=10)
    costs.add([(0, 1_000), (2, 5_000)])
    costs.add([(0, 3_000)])
    costs.matches[1] += 7
    zero, one, two = costs.cost(0), costs.cost(1), costs.cost(2)
    assert zero.cpu_seconds == pytest.approx(4_000 * 10 / 1e9)
    assert zero.evaluations == 20 and zero.sampled == 2 and zero.mean_us == pytest.approx(2.0)
    assert one.cpu_seconds == 0 and one.matches == 7 and one.mean_us == 0.0
    assert two.evaluations == 10 and two.mean_us == pytest.approx(5.0)
    assert costs.sampled_events == 2
    # costliest first; a rule only matched (never sampled) still shows, after those that cost
    assert [c.number for c in costs.top(5)] == [2, 0, 1]
    assert [c.number for c in costs.top(1)] == [2]


def test_over_budget_needs_enough_samples_is_reported_once_and_warned_at_most_every_period() -> None:
    costs = RuleCosts(2, names, every=1, budget_ns=1_000)
    newly: list[int] = []
    for _ in range(MIN_SAMPLES - 1):
        newly += costs.add([(0, 5_000), (1, 10)])
    assert newly == []  # too few samples for a verdict, however slow
    assert costs.add([(0, 5_000), (1, 10)]) == [0]
    assert costs.add([(0, 5_000), (1, 10)]) == []  # reported once
    assert costs.over_budget() == [0]
    assert [c.title for c in costs.due_warnings(100.0)] == ["rule 0"]
    assert costs.due_warnings(100.0 + WARN_EVERY_SECS - 1) == []
    assert [c.number for c in costs.due_warnings(100.0 + WARN_EVERY_SECS)] == [0]
    assert costs.statistics()["over_budget"] == ["rule 0"]
    assert costs.cost(0).over_budget and not costs.cost(1).over_budget


def test_no_budget_reports_nothing() -> None:
    costs = RuleCosts(1, names, every=1, budget_ns=0)
    for _ in range(100):
        assert costs.add([(0, 10**9)]) == []
    assert costs.over_budget() == []


def test_a_period_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="every"):
        RuleCosts(1, names, every=0)


def _engine(tmp_path: Path):
    docs = [
        rule("""
            sel:
                Image|endswith: '\\whoami.exe'
            condition: sel
        """, title="Whoami", rule_id="11111111-1111-1111-1111-111111111111"),
        rule("""
            sel:
                CommandLine|contains: 'whoami'
            condition: sel
        """, title="Whoami cmdline", rule_id="22222222-2222-2222-2222-222222222222"),
        rule("""
            sel:
                CommandLine|re: '.*(a|b)+.*x'
            condition: sel
        """, title="Regex", rule_id="33333333-3333-3333-3333-333333333333"),
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (tmp_path / f"r{i}.yml").write_text(textwrap.dedent(doc))
    engine, report = load_sigma([str(tmp_path)])
    assert report.loaded == 3
    return engine


EVENTS = [
    {"Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami /all"},
    {"Image": "C:\\Windows\\cmd.exe", "CommandLine": "cmd /c whoami"},
    {"Image": "C:\\Windows\\notepad.exe", "CommandLine": "notepad abab x"},
    {"Image": "C:\\Windows\\notepad.exe", "CommandLine": "notepad"},
]


@pytest.mark.parametrize("every", [1, 3, 64])
def test_sampling_changes_no_alert_and_counts_matches_exactly(tmp_path: Path, every: int) -> None:
    reference = _engine(tmp_path / "ref")
    engine = _engine(tmp_path / "sampled")
    engine.configure_costs(every, 0)
    with_candidates = 0
    for i in range(60):
        fields = EVENTS[i % len(EVENTS)]
        before = reference.candidates
        want = [(a.rule_id, a.rule_name) for a in reference.match(make_event(dict(fields)))]
        got = [(a.rule_id, a.rule_name) for a in engine.match(make_event(dict(fields)))]
        assert got == want
        with_candidates += reference.candidates > before
    by_title = {c.title: c for c in engine.costs.top(10)}
    assert by_title["Whoami"].matches == 15
    assert by_title["Whoami cmdline"].matches == 30
    assert by_title["Regex"].matches == 15
    assert sum(c.matches for c in by_title.values()) == engine.matches
    # of the events with candidate rules (the last of EVENTS has none), one in `every` is timed
    assert with_candidates == 45
    assert engine.costs.sampled_events == with_candidates // every
    if every == 1:
        # every evaluation timed: the estimate is the count of evaluations itself
        assert sum(c.evaluations for c in by_title.values()) == engine.candidates
        assert all(c.cpu_seconds > 0 for c in by_title.values())
    assert engine.statistics()["categories"] == {"process_creation": 60}


def test_a_rule_over_budget_is_logged_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = _engine(tmp_path)
    # a budget no real evaluation can meet (1 ns): every rule sampled MIN_SAMPLES times goes over it
    engine.configure_costs(1, 0.001)
    with caplog.at_level(logging.WARNING, logger="edr.detect.sigma"):
        for _ in range(MIN_SAMPLES):
            engine.match(make_event(dict(EVENTS[0])))
    warned = [r.getMessage() for r in caplog.records if "metrics.rule_budget_us" in r.getMessage()]
    assert any("'Whoami'" in m and "11111111-1111-1111-1111-111111111111" in m for m in warned), warned
    assert "Whoami" in engine.statistics()["rule_costs"]["over_budget"]
