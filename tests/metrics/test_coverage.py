"""Telemetry-loss reports: the rate limit, the windows that add up to the totals, the alert's ECS document."""

from __future__ import annotations

import logging

import pytest

from edr.alerts.ecs import HostInfo, alert_document
from edr.alerts.ecs_check import check_document
from edr.metrics.actor import RULE_ID, CoverageActor, loss_alert
from edr.metrics.coverage import EDGE_DROPPED, KERNEL_LOST, LossMonitor, RateLimit
from edr.metrics.snapshot import EdgeCounters, Snapshot


def test_rate_limit_allows_the_burst_then_one_per_interval() -> None:
    limit = RateLimit(30.0, 3)
    assert [limit.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not limit.take(29.0)
    assert limit.take(30.5)
    assert not limit.take(31.0)
    assert limit.take(1000.0) and limit.take(1000.0) and limit.take(1000.0)  # refilled up to the burst only
    assert not limit.take(1000.0)
    with pytest.raises(ValueError):
        RateLimit(0, 1)


def test_reports_carry_the_loss_since_the_previous_report_and_add_up_to_the_totals() -> None:
    monitor = LossMonitor(interval=30.0, burst=1)
    assert monitor.observe(0.0, {"file": 0, "process": 0}, {}) == []  # nothing lost: nothing to say
    [first] = monitor.observe(1.0, {"file": 10, "process": 0}, {})
    assert (first.kind, first.counts, first.totals, first.suppressed, first.window) == (
        KERNEL_LOST, {"file": 10}, {"file": 10, "process": 0}, 0, None)
    # held back by the rate limit, twice: counted as suppressed, and nothing forgotten
    assert monitor.observe(2.0, {"file": 15, "process": 1}, {}) == []
    assert monitor.observe(3.0, {"file": 20, "process": 1}, {}) == []
    assert monitor.pending({"file": 20, "process": 1}, {}) == {KERNEL_LOST: 11, EDGE_DROPPED: 0}
    [second] = monitor.observe(31.0, {"file": 25, "process": 1}, {})
    assert second.counts == {"file": 15, "process": 1}
    assert second.suppressed == 2 and second.window == pytest.approx(30.0)
    assert first.count + second.count == second.total == 26
    assert monitor.reports[KERNEL_LOST] == 2 and monitor.suppressed[KERNEL_LOST] == 2


def test_each_kind_has_its_own_limit() -> None:
    monitor = LossMonitor(interval=30.0, burst=1)
    reports = monitor.observe(0.0, {"file": 1}, {"router.bulk->enricher.in": 4})
    assert [r.kind for r in reports] == [KERNEL_LOST, EDGE_DROPPED]
    assert monitor.observe(1.0, {"file": 2}, {"router.bulk->enricher.in": 4}) == []  # file held, edges quiet
    assert monitor.suppressed == {KERNEL_LOST: 1, EDGE_DROPPED: 0}


def test_a_counter_that_restarts_from_zero_is_not_a_negative_loss() -> None:
    monitor = LossMonitor(interval=1.0, burst=5)
    monitor.observe(0.0, {"file": 50}, {})
    [report] = monitor.observe(1.0, {"file": 3}, {})
    assert report.counts == {"file": 3}


def test_the_loss_alert_is_a_valid_ecs_document_with_the_counts() -> None:
    monitor = LossMonitor()
    kernel, edges = monitor.observe(5.0, {"file": 12, "dns": 0}, {"router.bulk->enricher.in": 7})
    doc = alert_document(loss_alert(kernel, 5.0), HostInfo("h", "linux"))
    assert check_document(doc) == []
    assert doc["rule.id"] == RULE_ID and doc["rule.severity"] == "high"
    assert doc["edr.telemetry.kind"] == "kernel_lost" and doc["edr.telemetry.count"] == 12
    assert doc["edr.telemetry.sources"] == ["file"]
    assert doc["edr.telemetry.counts"] == [12] and doc["edr.telemetry.totals"] == [12]
    doc = alert_document(loss_alert(edges, 5.0), HostInfo("h", "linux"))
    assert check_document(doc) == []
    assert doc["edr.telemetry.kind"] == "edge_dropped" and doc["edr.telemetry.total"] == 7
    assert doc["edr.telemetry.sources"] == ["router.bulk->enricher.in"] and doc["edr.telemetry.counts"] == [7]


def test_the_coverage_actor_checks_only_once_bound_and_ignores_its_own_edges() -> None:
    now = [100.0]
    actor = CoverageActor("coverage", LossMonitor(interval=30.0, burst=3), 1.0, logging.getLogger("t"),
                          clock=lambda: now[0])
    assert actor.check() == []  # unbound: nothing to read
    snap = Snapshot(lost={"file": 3})
    snap.edges["coverage.alerts->alerts.in"] = EdgeCounters(sent=9, dropped=9, depth=0, high_water=1, capacity=4)
    snap.edges["scan.alerts->responder.in"] = EdgeCounters(sent=9, dropped=2, depth=0, high_water=1, capacity=4)
    actor.bind(lambda: snap)
    alerts = actor.check()
    assert [a.ecs["edr.telemetry.kind"] for a in alerts] == ["kernel_lost", "edge_dropped"]
    assert alerts[1].ecs["edr.telemetry.sources"] == ["scan.alerts->responder.in"]
    assert alerts[1].ecs["edr.telemetry.counts"] == [2]
    assert all(a.rule_id == RULE_ID and a.timestamp == 100.0 for a in alerts)
    stats = actor.statistics()
    assert stats["checks"] == 1 and stats["loss_alerts"] == {"kernel_lost": 1, "edge_dropped": 1}
