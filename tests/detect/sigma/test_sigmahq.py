"""The whole SigmaHQ rule set and SigmaHQ's regression samples (../shared)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from edr.detect.sigma import SigmaEngine, load_sigma, rules_check
from edr.detect.sigma.matchers import MatchContext
from edr.event import Event
from edr.sources.replay.winlog import iter_evtx, iter_evtx_json, iter_winlog_events, winlog_to_event
from tests.detect.sigma.conftest import shared_path

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="session")
def sigmahq_engine(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> SigmaEngine:
    """All of ../shared/sigma, through the persistent compiled-rule cache (a session's own with -p no:cacheprovider)."""
    rules = shared_path("sigma")
    cache = getattr(pytestconfig, "cache", None)
    cache_dir = cache.mkdir("edr-sigma-cache") if cache is not None else tmp_path_factory.mktemp("edr-sigma-cache")
    engine, report = load_sigma([str(rules)], cache_dir=str(cache_dir))
    assert report.loaded > 2500
    return engine


def test_rules_check_compiles_everything_pysigma_parses() -> None:
    rules = shared_path("sigma")
    text, doc, code = rules_check([str(rules)])
    assert doc["compile_failures"] == 0, [r for r in doc["rejections"] if r["stage"] == "compile"]
    # the only file pySigma itself rejects is the logsource mapping, which is not a rule
    parse_rejected = {Path(r["path"]).name for r in doc["rejections"]}
    assert parse_rejected <= {"logsource-mapping-thor.yml"}, parse_rejected
    assert doc["loaded"] + doc["inert"] >= 3700
    assert code == 0
    assert "process_creation" in text and "total" in text
    _text, _doc, strict_code = rules_check([str(rules)], strict=True)
    assert strict_code == 1  # the mapping file is a rejection


def _regression_cases() -> list[tuple[str, Path, int]]:
    root = shared_path("sigma-regression")
    cases: list[tuple[str, Path, int]] = []
    for info in sorted(root.rglob("info.yml")):
        data = yaml.safe_load(info.read_text())
        rule_id = data["rule_metadata"][0]["id"]
        for test in data.get("regression_tests_info") or []:
            if test.get("type") == "evtx":
                cases.append((rule_id, root / test["path"], int(test.get("match_count") or 1)))
    return cases


def test_regression_samples_fire(sigmahq_engine: SigmaEngine) -> None:
    cases = _regression_cases()
    assert len(cases) >= 50
    failures = []
    for rule_id, evtx_path, want in cases:
        counts: Counter[str] = Counter()
        for event in iter_winlog_events(evtx_path):
            counts.update(a.rule_id for a in sigmahq_engine.match(event))
        if counts[rule_id] < want:
            failures.append((evtx_path.parent.name, rule_id, counts[rule_id], want))
    assert failures == [], f"{len(failures)}/{len(cases)} regression samples failed: {failures}"


def _trimmed(fields: dict[str, object]) -> dict[str, object]:
    return {k: v.rstrip() if isinstance(v, str) else v for k, v in fields.items()}


def test_json_dump_reader_matches_evtx_reader() -> None:
    root = shared_path("sigma-regression")
    compared = 0
    for json_path in sorted(root.rglob("*.json"))[:20]:
        evtx_path = json_path.with_suffix(".evtx")
        if not evtx_path.exists():
            continue
        from_json = [winlog_to_event(r, "x") for r in iter_evtx_json(json_path)]
        from_evtx = [winlog_to_event(r, "x") for r in iter_evtx(evtx_path)]
        # the dumps were made by an evtx_dump that trims trailing blanks off values
        assert [_trimmed(e.fields) if e else None for e in from_json] == \
            [_trimmed(e.fields) if e else None for e in from_evtx]
        assert [(e.category, e.service, e.timestamp) for e in from_json if e] == \
            [(e.category, e.service, e.timestamp) for e in from_evtx if e]
        compared += len(from_json)
    assert compared > 0


def test_attack_samples_replay_without_errors(sigmahq_engine: SigmaEngine) -> None:
    root = shared_path("evtx-attack-samples")
    files = sorted(root.rglob("*.evtx"))[:40]
    events = 0
    for path in files:
        for event in iter_winlog_events(path):
            events += 1
            sigmahq_engine.match(event)
    assert events > 500
    assert sigmahq_engine.statistics()["errors"] == 0


def test_literal_index_never_hides_a_matching_rule(sigmahq_engine: SigmaEngine) -> None:
    # The index only narrows which rules are evaluated. Evaluating every rule of each
    # event's route, on every attack-sample and regression-sample event, must find no
    # match among the rules the index left out (its clauses, anchors and cost model).
    files = sorted(shared_path("evtx-attack-samples").rglob("*.evtx"))
    files += sorted(shared_path("sigma-regression").rglob("*.evtx"))
    rules = sigmahq_engine.rules
    events = evaluated = 0
    hidden: list[tuple[str, str]] = []
    for path in files:
        for event in iter_winlog_events(path):
            events += 1
            index = sigmahq_engine.ruleset.route_index((event.product, event.category, event.service))
            ctx = MatchContext(event.fields)
            candidates = index.candidates(ctx)
            for number in index.rules:
                if number in candidates:
                    continue
                evaluated += 1
                if rules[number].condition.ev(ctx):
                    hidden.append((rules[number].meta.title, path.name))
    assert events > 8000 and evaluated > 1_000_000
    assert not hidden, hidden[:20]


def _linux_events(engine: SigmaEngine, rng: random.Random) -> list[Event]:
    """Live-shaped Linux events (str, int and bool values) built from the literals of the rules of each route.

    Each rule's needs go into an event's fields with text around them and the case changed, so
    that many rules are candidates and many match; ints and bools sit next to them as the
    sensor gives them.
    """
    events: list[Event] = []
    for category in ("process_creation", "process_termination", "process_fork", "file_event", "file_delete",
                     "file_rename", "file_change", "network_connection", "dns_query"):
        index = engine.ruleset.route_index(("linux", category, None))
        for number in index.rules:
            for clause in (engine.rules[number].clauses or ()) * 3:
                fields: dict[str, Any] = {"ProcessId": rng.randrange(1, 1 << 22), "Uid": 0,
                                          "ArgvTruncated": rng.random() < 0.5, "User": "root"}
                for field, kind, text in sorted(clause)[: rng.randrange(1, 4)]:
                    name = "CommandLine" if field == "*" else field
                    shaped = text.upper() if rng.random() < 0.3 else text
                    if kind == "sub":
                        shaped = rng.choice(["", "/usr/bin/", "x ", "-"]) + shaped + rng.choice(["", " -a", "/"])
                    fields[name] = int(shaped) if shaped.isdigit() and rng.random() < 0.5 else shaped
                events.append(Event(category=category, product="linux", fields=fields))
    return events


def test_literal_index_never_hides_a_matching_rule_on_linux_events(sigmahq_engine: SigmaEngine) -> None:
    # Live Linux events take the index's inline path (one str or int per field): evaluating
    # every rule of the route must find no match among the rules it left out.
    rules = sigmahq_engine.rules
    events = _linux_events(sigmahq_engine, random.Random(7))
    matched = 0
    hidden: list[tuple[str, dict[str, Any]]] = []
    for event in events:
        index = sigmahq_engine.ruleset.route_index((event.product, event.category, event.service))
        candidates = index.candidates(MatchContext(event.fields))
        for number in index.rules:
            if rules[number].condition.ev(MatchContext(event.fields)):
                matched += 1
                if number not in candidates:
                    hidden.append((rules[number].meta.title, event.fields))
    assert len(events) > 1500 and matched > 200, (len(events), matched)
    assert not hidden, hidden[:10]
