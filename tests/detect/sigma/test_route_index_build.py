"""Building route indexes: set-wide clause numbers, per-field automata shared between routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edr.detect.sigma import SigmaEngine, load_sigma
from edr.detect.sigma.index import RouteIndex
from edr.detect.sigma.matchers import MatchContext
from edr.detect.sigma.ruleset import RuleSet
from edr.sources.replay.winlog import iter_winlog_events
from tests.detect.sigma.conftest import shared_path

SYSMON = ("windows", "process_creation", "sysmon")
SECURITY = ("windows", "process_creation", "security")


@pytest.fixture(scope="module")
def sigmahq(tmp_path_factory: pytest.TempPathFactory) -> SigmaEngine:
    rules = shared_path("sigma", "rules")
    engine, _report = load_sigma([str(rules)], cache_dir=str(tmp_path_factory.mktemp("cache")))
    return engine


def alone(ruleset: RuleSet, route: tuple[str, str, str]) -> RouteIndex:
    """The route's index built on its own: clauses numbered in the route, no automaton shared."""
    built = ruleset.route_index(route)
    return RouteIndex((number, ruleset.rules[number].clauses) for number in built.rules)


def test_process_creation_through_sysmon_and_security_share_their_large_automata(sigmahq: SigmaEngine) -> None:
    ruleset = sigmahq.ruleset
    sysmon, security = ruleset.route_index(SYSMON), ruleset.route_index(SECURITY)
    for field in ("CommandLine", "Image", "ParentImage"):
        assert sysmon.substr[field] is security.substr[field], field
    # each route has rules of its own (service: security, service: sysmon): not one index twice
    assert set(security.rules) - set(sysmon.rules) and set(sysmon.rules) - set(security.rules)
    # a field only one route's rules read keeps an automaton of its own there
    assert set(security.substr) - set(sysmon.substr)


def test_shared_and_set_numbered_indexes_select_what_indexes_built_alone_select(sigmahq: SigmaEngine) -> None:
    """On every attack-sample event, the same candidates as an index built for its route alone."""
    ruleset = sigmahq.ruleset
    alone_indexes: dict[tuple[str | None, str | None, str | None], RouteIndex] = {}
    events = with_candidates = 0
    for path in sorted(shared_path("evtx-attack-samples").rglob("*.evtx")):
        for event in iter_winlog_events(Path(path)):
            route = (event.product, event.category, event.service)
            index = ruleset.route_index(route)
            reference = alone_indexes.get(route)
            if reference is None:
                reference = alone_indexes[route] = alone(ruleset, route)  # type: ignore[arg-type]
                assert reference.rules == index.rules and reference.always == index.always
            candidates = index.candidates(MatchContext(event.fields))
            assert candidates == reference.candidates(MatchContext(event.fields)), (path.name, route)
            events += 1
            with_candidates += bool(candidates)
    assert events > 8000 and with_candidates > 1000
    assert SYSMON in alone_indexes and SECURITY in alone_indexes
