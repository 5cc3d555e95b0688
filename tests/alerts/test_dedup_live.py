"""Dedup on real executions: the eBPF sensor sees 100 `whoami` from one shell within a second, the repository's
Sigma rule raises 100 alerts, and dedup turns them into the first alert at once plus one rollup of 100."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edr.alerts.dedup import COUNT_KEY, FIRST_SEEN_KEY, LAST_SEEN_KEY, AlertDeduplicator
from edr.alerts.ecs import iso_time
from edr.detect.sigma import load_sigma
from edr.event import Event

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WHOAMI_RULE = "4c2e9a71-5d83-4f6b-8e0a-2b7d9c1f3e45"


@pytest.fixture(scope="module")
def live() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("loads BPF programs: run as root")
    if importlib.util.find_spec("bcc") is None:
        pytest.skip("bcc is not importable")
    from tests.sources.ebpf.live import LiveCapture

    capture = LiveCapture()
    capture.start()
    yield capture
    capture.stop()


@pytest.fixture(scope="module")
def engine() -> Any:
    engine, _report = load_sigma([str(REPO / "rules" / "sigma" / "linux")])
    return engine


def run_whoami_loop(times: int) -> tuple[int, float]:
    """A shell runs whoami ``times`` times; returns the shell's pid and how long it took."""
    started = time.monotonic()
    shell = subprocess.Popen(["/bin/sh", "-c", f"for i in $(seq {times}); do /usr/bin/whoami >/dev/null; done"])
    assert shell.wait(30) == 0
    return shell.pid, time.monotonic() - started


def whoami_events(live: Any, since: int, shell: int, count: int) -> list[Event]:
    def pred(e: Event) -> bool:
        return (e.category == "process_creation" and e.fields.get("ParentProcessId") == shell
                and str(e.fields.get("Image", "")).endswith("/whoami"))

    return live.wait_for(pred, since, timeout=20, count=count)


def test_100_identical_executions_in_one_second(live: Any, engine: Any) -> None:
    since = live.mark()
    shell, took = run_whoami_loop(100)
    assert took < 1.0, f"the loop took {took:.2f}s"
    events = whoami_events(live, since, shell, 100)
    assert len(events) == 100 and len({e.fields["ProcessId"] for e in events}) == 100
    assert max(e.timestamp for e in events) - min(e.timestamp for e in events) < 1.0
    alerts = [a for e in events for a in engine.match(e) if a.rule_id == WHOAMI_RULE]
    assert len(alerts) == 100

    dedup = AlertDeduplicator(10.0)
    emitted = [x for a in alerts for x in dedup.offer(a)]
    assert emitted == [alerts[0]]  # the first at once, the 99 others counted
    end = dedup.next_deadline()
    assert end == pytest.approx(alerts[0].time + 10.0)
    [rollup] = dedup.expire(end)
    assert rollup.ecs[COUNT_KEY] == 100
    times = [a.time for a in alerts]
    assert rollup.ecs[FIRST_SEEN_KEY] == iso_time(min(times)) and rollup.ecs[LAST_SEEN_KEY] == iso_time(max(times))
    assert rollup.rule_id == WHOAMI_RULE and rollup.event is alerts[0].event


def test_the_same_command_from_two_shells_is_not_merged(live: Any, engine: Any) -> None:
    since = live.mark()
    first, _ = run_whoami_loop(5)
    second, _ = run_whoami_loop(5)
    events = whoami_events(live, since, first, 5) + whoami_events(live, since, second, 5)
    alerts = sorted((a for e in events for a in engine.match(e) if a.rule_id == WHOAMI_RULE), key=lambda a: a.time)
    assert len(alerts) == 10
    dedup = AlertDeduplicator(10.0)
    emitted = [x for a in alerts for x in dedup.offer(a)]
    assert [a.event.fields["ParentProcessId"] for a in emitted if a.event] == [first, second]
    rollups = dedup.flush()
    assert sorted((r.event.fields["ParentProcessId"], r.ecs[COUNT_KEY]) for r in rollups if r.event) == [
        (first, 5), (second, 5)]
