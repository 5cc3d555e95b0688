"""The sans-IO response governor: identity suppression, budgets, the breaker, its cool-down (injected clock)."""

from __future__ import annotations

import pytest

from edr.response.budget import (
    ACT,
    CLOSED,
    DIVERTED,
    GLOBAL_BUDGET,
    OPEN,
    RULE_BUDGET,
    SUPPRESSED,
    DecidedProcesses,
    ResponseGovernor,
    TokenBucket,
    identity_of,
)
from edr.response.decision import ResponseTarget


def target(pid: int | None, *, ticks: int | None = None, epoch: float | None = None, image: str | None = "/tmp/x",
           rule: str = "r1") -> ResponseTarget:
    return ResponseTarget(pid=pid, image=image, start_ticks=ticks, event_time=None,
                          rule_id=rule, rule_name=f"name of {rule}", engine="sigma", severity="critical",
                          start_epoch=epoch)


def governor(rule: int = 3, total: int = 5, cooldown: float = 100.0, **kw: object) -> ResponseGovernor:
    return ResponseGovernor(per_rule_per_minute=rule, global_per_minute=total, cooldown=cooldown, **kw)  # type: ignore[arg-type]


def test_token_bucket_bursts_a_minutes_worth_then_refills_continuously() -> None:
    bucket = TokenBucket(6)
    assert [bucket.take(0.0) for _ in range(7)] == [True] * 6 + [False]
    assert not bucket.take(9.9)  # 6 per minute: one token every 10 s
    assert bucket.take(10.0) and not bucket.take(10.0)
    assert bucket.ready(1000.0) and bucket.tokens == 6.0  # never more than the burst
    assert bucket.ready(5.0)  # a clock going backwards takes nothing away and adds nothing


def test_identity_is_pid_and_start_time_else_pid_and_image() -> None:
    assert identity_of(target(10, ticks=5)) == (10, "ticks", 5)
    assert identity_of(target(10, epoch=1.5)) == (10, "epoch", 1.5)
    assert identity_of(target(10, image="/bin/a")) == (10, "image", "/bin/a")
    assert identity_of(target(None)) is None
    assert identity_of(target(10, ticks=5)) != identity_of(target(10, ticks=6))  # pid reused


def test_second_decision_on_the_same_process_is_suppressed_and_takes_no_budget() -> None:
    gov = governor(rule=2, total=10)
    assert gov.judge(target(100, ticks=1), 0.0).action == ACT
    for _ in range(5):
        assert gov.judge(target(100, ticks=1), 0.0).action == SUPPRESSED
    # the same pid with another start time is another process
    assert gov.judge(target(100, ticks=2), 0.0).action == ACT
    assert gov.suppressed == 5 and gov.granted == 2 and gov.state == CLOSED
    assert gov.statistics(0.0)["identities"] == 2


def test_decided_processes_are_bounded_oldest_first_and_expire() -> None:
    memory = DecidedProcesses(max_entries=3, ttl=60.0)
    ids = [(pid, "ticks", 1) for pid in range(5)]
    assert all(memory.remember(i, 0.0) for i in ids)
    assert len(memory) == 3 and memory.evicted == 2
    assert memory.remember(ids[0], 1.0)  # evicted: forgotten, so decided again
    assert not memory.remember(ids[4], 1.0)
    assert memory.remember(ids[4], 60.0)  # expired after the TTL
    with pytest.raises(ValueError):
        DecidedProcesses(0, 1.0)


def test_rule_budget_exceeded_trips_the_breaker_once_and_everything_after_is_diverted() -> None:
    gov = governor(rule=3, total=10, cooldown=100.0)
    verdicts = [gov.judge(target(1000 + i, ticks=i), 0.5) for i in range(10)]
    assert [v.action for v in verdicts] == [ACT] * 3 + [DIVERTED] * 7
    trips = [v.trip for v in verdicts if v.trip is not None]
    assert len(trips) == 1 and verdicts[3].trip is trips[0]
    trip = trips[0]
    assert (trip.rule_id, trip.budget, trip.limit_per_minute, trip.rule_granted, trip.total_granted) == (
        "r1", RULE_BUDGET, 3, 3, 3)
    assert (trip.pid, trip.image, trip.cooldown, trip.trips) == (1003, "/tmp/x", 100.0, 1)
    assert gov.state == OPEN and gov.denied == 7 and gov.granted == 3
    # open: another rule is diverted too (one breaker for the agent), and takes no budget
    assert gov.judge(target(2000, ticks=1, rule="r2"), 1.0).action == DIVERTED
    stats = gov.statistics(11.0)
    assert stats["breaker"] == {"state": OPEN, "trips": 1, "open_for_secs": 10.5, "cooldown_secs": 100.0}
    assert stats["denied"] == 8 and stats["granted"] == 3


def test_global_budget_across_rules() -> None:
    gov = governor(rule=3, total=5)
    actions = [gov.judge(target(3000 + i, ticks=1, rule=f"r{i % 3}"), 0.0) for i in range(6)]
    assert [a.action for a in actions] == [ACT] * 5 + [DIVERTED]
    trip = actions[5].trip
    assert trip is not None and trip.budget == GLOBAL_BUDGET and trip.limit_per_minute == 5
    assert trip.rule_id == "r2" and trip.rule_granted == 1 and trip.total_granted == 5


def test_a_refused_rule_takes_nothing_from_the_global_budget() -> None:
    gov = governor(rule=1, total=2, cooldown=0.5)
    assert gov.judge(target(1, ticks=1, rule="a"), 0.0).action == ACT
    assert gov.judge(target(2, ticks=1, rule="a"), 0.0).trip is not None  # rule a empty
    # after the cool-down (0.5 s: too short to refill a token at 2/min) the global bucket still
    # holds the token that rule a's refusal did not take
    assert gov.judge(target(3, ticks=1, rule="b"), 0.5).action == ACT
    assert gov.global_bucket.tokens < 1.0


def test_breaker_closes_after_the_cool_down_and_can_trip_again() -> None:
    gov = governor(rule=2, total=10, cooldown=120.0)
    for i in range(3):
        gov.judge(target(i + 10, ticks=1), 0.0)
    assert gov.state == OPEN
    assert gov.judge(target(50, ticks=1), 119.9).action == DIVERTED
    after = gov.judge(target(51, ticks=1), 120.0)
    assert after.action == ACT and after.closed and gov.state == CLOSED
    assert gov.statistics(120.0)["breaker"]["open_for_secs"] is None
    assert gov.judge(target(52, ticks=1), 120.0).action == ACT  # 2 per minute, refilled by then
    again = gov.judge(target(53, ticks=1), 120.0)
    assert again.action == DIVERTED and again.trip is not None and again.trip.trips == 2


def test_zero_cool_down_stays_open_until_restart() -> None:
    gov = governor(rule=1, total=10, cooldown=0.0)
    gov.judge(target(1, ticks=1), 0.0)
    assert gov.judge(target(2, ticks=1), 0.0).trip is not None
    assert gov.judge(target(3, ticks=1), 1e9).action == DIVERTED and gov.state == OPEN


def test_budget_refills_so_a_steady_rate_within_it_never_trips() -> None:
    gov = governor(rule=6, total=30)
    # one kill every 10 s for an hour: exactly the rule's rate
    assert all(gov.judge(target(10_000 + i, ticks=1), i * 10.0).action == ACT for i in range(360))
    assert gov.trips == 0


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        governor(rule=0)
    with pytest.raises(ValueError):
        governor(cooldown=-1.0)
