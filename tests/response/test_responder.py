"""The responder actor with real processes: dry-run, prevention, safety checks, identity, overflow."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from edr.alerts.daily_file import DailyFile
from edr.config import Config, ResponseConfig
from edr.detect.alert import Alert
from edr.event import Event
from edr.health import health_record
from edr.oplog import FORMAT
from edr.platform.linux import procfs
from edr.platform.protected import ProtectedProcess, gather_protected
from edr.response.actor import Responder
from edr.runtime.supervisor import Supervisor
from edr.wiring import builders
from edr.wiring.context import AgentContext
from tests.scan.harness import Feed, running, supervised, wait_for
from tests.scan.marked import marked_binary

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd and /proc")


class Lines(logging.Handler):
    """Formatted records of ``edr.response``, as the operational log would write them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


@pytest.fixture
def oplog() -> Iterator[Lines]:
    # Attached to edr.response itself: setup_logging elsewhere turns off propagation to the root.
    logger = logging.getLogger("edr.response")
    handler = Lines()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen[bytes]] = []

    def start(directory: Path | None = None) -> subprocess.Popen[bytes]:
        name = "edr-yara-demo" + (f"-{len(procs)}" if procs else "")  # a running file cannot be rewritten
        path = marked_binary(directory or tmp_path / "demo", name)
        proc = subprocess.Popen([str(path), "60"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def responder(**response: object) -> Responder:
    cfg = Config(response=ResponseConfig(**{"enabled": True, **response}))  # type: ignore[arg-type]
    return builders.responder(AgentContext.create(cfg, "test"), "responder")


def yara_alert(pid: object, image: object, **fields: object) -> Alert:
    f = {"ProcessId": pid, "Image": image, **fields}
    f = {k: v for k, v in f.items() if v is not None}
    event = Event("process_creation", "linux", f, time.time())
    return Alert(rule_id="yara:edr_test_marker:EDR_Test_Marker", rule_name="EDR_Test_Marker",
                 severity="critical", engine="yara", event=event)


def image_of(proc: subprocess.Popen[bytes]) -> str:
    return str(proc.args[0])  # type: ignore[index]


async def test_dry_run_logs_would_terminate_and_kills_nothing(oplog: Lines, demo) -> None:
    proc = demo()
    actor = responder(prevention_enabled=False)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(proc.pid, image_of(proc),
                                   ProcessStartTime=procfs.start_ticks(proc.pid))])
        await wait_for(lambda: actor.dry_run == 1)
    expected = (f'response: Active response would terminate process pid={proc.pid} '
                f'image="{image_of(proc)}" dry_run=true')
    [line] = oplog.having("would terminate")
    assert line.endswith(expected) and " INFO edr.response: " in line
    time.sleep(0.2)
    assert proc.poll() is None, "dry-run must not kill"


async def test_prevention_kills_the_demo_process(oplog: Lines, demo) -> None:
    proc = demo()
    actor = responder(prevention_enabled=True)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(proc.pid, image_of(proc), ProcessStartTime=procfs.start_ticks(proc.pid))])
        await wait_for(lambda: actor.terminated == 1)
    assert proc.wait(timeout=5) == -9
    assert oplog.having(
        f'response: Active response terminated process pid={proc.pid} image="{image_of(proc)}"')


def start_epoch(pid: int) -> float:
    btime, ticks = procfs.boot_time(), procfs.start_ticks(pid)
    assert btime is not None and ticks is not None
    return btime + ticks / procfs.clock_ticks()


async def test_epoch_start_time_is_checked_within_a_second(oplog: Lines, demo) -> None:
    wrong, right = demo(), demo()
    actor = responder(prevention_enabled=True)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(wrong.pid, image_of(wrong), ProcessStartTime=start_epoch(wrong.pid) - 30.0),
                        yara_alert(right.pid, image_of(right), ProcessStartTime=start_epoch(right.pid))])
        await wait_for(lambda: actor.terminated + actor.mismatched == 2)
    assert right.wait(timeout=5) == -9
    assert wrong.poll() is None and actor.mismatched == 1


async def test_prevention_without_start_time_uses_event_time(oplog: Lines, demo) -> None:
    proc = demo()
    time.sleep(0.05)
    actor = responder(prevention_enabled=True)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(proc.pid, image_of(proc))])
        await wait_for(lambda: actor.terminated == 1)
    assert proc.wait(timeout=5) == -9


async def test_target_whose_start_time_no_longer_matches_is_not_killed(oplog: Lines, demo) -> None:
    proc = demo()
    ticks = procfs.start_ticks(proc.pid)
    assert ticks is not None
    actor = responder(prevention_enabled=True)
    async with running(actor, output=None) as run:
        # The alert was about an earlier holder of this pid (different start time).
        await run.send([yara_alert(proc.pid, image_of(proc), ProcessStartTime=ticks - 1)])
        await wait_for(lambda: actor.mismatched == 1)
    assert proc.poll() is None
    [line] = oplog.having("identity mismatch")
    assert f"pid={proc.pid}" in line and "start time" in line
    assert not oplog.having("terminated process")


async def test_pid_reused_by_a_later_process_is_not_killed(oplog: Lines, demo) -> None:
    proc = demo()
    actor = responder(prevention_enabled=True)
    # No ProcessStartTime, and the event predates the process: the pid must have been reused.
    alert = yara_alert(proc.pid, image_of(proc))
    assert alert.event is not None
    alert.event.timestamp = time.time() - 3600
    async with running(actor, output=None) as run:
        await run.send([alert])
        await wait_for(lambda: actor.mismatched == 1)
    assert proc.poll() is None


async def test_different_executable_is_not_killed(oplog: Lines, demo) -> None:
    proc = demo()
    actor = responder(prevention_enabled=True)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(proc.pid, "/tmp/some-other-program",
                                   ProcessStartTime=procfs.start_ticks(proc.pid))])
        await wait_for(lambda: actor.mismatched == 1)
    assert proc.poll() is None and "executable" in oplog.having("identity mismatch")[0]


async def test_safety_checks_skip_with_seed_messages(oplog: Lines, demo, tmp_path: Path) -> None:
    trusted = tmp_path / "trusted"
    allowed = demo(trusted)
    actor = responder(prevention_enabled=True, allowlist_paths=[f"{trusted}/"])
    alerts = [
        yara_alert(allowed.pid, image_of(allowed), ProcessStartTime=procfs.start_ticks(allowed.pid)),
        yara_alert(3, "/tmp/x"),
        yara_alert(os.getpid(), sys.executable),
        yara_alert(None, "/tmp/x"),
        yara_alert(allowed.pid, None),
    ]
    async with running(actor, output=None) as run:
        await run.send(alerts)
        await wait_for(lambda: sum(actor.skipped.values()) == 5)
    assert allowed.poll() is None
    assert oplog.having(f'response: Active response skipped: allowlisted pid={allowed.pid} '
                        f'image="{image_of(allowed)}"')
    assert oplog.having('response: Active response skipped: protected pid pid=3 image="/tmp/x"')
    assert oplog.having(f"response: Active response skipped: protected pid pid={os.getpid()}")
    assert oplog.having("response: Active response skipped: missing pid")
    assert oplog.having(f"response: Active response skipped: missing image pid={allowed.pid}")
    assert actor.skipped == {"allowlisted": 1, "protected pid": 2, "missing pid": 1, "missing image": 1}
    assert actor.terminated == 0


async def test_allowlisted_image_basename(oplog: Lines, demo) -> None:
    proc = demo()
    actor = responder(prevention_enabled=True, allowlist_images=["edr-yara-demo"])
    async with running(actor, output=None) as run:
        await run.send([yara_alert(proc.pid, image_of(proc), ProcessStartTime=procfs.start_ticks(proc.pid))])
        await wait_for(lambda: actor.skipped.get("allowlisted") == 1)
    assert proc.poll() is None


async def test_vanished_and_bogus_pids_never_crash(oplog: Lines) -> None:
    done = subprocess.Popen(["/bin/true"])
    done.wait()
    actor = responder(prevention_enabled=True)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(done.pid, "/bin/true", ProcessStartTime=1),
                        yara_alert(2**22 + 12345, "/tmp/x", ProcessStartTime=1),
                        yara_alert(-7, "/tmp/x")])
        await wait_for(lambda: actor.gone + actor.failed + sum(actor.skipped.values()) == 3)
    assert actor.terminated == 0


async def test_min_severity_gate_and_disabled_mode(oplog: Lines, demo) -> None:
    proc = demo()
    actor = responder(prevention_enabled=False, min_severity="high")
    low = yara_alert(proc.pid, image_of(proc))
    low.engine, low.severity = "sigma", "medium"
    async with running(actor, output=None) as run:
        await run.send([low, yara_alert(proc.pid, image_of(proc))])
        await wait_for(lambda: actor.dry_run == 1)
    assert actor.below_severity == 1
    off = builders.responder(AgentContext.create(Config(), "test"), "responder")
    async with running(off, output=None) as run:
        await run.send([yara_alert(proc.pid, image_of(proc))])
        await wait_for(lambda: off.received == 1)
    assert off.queued == 0 and off.dry_run == 0 and off.statistics()["received"] == 1


async def test_requests_beyond_channel_capacity_are_dropped_and_counted(oplog: Lines) -> None:
    actor = responder(prevention_enabled=False, channel_capacity=3)
    async with running(actor, output=None) as run:
        # One batch: intake offers all ten without yielding. The queue holds 3, even with its
        # worker waiting (the capacity is exact: a request handed over still takes its place).
        await run.send([yara_alert(4_000_000 + i, f"/tmp/evil{i}") for i in range(10)])
        await wait_for(lambda: actor.received == 10 and actor.dry_run == actor.queued, state=actor.statistics)
    assert actor.queued == 3 and actor.dropped == 7
    assert actor.statistics()["dropped"] == actor.dropped
    assert len(oplog.having("Active response queue full, dropping request")) == actor.dropped


async def test_request_drops_are_logged_rate_limited(oplog: Lines) -> None:
    actor = responder(prevention_enabled=False, channel_capacity=1)
    async with running(actor, output=None) as run:
        await run.send([yara_alert(4_000_000 + i, f"/tmp/evil{i}") for i in range(50)])
        await wait_for(lambda: actor.received == 50 and actor.dry_run == 1, state=actor.statistics)
    assert actor.dropped == 49
    assert len(oplog.having("Active response queue full, dropping request")) == 20
    [more] = oplog.having("more response requests dropped")
    assert " WARNING edr.response: " in more


async def test_health_record_shows_the_request_queue_like_an_edge(oplog: Lines, tmp_path: Path) -> None:
    actor = responder(prevention_enabled=False, channel_capacity=3)
    release = threading.Event()
    calls = 0

    def held_gatherer() -> tuple[ProtectedProcess, ...]:
        # The start's gathering goes through; the worker's first one waits for the test.
        nonlocal calls
        calls += 1
        if calls > 1:
            release.wait(10)
        return gather_protected()

    actor.gatherer = held_gatherer
    feed = Feed("feed", [[yara_alert(4_000_000 + i, f"/tmp/evil{i}") for i in range(10)]])
    feed.hold = trio.Event()  # the input stays open until the test has looked
    # the breaker's alerts (none here)
    writer = builders.alerts(AgentContext.create(Config(), "test", alert_file=DailyFile(tmp_path, "alerts.json")),
                             "alerts")
    sup = supervised({"feed": ("t_feed", feed), "responder": ("responder", actor), "alerts": ("alerts", writer)},
                     [("feed.out", "responder.in", 4, "block"), ("responder.alerts", "alerts.in", 4, "block")])
    during: list[dict] = []

    async def look(s: Supervisor) -> None:
        # the worker holds the first request (waiting on the gatherer); two wait behind it
        await wait_for(lambda: actor.received == 10 and actor.requests.statistics().received == 1)
        during.append(orjson.loads(orjson.dumps(health_record(s))))  # as the operational log gets it
        release.set()
        feed.hold.set()

    try:
        with trio.fail_after(10):
            assert await sup.run(handle_signals=False, background=[look]) == 0
    finally:
        release.set()
    assert during[0]["actors"]["responder"]["queue"] == {
        "name": "responder.requests", "capacity": 3, "policy": "drop_newest", "sent": 10, "received": 1,
        "dropped": 7, "depth": 2, "high_water": 3, "batches_buffered": 2, "closed": False}
    final = health_record(sup, final=True)["actors"]["responder"]
    assert final["queue"] == {
        "name": "responder.requests", "capacity": 3, "policy": "drop_newest", "sent": 10, "received": 3,
        "dropped": 7, "depth": 0, "high_water": 3, "batches_buffered": 0, "closed": True}
    assert final["queued"] == final["dry_run"] == 3 and final["dropped"] == 7
