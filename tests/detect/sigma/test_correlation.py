"""Sigma correlations: all eight types, out-of-order events, window expiry, bounded state."""

from __future__ import annotations

import ctypes
import gc
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from edr.detect.sigma import SigmaEngine
from edr.detect.sigma import correlation as correlation_module
from tests.detect.sigma.conftest import RuleLoader, make_event

BASE = """
title: Base {name}
name: {name}
status: test
level: low
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Kind: '{name}'
    condition: sel
"""


def base(name: str) -> str:
    return BASE.format(name=name)


def correlation(kind: str, rules: list[str], condition: str, *, group_by: str = "User",
                timespan: str = "1m", extra: str = "") -> str:
    rule_lines = "\n".join(f"        - {r}" for r in rules)
    return f"""
title: Corr {kind}
status: test
level: critical
correlation:
    type: {kind}
    rules:
{rule_lines}
    group-by:
        - {group_by}
    timespan: {timespan}
{condition}
{extra}
"""


def feed(engine: SigmaEngine, events: list[tuple[float, dict[str, Any]]]) -> list[str]:
    """Correlation alert titles raised while feeding (time, fields) events in order."""
    titles: list[str] = []
    for ts, fields in events:
        alerts = engine.match(make_event(fields, timestamp=ts))
        titles += [a.rule_name for a in alerts if "edr.correlation.type" in a.ecs]
    return titles


COUNT3 = "    condition:\n        gte: 3"


def test_event_count_in_order_and_group_by(load_rules: RuleLoader) -> None:
    engine, report = load_rules(base("login"), correlation("event_count", ["login"], COUNT3))
    assert report.rejected == 0, report.rejections
    ev = {"Kind": "login", "User": "alice"}
    other = {"Kind": "login", "User": "bob"}
    assert feed(engine, [(0, ev), (10, other), (20, ev), (30, other)]) == []
    titles = feed(engine, [(40, ev)])
    assert titles == ["Corr event_count"]
    alert = [a for a in engine.match(make_event(ev, timestamp=41))]
    assert all("edr.correlation.type" not in a.ecs for a in alert)  # group was reset after firing


def test_event_count_alert_fields(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], COUNT3))
    ev = {"Kind": "login", "User": "alice"}
    feed(engine, [(0, ev), (1, ev)])
    alerts = engine.match(make_event(ev, timestamp=2))
    corr = next(a for a in alerts if "edr.correlation.type" in a.ecs)
    assert corr.ecs["edr.correlation.type"] == "event_count"
    assert corr.ecs["edr.correlation.rules"] == ["login"]
    assert corr.ecs["edr.correlation.group.User"] == "alice"
    assert corr.severity == "critical" and corr.engine == "sigma"


def test_event_count_out_of_order(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], COUNT3))
    ev = {"Kind": "login", "User": "alice"}
    # arrival order 100, 50, 80: all within 60 s of each other by event time
    assert feed(engine, [(100, ev), (50, ev), (80, ev)]) == ["Corr event_count"]


def test_event_count_window_expiry(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], COUNT3))
    ev = {"Kind": "login", "User": "alice"}
    assert feed(engine, [(0, ev), (50, ev), (115, ev), (180, ev)]) == []
    # two more inside the last window make three
    assert feed(engine, [(181, ev), (182, ev)]) == ["Corr event_count"]


def test_event_count_weights_aggregated_events(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(base("conn"), correlation("event_count", ["conn"], COUNT3))
    alerts = engine.match(make_event({"Kind": "conn", "User": "a"}, timestamp=1, count=3))
    assert [a.rule_name for a in alerts if "edr.correlation.type" in a.ecs] == ["Corr event_count"]


def test_value_count(load_rules: RuleLoader) -> None:
    cond = "    condition:\n        gte: 3\n        field: Target"
    engine, report = load_rules(base("probe"), correlation("value_count", ["probe"], cond))
    assert report.rejected == 0, report.rejections
    events = [(0, {"Kind": "probe", "User": "u", "Target": t}) for t in ("a", "a", "b", "b")]
    assert feed(engine, events) == []
    # a and b are more than a minute older: they no longer count
    assert feed(engine, [(100, {"Kind": "probe", "User": "u", "Target": "c"})]) == []
    assert feed(engine, [(101, {"Kind": "probe", "User": "u", "Target": "d"})]) == []
    assert feed(engine, [(102, {"Kind": "probe", "User": "u", "Target": "e"})]) == ["Corr value_count"]


def test_temporal_out_of_order_and_expiry(load_rules: RuleLoader) -> None:
    engine, report = load_rules(base("a"), base("b"),
                                correlation("temporal", ["a", "b"], "", timespan="30s"))
    assert report.rejected == 0, report.rejections
    # b arrives first with a later time, then a: still within 30 s
    assert feed(engine, [(20, {"Kind": "b", "User": "x"}), (5, {"Kind": "a", "User": "x"})]) \
        == ["Corr temporal"]
    # too far apart
    assert feed(engine, [(100, {"Kind": "a", "User": "y"}), (200, {"Kind": "b", "User": "y"})]) == []
    # different groups never combine
    assert feed(engine, [(300, {"Kind": "a", "User": "p"}), (301, {"Kind": "b", "User": "q"})]) == []


def test_temporal_extended_condition(load_rules: RuleLoader) -> None:
    corr = correlation("temporal", ["a", "b", "c"], "    condition: a and (b or c)", timespan="30s")
    engine, report = load_rules(base("a"), base("b"), base("c"), corr)
    assert report.rejected == 0, report.rejections
    assert feed(engine, [(0, {"Kind": "a", "User": "x"})]) == []
    assert feed(engine, [(1, {"Kind": "c", "User": "x"})]) == ["Corr temporal"]


def test_temporal_ordered(load_rules: RuleLoader) -> None:
    engine, report = load_rules(base("first"), base("second"),
                                correlation("temporal_ordered", ["first", "second"], "",
                                            timespan="1m"))
    assert report.rejected == 0, report.rejections
    assert feed(engine, [(0, {"Kind": "second", "User": "x"}), (5, {"Kind": "first", "User": "x"})]) == []
    assert feed(engine, [(10, {"Kind": "second", "User": "x"})]) == ["Corr temporal_ordered"]
    # out of order arrival: "second" (t=50) is delivered before "first" (t=40)
    assert feed(engine, [(50, {"Kind": "second", "User": "z"}), (40, {"Kind": "first", "User": "z"})]) \
        == ["Corr temporal_ordered"]
    # in order but too far apart
    assert feed(engine, [(100, {"Kind": "first", "User": "w"}), (200, {"Kind": "second", "User": "w"})]) \
        == []


def _values(kind: str, cond: str, load_rules: RuleLoader, values: list[float]) -> list[str]:
    engine, report = load_rules(base("xfer"), correlation(kind, ["xfer"], cond))
    assert report.rejected == 0, report.rejections
    return feed(engine, [(i, {"Kind": "xfer", "User": "u", "Bytes": v}) for i, v in enumerate(values)])


def test_value_sum(load_rules: RuleLoader) -> None:
    cond = "    condition:\n        gt: 1000\n        field: Bytes"
    assert _values("value_sum", cond, load_rules, [400, 400]) == []
    assert _values("value_sum", cond, load_rules, [400, 400, "300"]) == ["Corr value_sum"]


def test_value_avg(load_rules: RuleLoader) -> None:
    cond = "    condition:\n        gte: 100\n        field: Bytes"
    assert _values("value_avg", cond, load_rules, [10, 20]) == []
    assert _values("value_avg", cond, load_rules, [50, 250]) == ["Corr value_avg"]


def test_value_median(load_rules: RuleLoader) -> None:
    cond = "    condition:\n        gte: 100\n        field: Bytes"
    assert _values("value_median", cond, load_rules, [1, 2, 1000]) == []
    assert _values("value_median", cond, load_rules, [1, 1000]) == ["Corr value_median"]


def test_value_percentile(load_rules: RuleLoader) -> None:
    cond = "    condition:\n        gte: 500\n        field: Bytes\n        percentile: 90"
    assert _values("value_percentile", cond, load_rules, [1, 2, 3, 4]) == []
    assert _values("value_percentile", cond, load_rules, [1, 2, 3, 4, 5, 6, 7, 8, 9, 5000]) \
        == ["Corr value_percentile"]


def test_aliases_group_different_fields(load_rules: RuleLoader) -> None:
    corr = correlation("temporal", ["a", "b"], "", group_by="host", extra="""    aliases:
        host:
            a: SourceHost
            b: DestHost
""")
    corr = corr.replace("\n\n    aliases", "\n    aliases")
    engine, report = load_rules(base("a"), base("b"), corr)
    assert report.rejected == 0, report.rejections
    assert feed(engine, [(0, {"Kind": "a", "SourceHost": "h1"}), (1, {"Kind": "b", "DestHost": "h2"})]) == []
    titles = feed(engine, [(2, {"Kind": "b", "DestHost": "h1"})])
    assert titles == ["Corr temporal"]


def test_generate_controls_base_alerts(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(base("quiet"), correlation("event_count", ["quiet"], COUNT3))
    assert engine.match(make_event({"Kind": "quiet", "User": "u"})) == []
    engine2, _ = load_rules(base("loud"), correlation("event_count", ["loud"], COUNT3,
                                                      extra="    generate: true"))
    assert [a.rule_name for a in engine2.match(make_event({"Kind": "loud", "User": "u"}))] == ["Base loud"]


def test_unknown_reference_is_rejected_not_fatal(load_rules: RuleLoader) -> None:
    engine, report = load_rules(base("known"), correlation("event_count", ["missing"], COUNT3))
    assert report.rejected == 1 and "missing" in report.rejections[0].reason
    assert [a.rule_name for a in engine.match(make_event({"Kind": "known"}))] == ["Base known"]


def test_bounded_state_under_group_flood(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], COUNT3),
                           max_groups=100)
    for i in range(5000):
        engine.match(make_event({"Kind": "login", "User": f"user{i}"}, timestamp=float(i)))
    stats = engine.statistics()
    assert stats["correlation_groups"] == 100
    assert stats["correlation_evictions"] == 4900
    # the most recent groups survive and still correlate
    assert feed(engine, [(5000, {"Kind": "login", "User": "user4999"}),
                         (5001, {"Kind": "login", "User": "user4999"})]) == ["Corr event_count"]


def test_bounded_entries_in_one_group(load_rules: RuleLoader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(correlation_module, "MAX_ENTRIES_PER_GROUP", 500)
    cond = "    condition:\n        gte: 100000\n        field: Bytes"
    engine, _ = load_rules(base("x"), correlation("value_count", ["x"], cond, timespan="1d"))
    for i in range(1_200):
        engine.match(make_event({"Kind": "x", "User": "u", "Bytes": i}, timestamp=float(i)))
    group = next(iter(engine.correlation.groups.values()))
    assert len(group.entries) == 500
    assert engine.statistics()["correlation_dropped_entries"] == 700


# --- the byte budget (sigma.correlation_max_bytes) ---------------------------------------

NEVER = "    condition:\n        gte: 1000000000"


def traced_growth(feed_events: Any) -> int:
    """Bytes that ``feed_events()`` allocated and that are still allocated after it (tracemalloc).

    The events are made inside, so the field strings a state keeps are counted
    with it; everything the feed frees again is not. Only allocations made
    under this file's frames count: a thread an earlier test left running
    allocates too, and is not what is measured here.
    """
    gc.collect()
    tracemalloc.start(16)  # deep enough to reach this file from any allocation the feed makes
    try:
        feed_events()
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__, all_frames=True)])
        return sum(trace.size for trace in snapshot.traces)
    finally:
        tracemalloc.stop()


def assert_within(engine: SigmaEngine, budget: int) -> dict[str, Any]:
    """The tracked total is under ``budget`` and equals a recount of the whole state."""
    corr = engine.correlation
    stats = engine.statistics()
    assert stats["correlation_bytes"] == corr.bytes <= budget
    assert corr.recount_bytes() == corr.bytes
    return stats


def test_byte_budget_holds_under_a_flood_of_distinct_groups(load_rules: RuleLoader) -> None:
    budget = 256 << 10
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], NEVER),
                           max_groups=10**9, max_bytes=budget)
    engine.match(make_event({"Kind": "login", "User": "warm-up"}))  # route index built outside the measurement

    def flood() -> None:
        for i in range(6_000):  # 4.5 MiB unbounded
            engine.match(make_event({"Kind": "login", "User": f"attacker-{i:012d}"}, timestamp=float(i)))
            if i % 500 == 0:
                assert engine.correlation.bytes <= budget

    real = traced_growth(flood)
    stats = assert_within(engine, budget)
    assert stats["correlation_evictions"] == 0  # max_groups is far away: every eviction is for bytes
    assert stats["correlation_byte_evictions"] == 6_001 - stats["correlation_groups"] > 5_000
    # what the interpreter really holds for the state (tracemalloc) is within the budget too
    assert real <= budget, (real, budget)
    # the newest groups were kept: one of them still correlates
    engine2, _ = load_rules(base("login"), correlation("event_count", ["login"], COUNT3),
                            max_groups=10**9, max_bytes=budget)
    for i in range(6_000):
        engine2.match(make_event({"Kind": "login", "User": f"attacker-{i:012d}"}, timestamp=float(i)))
    recent = {"Kind": "login", "User": "attacker-000000005999"}
    assert feed(engine2, [(6_000, recent), (6_001, recent)]) == ["Corr event_count"]
    assert_within(engine2, budget)


def test_byte_budget_holds_under_huge_group_values(load_rules: RuleLoader) -> None:
    budget = 1 << 20
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], NEVER),
                           max_groups=10**9, max_bytes=budget)
    engine.match(make_event({"Kind": "login", "User": "warm-up"}))

    def flood() -> None:
        for i in range(400):  # 400 groups of 64 KiB each: 25 MiB unbounded
            engine.match(make_event({"Kind": "login", "User": f"{i:06d}" + "A" * (64 << 10)}, timestamp=float(i)))

    real = traced_growth(flood)
    stats = assert_within(engine, budget)
    assert stats["correlation_groups"] == 15 and stats["correlation_byte_evictions"] == 401 - 15
    assert real <= budget, (real, budget)


def test_byte_budget_trims_one_huge_group_oldest_first(load_rules: RuleLoader) -> None:
    budget = 1 << 20
    cond = "    condition:\n        gte: 1000000000\n        field: Payload"
    engine, _ = load_rules(base("x"), correlation("value_count", ["x"], cond, timespan="1d"), max_bytes=budget)
    engine.match(make_event({"Kind": "x", "User": "warm-up", "Payload": "w"}))

    def flood() -> None:
        for i in range(300):  # one group, 300 distinct 32 KiB values: 9.4 MiB unbounded
            engine.match(make_event({"Kind": "x", "User": "u", "Payload": f"{i:06d}" + "B" * (32 << 10)},
                                    timestamp=float(i)))

    real = traced_growth(flood)
    stats = assert_within(engine, budget)
    assert real <= budget, (real, budget)
    group = engine.correlation.groups[next(k for k in engine.correlation.groups if k[1] == ("u",))]
    kept = [e[3] for e in group.entries]
    assert len(kept) == 31 and stats["correlation_byte_dropped_entries"] == 300 - 31
    assert kept[-1].startswith("000299") and kept[0].startswith("000269")  # the newest, in order


def test_non_ascii_values_are_never_understated(load_rules: RuleLoader) -> None:
    cond = "    condition:\n        gte: 1000000000\n        field: Payload"
    engine, _ = load_rules(base("x"), correlation("value_count", ["x"], cond, timespan="1d"),
                           max_groups=10**9)
    engine.match(make_event({"Kind": "x", "User": "warm-up", "Payload": "w"}))
    texts = ["é" * 3000, "中" * 3000, "\U0001f600" * 3000]
    # What RE2, ahocorasick-rs or orjson do to a str: ask for its UTF-8 form, which CPython then keeps.
    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    as_utf8.argtypes, as_utf8.restype = [ctypes.py_object, ctypes.c_void_p], ctypes.c_void_p

    def feed_wide() -> None:
        for i in range(300):
            value = texts[i % 3] + str(i)
            as_utf8(value, None)
            engine.match(make_event({"Kind": "x", "User": f"user-{i}", "Payload": value}, timestamp=float(i)))

    real = traced_growth(feed_wide)
    assert engine.correlation.bytes >= real > 0


def test_a_correlation_completed_by_the_match_that_crosses_the_budget_fires(load_rules: RuleLoader) -> None:
    from edr.detect.sigma.correlation import ENTRY_BYTES, GROUP_BYTES
    from edr.footprint import value_bytes

    user = "U" * 1000
    two_entries = GROUP_BYTES + value_bytes((user,)) + 2 * ENTRY_BYTES
    engine, _ = load_rules(base("login"), correlation("event_count", ["login"], COUNT3),
                           max_bytes=two_entries + 10)
    ev = {"Kind": "login", "User": user}
    assert feed(engine, [(0, ev), (1, ev)]) == []
    assert engine.correlation.bytes == two_entries
    assert feed(engine, [(2, ev)]) == ["Corr event_count"]  # evaluated before the budget is enforced
    assert engine.correlation.bytes == 0 and engine.statistics()["correlation_byte_dropped_entries"] == 0
    # without the firing, the third match is shed from the oldest end and the group goes on
    assert feed(engine, [(3, ev), (4, ev)]) == []
    engine.correlation.max_bytes = two_entries - 1
    assert feed(engine, [(5, {"Kind": "login", "User": "other"})]) == []
    stats = assert_within(engine, two_entries - 1)
    assert stats["correlation_byte_evictions"] == 1 and stats["correlation_groups"] == 1


def test_budget_comes_from_the_configuration(tmp_path: Path) -> None:
    from edr.config import Config, IocConfig, ScannerConfig, SigmaConfig, SimpleConfig
    from edr.detect.engines import load_detection

    (tmp_path / "rule.yml").write_text(textwrap.dedent(base("login")))
    cfg = Config(scanner=ScannerConfig(sigma_rules_path=str(tmp_path), yara_enabled=False),
                 sigma=SigmaConfig(cache_dir="", correlation_max_groups=7, correlation_max_bytes=12345),
                 ioc=IocConfig(enabled=False), simple=SimpleConfig(enabled=False))
    [engine] = load_detection(cfg).engines
    assert isinstance(engine, SigmaEngine)
    assert (engine.correlation.max_groups, engine.correlation.max_bytes) == (7, 12345)
    assert engine.statistics()["correlation_bytes"] == 0
