"""ScanDispatcher end to end: real processes, real files, real edges."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from edr.config import AlertsConfig, Config, IocConfig, ScanConfig, ScannerConfig
from edr.detect.engines import Detection
from edr.detect.ioc import load_iocs
from edr.event import Event
from edr.health import health_record
from edr.platform.linux import procfs
from edr.runtime.supervisor import Supervisor
from edr.scan.actor import ScanDispatcher
from edr.scan.planner import ScanJob
from edr.wiring import builders
from edr.wiring.context import AgentContext
from tests.scan.harness import Feed, running, supervised, wait_for
from tests.scan.marked import MARKER, RULE, marked_binary, rules_dir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes and /proc")


def make_config(tmp_path: Path, *, hashes: list[str] = (), scanner: dict | None = None,
                scan: dict | None = None, ioc: dict | None = None, match_debug: str = "off") -> Config:
    lists = tmp_path / "ioc"
    lists.mkdir(exist_ok=True)
    (lists / "hashes.txt").write_text("".join(f"{h}\n" for h in hashes))
    for name in ("ips.txt", "domains.txt", "paths_regex.txt"):
        (lists / name).write_text("# empty\n")
    return Config(
        scanner=ScannerConfig(yara_rules_path=str(rules_dir(tmp_path / "rules")), **(scanner or {})),
        scan=ScanConfig(**{"settle_secs": 0.2, **(scan or {})}),
        ioc=IocConfig(hashes_path=str(lists / "hashes.txt"), ips_path=str(lists / "ips.txt"),
                      domains_path=str(lists / "domains.txt"),
                      paths_regex_path=str(lists / "paths_regex.txt"),
                      **(ioc or {})),
        alerts=AlertsConfig(match_debug=match_debug),
    )


def build(cfg: Config) -> ScanDispatcher:
    ctx = AgentContext.create(cfg, "test")
    # The detection engines the scanner shares with the detect actor: only IOCs here (no Sigma needed).
    iocs = load_iocs(cfg.ioc)
    ctx.shared.detection = Detection((iocs,), iocs=iocs)
    return builders.scan(ctx, "scan")


@pytest.fixture
def spawn() -> Iterator:
    procs: list[subprocess.Popen[bytes]] = []

    def start(path: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(path), "30"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def exec_event(path: Path, pid: int, **extra: object) -> Event:
    fields = {"Image": str(path), "ProcessId": pid, "CommandLine": f"{path} 30", **extra}
    return Event(category="process_creation", product="linux", fields=fields, timestamp=time.time())


async def test_process_from_marked_executable_raises_yara_alert(tmp_path: Path, spawn) -> None:
    actor = build(make_config(tmp_path, match_debug="full"))
    path = marked_binary(tmp_path / "bin")
    proc = spawn(path)
    event = exec_event(path, proc.pid, ProcessStartTime=procfs.start_ticks(proc.pid))
    async with running(actor) as run:
        await run.send([event])
        await wait_for(lambda: len(run.received) >= 1)
    [alert] = run.received
    assert alert.rule_name == RULE and alert.rule_id == f"yara:edr_test_marker:{RULE}"
    assert alert.engine == "yara" and alert.severity == "critical"
    assert alert.event is event
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert alert.ecs["file.path"] == str(path) and alert.ecs["file.hash.sha256"] == digest
    assert alert.ecs["edr.yara.rule"] == RULE and alert.ecs["edr.yara.namespace"] == "edr_test_marker"
    assert alert.ecs["edr.yara.tags"] == ["test", "demo"]
    assert alert.ecs["edr.scan.object"] == "process_image"
    assert alert.debug is not None and alert.debug["strings"][0]["data"] == MARKER.decode()
    stats = actor.statistics()
    assert stats["completed"] == 1 and stats["alerts"] == 1 and stats["yara_scanned"] == 1


async def test_same_file_under_allowlisted_prefix_raises_nothing(tmp_path: Path, spawn) -> None:
    trusted = tmp_path / "trusted"
    cfg = make_config(tmp_path, scanner={"yara_allowlist_paths": [f"{trusted}/"]},
                      ioc={"hash_allowlist_paths": [f"{trusted}/"]})
    actor = build(cfg)
    path = marked_binary(trusted)
    proc = spawn(path)
    async with running(actor) as run:
        await run.send([exec_event(path, proc.pid)])
        await wait_for(lambda: actor.events == 1)
    assert run.received == []
    assert actor.statistics()["allowlisted"] == 1 and actor.queued == 0


async def test_allowlist_paths_are_inherited_by_yara(tmp_path: Path, spawn) -> None:
    trusted = tmp_path / "global"
    cfg = make_config(tmp_path)
    cfg.allowlist.paths = [f"{trusted}/"]
    actor = build(cfg)
    path = marked_binary(trusted)
    async with running(actor) as run:
        await run.send([exec_event(path, spawn(path).pid)])
        await wait_for(lambda: actor.events == 1)
    assert run.received == [] and actor.statistics()["allowlisted"] == 1 and actor.queued == 0


async def test_file_over_size_limit_is_skipped_and_counted(tmp_path: Path, spawn) -> None:
    actor = build(make_config(tmp_path, scan={"yara_max_file_size_mb": 1}, ioc={"max_file_size_mb": 1}))
    path = marked_binary(tmp_path / "bin", pad=2 * 1024 * 1024)
    async with running(actor) as run:
        await run.send([exec_event(path, spawn(path).pid)])
        await wait_for(lambda: actor.completed == 1)
    assert run.received == []
    stats = actor.statistics()
    assert stats["yara_too_large"] == 1 and stats.get("yara_scanned", 0) == 0


async def test_process_whose_sha256_is_listed_raises_ioc_alert(tmp_path: Path, spawn) -> None:
    path = marked_binary(tmp_path / "bin", "listed", marker=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    actor = build(make_config(tmp_path, hashes=[f"{digest} ; test sample"]))
    proc = spawn(path)
    event = exec_event(path, proc.pid)
    async with running(actor) as run:
        await run.send([event])
        await wait_for(lambda: len(run.received) >= 1)
    [alert] = run.received
    assert alert.rule_id == f"ioc:sha256:{digest}" and alert.engine == "ioc" and alert.severity == "high"
    assert alert.event is event and alert.ecs["threat.indicator.file.hash.sha256"] == digest
    assert alert.ecs["file.path"] == str(path)


async def test_written_executable_is_scanned_once_it_settles(tmp_path: Path) -> None:
    actor = build(make_config(tmp_path, scan={"settle_secs": 0.3}))
    path = marked_binary(tmp_path / "drop", "dropped")
    text = tmp_path / "drop" / "readme.txt"
    text.write_bytes(MARKER)  # carries the marker but is not executable: not a settle-scan target
    writes = [Event("file_event", "linux", {"TargetFilename": str(p), "ProcessId": 1234, "Image": "/bin/cp"},
                    time.time()) for p in (path, text)]
    async with running(actor) as run:
        started = trio.current_time()
        for _ in range(3):  # repeated writes restart the quiet period
            await run.send(writes)
            await trio.sleep(0.1)
        await wait_for(lambda: len(run.received) >= 1)
        elapsed = trio.current_time() - started
        await wait_for(lambda: actor.completed == 2)
    assert elapsed >= 0.5  # 0.2 s of writes + 0.3 s quiet
    [alert] = run.received
    assert alert.rule_name == RULE and alert.ecs["file.path"] == str(path)
    assert alert.event.category == "file_event"
    assert alert.ecs["edr.scan.object"] == "written_file"  # the responder never kills the writer (cp) for it
    assert actor.statistics()["not_executable"] == 1


async def test_the_settle_loop_sleeps_while_no_file_is_settling(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    actor = build(make_config(tmp_path, scan={"settle_secs": 0.2}))  # a settle tick of 0.05 s
    calls: list[float] = []
    due = actor.planner.due

    def counting_due(now: float) -> list[ScanJob]:
        calls.append(now)
        return due(now)

    monkeypatch.setattr(actor.planner, "due", counting_due)
    text = tmp_path / "notes.txt"
    text.write_bytes(b"notes")
    async with running(actor) as run:
        await trio.sleep(0.5)
        assert calls == []  # nothing settling: no tick
        await run.send([Event("file_event", "linux", {"TargetFilename": str(text), "ProcessId": 1234,
                                                      "Image": "/bin/cp"}, time.time())])
        await wait_for(lambda: actor.completed == 1)
        woken = len(calls)
        await trio.sleep(0.5)
        assert len(calls) == woken  # nothing settling again: asleep again
    # woken when the file was due (once more only if the clock read a hair early)
    assert 1 <= woken <= 2, calls


async def test_queue_overflow_is_counted_never_blocks(tmp_path: Path) -> None:
    actor = build(make_config(tmp_path, scan={"queue_capacity": 4, "workers": 1}))
    path = marked_binary(tmp_path / "bin", "clean", marker=False)
    events = [exec_event(path, 100000 + i) for i in range(50)]
    async with running(actor) as run:
        with trio.fail_after(2):
            await run.send(events)  # one batch: intake queues 4, the rest overflow
        await wait_for(lambda: actor.events == 50)
        await wait_for(lambda: actor.completed == actor.queued)
    stats = actor.statistics()
    assert stats["queued"] + stats["dropped"] == 50
    assert stats["dropped"] >= 40


async def test_health_record_shows_the_scan_queue_like_an_edge(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edr.scan")
    actor = build(make_config(tmp_path, scan={"queue_capacity": 4, "workers": 1}))
    path = marked_binary(tmp_path / "bin", "clean", marker=False)
    feed = Feed("feed", [[exec_event(path, 100000 + i) for i in range(50)]])  # one batch: 4 queued, 46 dropped
    feed.hold = trio.Event()  # the input stays open until the test has looked
    sup = supervised({"feed": ("t_feed", feed), "scan": ("scan", actor), "sink": ("null", None)},
                     [("feed.out", "scan.in", 4, "block"), ("scan.alerts", "sink.in", 4, "block")])
    during: list[dict] = []

    async def look(s: Supervisor) -> None:
        await wait_for(lambda: actor.events == 50)
        during.append(orjson.loads(orjson.dumps(health_record(s))))  # as the operational log gets it
        feed.hold.set()

    with trio.fail_after(10):
        assert await sup.run(handle_signals=False, background=[look]) == 0
    queue = during[0]["actors"]["scan"]["queue"]
    assert (queue["name"], queue["capacity"], queue["policy"]) == ("scan.jobs", 4, "drop_newest")
    assert queue["sent"] == 50 and queue["dropped"] == 46 and queue["high_water"] == 4
    assert queue["received"] + queue["depth"] == 4 and not queue["closed"]  # what the worker took, what waits
    final = health_record(sup, final=True)["actors"]["scan"]
    assert final["queue"] == {"name": "scan.jobs", "capacity": 4, "policy": "drop_newest", "sent": 50,
                              "received": 4, "dropped": 46, "depth": 0, "high_water": 4,
                              "batches_buffered": 0, "closed": True}
    assert final["queued"] == final["completed"] == 4 and final["dropped"] == 46
    # the drops are logged, the first 20 of them, then counted
    full = [r.getMessage() for r in caplog.records if "scan queue full" in r.getMessage()]
    assert len(full) == 20 and "exec job" in full[0] and "(1 so far)" in full[0]
    assert [r.getMessage() for r in caplog.records if "more scan jobs dropped" in r.getMessage()]


async def test_hashing_a_50mb_file_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(50):
            fh.write(os.urandom(1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    actor = build(make_config(tmp_path, hashes=[digest], scan={"workers": 1}, ioc={"max_file_size_mb": 60}))
    delays: list[float] = []
    sent_during_scan = 0
    async with running(actor) as run:
        await run.send([exec_event(big, 99999)])
        await wait_for(lambda: actor.queued == 1)
        scan_started = time.perf_counter()
        sent = 1
        while actor.completed == 0:
            t0 = time.perf_counter()
            quiet = Event("network_connection", "linux", {"DestinationIp": "192.0.2.1"}, time.time())
            await run.send([quiet])
            sent += 1
            # the delay until the dispatcher has taken the event in
            while actor.events < sent:
                await trio.sleep(0)
            delays.append(time.perf_counter() - t0)
            sent_during_scan += 1
            await trio.sleep(0.005)
        scan_time = time.perf_counter() - scan_started
    assert [a.rule_id for a in run.received] == [f"ioc:sha256:{digest}"]
    assert scan_time > 0.1, "the scan was too quick to show anything"
    assert sent_during_scan >= 10
    assert max(delays) < 0.1, f"event loop stalled: max delay {max(delays):.3f}s over {len(delays)} events"


async def test_memory_of_new_process_is_scanned_when_enabled(tmp_path: Path) -> None:
    actor = build(make_config(tmp_path, scan={"memory_enabled": True}))
    # The marker exists only in the child's heap: assembled at run time, not in argv or any file.
    code = ("import sys,time; m='_'.join(['EDR','TEST','MARKER','7f3a9c2e','DO','NOT','PANIC']); "
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        event = exec_event(Path(sys.executable), proc.pid)
        async with running(actor) as run:
            await run.send([event])
            await wait_for(lambda: actor.completed == 2, timeout=30)
    finally:
        proc.kill()
        proc.wait()
    memory = [a for a in run.received if a.ecs.get("edr.yara.scan_target") == "memory"]
    assert [a.rule_name for a in memory] == [RULE]
    assert memory[0].ecs["process.pid"] == proc.pid and memory[0].event is event
    assert actor.statistics()["memory_scanned"] == 1


async def test_periodic_memory_sweep_is_rate_limited_and_alerts_with_process_identity(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(tmp_path, scan={"memory_enabled": True, "sweep_interval_secs": 1,
                                      "sweep_max_per_minute": 2})
    actor = build(cfg)
    code = ("import sys,time; m='_'.join(['EDR','TEST','MARKER','7f3a9c2e','DO','NOT','PANIC']); "
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    others = [os.getpid(), 2**22 + 1, 2**22 + 2, 2**22 + 3]  # the agent itself, then vanished pids
    # Only these processes exist as far as the sweep is concerned (a whole host would be slow).
    monkeypatch.setattr("edr.platform.linux.procfs.running_pids", lambda: [proc.pid, *others])
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        ticks = procfs.start_ticks(proc.pid)
        async with running(actor) as run:
            await wait_for(lambda: len(run.received) >= 1, timeout=15)
            await trio.sleep(0.3)
            stats = actor.statistics()
    finally:
        proc.kill()
        proc.wait()
    [alert] = run.received
    assert alert.rule_name == RULE and alert.event.category == "memory_scan"
    assert alert.event.fields["ProcessId"] == proc.pid
    assert ticks is not None and alert.event.fields["ProcessStartTime"] == ticks
    assert os.path.realpath(sys.executable) == alert.event.fields["Image"]
    # 2 per minute: the first burst scans 2 of the 4 eligible pids (never the agent itself).
    assert stats["queued"] == 2 and stats["sweep_rounds"] == 1
