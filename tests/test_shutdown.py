"""Orderly shutdown of `edr replay` on SIGTERM/SIGINT, and an actor that raises."""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import trio

import edr.alerts.actor as alerts_actor
from edr.alerts.actor import AlertWriter
from edr.alerts.alert_lines import AlertLines
from edr.alerts.chain import AlertChain
from edr.alerts.daily_file import DailyFile
from edr.alerts.ecs import HostInfo
from edr.detect.alert import Alert
from edr.event import Event
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort
from edr.runtime.graph import parse_graph
from edr.runtime.kinds import Kinds
from edr.runtime.supervisor import Supervisor
from tests.cli_helpers import BASE_CONFIG, EDR, clean_env, read_alerts

N_EVENTS = 2_000_000
EVERY = 997  # line numbers that are multiples of EVERY connect to port 4444 (BUILTIN-SUSPICIOUS-PORT)


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "events.ndjson"
    ok = (b'{"ts":1763000000.%d,"seq":%d,"category":"network_connection","product":"linux","fields":'
          b'{"ProcessId":%d,"Image":"/usr/bin/curl","User":"alice","Initiated":"true","DestinationIp":'
          b'"198.51.100.7","DestinationPort":443,"SourcePort":%d}}\n')
    bad = (b'{"ts":1763000000.%d,"seq":%d,"category":"network_connection","product":"linux","fields":'
           b'{"ProcessId":%d,"Image":"/usr/bin/nc","User":"root","Initiated":"true","DestinationIp":'
           b'"203.0.113.9","DestinationPort":4444,"SourcePort":%d}}\n')
    with open(path, "wb") as fh:
        for start in range(1, N_EVENTS + 1, 100_000):
            fh.write(b"".join((bad if n % EVERY == 0 else ok) % (n % 1000, n, 1000 + n % 30000, 30000 + n % 30000)
                              for n in range(start, min(start + 100_000, N_EVENTS + 1))))
    return path


def _health(log_dir: Path) -> dict[str, Any]:
    records = [line for f in sorted(log_dir.glob("edr.log.*")) for line in f.read_text().splitlines()
               if " health {" in line]
    assert records, "no health record in the operational log"
    record = orjson.loads(records[-1].split(" health ", 1)[1])
    assert record["final"] is True
    return record


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_stream_exits_0_with_every_alert(tmp_path: Path, big_input: Path, signum: int) -> None:
    (tmp_path / "edr.toml").write_text(BASE_CONFIG)
    proc = subprocess.Popen([*EDR, "replay", "--config", "edr.toml", "--output", "logs",
                            "--no-progress", str(big_input)],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    alert_dir = tmp_path / "logs"
    deadline = time.monotonic() + 60
    # wait until the pipeline is well under way: some alerts are on disk
    while time.monotonic() < deadline:
        files = list(alert_dir.glob("alerts.json.*"))
        if files and sum(f.stat().st_size for f in files) > 150_000:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("no alerts within 60s")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    err_text = err.decode()
    assert proc.returncode == 0, err_text
    assert "interrupted" in err_text
    m = re.search(r"replay: 1 file\(s\), (\d+) records, (\d+) events, (\d+) rejected, (\d+) alerts", err_text)
    assert m, err_text
    records, events, rejected, n_alerts = map(int, m.groups())
    assert 0 < records < N_EVENTS, "the signal did not arrive mid-stream"
    print(f"interrupted after {records} records, {n_alerts} alerts")
    assert events == records and rejected == 0

    alerts = read_alerts(alert_dir)  # every line parses, the last one ends in a newline
    lines = [a["edr.log.line"] for a in alerts]
    # exactly the matching lines 1..records, in order: nothing lost, nothing extra, nothing duplicated
    assert lines == [n for n in range(EVERY, records + 1, EVERY)]
    assert n_alerts == len(alerts)
    assert all(a["rule.id"] == "BUILTIN-SUSPICIOUS-PORT" and a["log.file.path"] == str(big_input) for a in alerts)

    health = _health(alert_dir)
    assert health["actors"]["source"]["records"] == records
    assert health["actors"]["detect"]["events"] == records
    assert health["actors"]["alerts"]["alerts"] == len(alerts)
    assert health["dropped_total"] == 0
    for name, edge in health["edges"].items():
        assert edge["depth"] == 0 and edge["sent"] == edge["received"], name


# --- an actor that raises ------------------------------------------------------------------------


class Counter(ActorBase):
    """A source that emits numbered batches until cancelled."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent = 0

    @classmethod
    def build(cls, ctx: object, name: str) -> Counter:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        out = ports.output("out")
        while True:
            await out.send([self.sent])
            self.sent += 1


class Boom(ActorBase):
    """Raises on its third batch."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    @classmethod
    def build(cls, ctx: object, name: str) -> Boom:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        n = 0
        async for batch in ports.input("in"):
            n += 1
            if n == 3:
                raise RuntimeError("deliberate failure")
            await ports.output("out").send(batch)


class Stuck(ActorBase):
    """Never reads its input (so every edge upstream fills up and blocks)."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    @classmethod
    def build(cls, ctx: object, name: str) -> Stuck:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        await trio.sleep_forever()


class Collect(ActorBase):
    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got: list[int] = []

    @classmethod
    def build(cls, ctx: object, name: str) -> Collect:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        async for batch in ports.input("in"):
            self.got.extend(batch)
            await trio.sleep(0)


#: The test actors, as a graph names them (built by their own ``build`` classmethods).
KINDS = Kinds(dict({kind: f"{__name__}:{cls}" for kind, cls in {
    "t_counter": "Counter", "t_boom": "Boom", "t_stuck": "Stuck", "t_collect": "Collect", "t_hoard": "Hoard",
    "t_sleeper": "Sleeper", "t_raise": "Raise", "t_stuck_thread": "StuckThread"}.items()},
    alerts="edr.alerts.actor:AlertWriter"))


def _graph(middle: str, sink: str, on_error: str = "stop") -> Any:
    return parse_graph({
        "actors": {"src": {"kind": "t_counter"}, "mid": {"kind": middle, "on_error": on_error},
                   "sink": {"kind": sink}},
        "edges": [{"from": "src.out", "to": "mid.in", "capacity": 2, "policy": "block"},
                  {"from": "mid.out", "to": "sink.in", "capacity": 2, "policy": "block"}],
    }, "test-graph.toml", "test", KINDS)


async def test_failing_actor_stops_the_graph_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(_graph("t_boom", "t_stuck"), None)
    caplog.set_level(logging.ERROR, logger="edr.runtime")
    with trio.fail_after(5):  # never a hang, although the sink never reads and the source blocks
        code = await sup.run(handle_signals=False)
    assert code == 1
    assert sup.failed == ["mid"]
    crash = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash) == 1 and "actor mid (t_boom) crashed" in crash[0].getMessage()
    assert crash[0].exc_info is not None and "deliberate failure" in str(crash[0].exc_info[1])


async def test_failing_actor_with_restart_gives_up_after_max_restarts(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(_graph("t_boom", "t_collect", on_error="restart"), None)
    caplog.set_level(logging.WARNING, logger="edr.runtime")
    with trio.fail_after(5):
        code = await sup.run(handle_signals=False)
    assert code == 1 and sup.failed == ["mid"]
    assert sum("restarting actor mid" in r.getMessage() for r in caplog.records) == 3


async def test_stop_drains_the_pipeline() -> None:
    graph = parse_graph({
        "actors": {"src": {"kind": "t_counter"}, "sink": {"kind": "t_collect"}},
        "edges": [{"from": "src.out", "to": "sink.in", "capacity": 4, "policy": "block"}],
    }, "test-graph.toml", "test", KINDS)
    sup = Supervisor(graph, None)

    async def stop_soon(s: Supervisor) -> None:
        await trio.sleep(0.05)
        s.stop()

    with trio.fail_after(5):
        code = await sup.run(handle_signals=False, background=[stop_soon])
    assert code == 0
    src, sink = sup.actors["src"], sup.actors["sink"]
    assert src.sent > 0
    assert sink.got == list(range(src.sent))  # everything the source sent was drained, in order
    s = sup.statistics()["src.out->sink.in"]
    assert s.closed and s.sent == s.received == src.sent and s.dropped == 0


def test_replay_of_missing_file_exits_1(tmp_path: Path) -> None:
    (tmp_path / "edr.toml").write_text(BASE_CONFIG)
    r = subprocess.run([*EDR, "replay", "--config", "edr.toml", "--output", "logs", "nope.ndjson"],
                       cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "nope.ndjson: no such file" in r.stderr
    assert os.path.isdir(tmp_path / "logs")


# --- bounded stop: a writer that cannot write ------------------------------------------------------------------

STOP_SECS = 2.0
#: What a process may take beyond its stop timeout to exit: interpreter start-up is before the signal,
#: but after the graph has ended the final health record, the summary and interpreter teardown remain.
EXIT_SLACK = 1.0


def _alerting_events(path: Path, n: int) -> Path:
    """``n`` connections to port 4444: each one raises BUILTIN-SUSPICIOUS-PORT."""
    with open(path, "wb") as fh:
        for i in range(n):
            fh.write(orjson.dumps({
                "ts": 1_763_000_000.0 + i, "seq": i, "category": "network_connection", "product": "linux",
                "fields": {"ProcessId": 100 + i, "Image": "/usr/bin/nc", "User": "root", "Initiated": "true",
                           "DestinationIp": "203.0.113.9", "DestinationPort": 4444}}) + b"\n")
    return path


class _Stderr:
    """A process's standard error, read line by line in a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.decode(errors="replace"))

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self._thread.join(5)
                pytest.fail(f"edr exited early ({self.proc.returncode}): {self.text()[-3000:]}")
            time.sleep(0.05)
        self.proc.kill()
        pytest.fail(f"no {text!r} on standard error within {timeout}s")

    def text(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float) -> str:
        self._thread.join(timeout)
        return self.text()


def _health_in(text: str) -> dict[str, Any]:
    """The final health record among the log lines of ``text`` (a replay logging to the console)."""
    records = [line for line in text.splitlines() if " health {" in line]
    assert records, f"no health record in: {text[-2000:]}"
    record = orjson.loads(records[-1].split(" health ", 1)[1])
    assert record["final"] is True
    return record


def _start_failing_replay(work: Path, output: str, n_events: int, extra: str = "",
                          stop_secs: float = STOP_SECS) -> tuple[subprocess.Popen[bytes], _Stderr]:
    """A real `edr replay` whose --output cannot be written (no alert ever is), logging to standard error,
    once its alert writer has reported a failure."""
    (work / "edr.toml").write_text(BASE_CONFIG + f"[agent]\nstop_timeout_secs = {stop_secs}\n"
                                   "[logging]\nconsole_output = true\nlevel = \"info\"\n" + extra)
    events = _alerting_events(work / "events.ndjson", n_events)
    proc = subprocess.Popen([*EDR, "replay", "--config", "edr.toml", "--output", output, "--no-progress",
                             str(events)], cwd=work, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = _Stderr(proc)
    err.wait_for("alerts: writing")
    return proc, err


def _stop(proc: subprocess.Popen[bytes], err: _Stderr, *signals: int, gap: float = 0.2) -> tuple[float, str]:
    """Send ``signals`` (``gap`` apart); seconds from the first until the process ended, and its stderr."""
    t0 = time.monotonic()
    for i, signum in enumerate(signals):
        if i:
            time.sleep(gap)
        proc.send_signal(signum)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running 30s after {len(signals)} signal(s): {err.finish(5)[-2000:]}")
    return time.monotonic() - t0, err.finish(10)


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Any:
    """A directory even root cannot create files in (chattr +i), removed again afterwards."""
    d = tmp_path / "alerts"
    d.mkdir(mode=0o700)
    if os.geteuid() != 0 or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    yield d
    subprocess.run(["chattr", "-i", str(d)], check=True)


@pytest.mark.parametrize("how", ["under a regular file", "immutable directory"])
def test_sigterm_with_unwritable_alerts_ends_within_the_stop_timeout(tmp_path: Path, how: str,
                                                                      request: pytest.FixtureRequest) -> None:
    if how == "under a regular file":
        (tmp_path / "blocker").write_text("a file where the alerts directory's parent should be")
        alerts_dir = "blocker/alerts"
    else:
        alerts_dir = str(request.getfixturevalue("immutable_dir"))
    proc, stderr = _start_failing_replay(tmp_path, alerts_dir, 5)
    elapsed, err = _stop(proc, stderr, signal.SIGTERM)
    print(f"{how}: ended {elapsed:.2f}s after SIGTERM (stop timeout {STOP_SECS}s)")
    assert elapsed <= STOP_SECS + EXIT_SLACK, err
    assert proc.returncode == 1, err
    assert "5 alerts not written: the stop timeout of 2s (agent.stop_timeout_secs) passed" in err
    assert "0 alerts" in err and "the stop was cancelled (stop timeout)" in err
    health = _health_in(err)
    assert health["unwritten"] == {"alerts": 5} and health["cancelled"] == "stop timeout"
    assert health["actors"]["detect"]["alerts"] == 5 and health["actors"]["alerts"]["alerts"] == 0
    # the idle sinks wait on the writer's output, so they are still running too
    assert "stop timeout: alerts, syslog, webhook still running" in err
    assert "ERROR edr: 5 alerts not written" in err


def test_count_includes_alerts_queued_on_the_writers_edge(tmp_path: Path) -> None:
    """One alert per batch and an alert edge of one batch: the writer holds one alert, its edge one more
    (replay paces itself on the batches in flight, so detection then waits). Both are counted."""
    (tmp_path / "blocker").write_text("x")
    pipeline = '[pipeline]\nbatch_size = 1\ncapacities = { "detect.alerts->alerts.in" = 1 }\n'
    proc, stderr = _start_failing_replay(tmp_path, "blocker/alerts", 40, pipeline)
    elapsed, err = _stop(proc, stderr, signal.SIGTERM)
    assert elapsed <= STOP_SECS + EXIT_SLACK and proc.returncode == 1, err
    health = _health_in(err)
    assert health["edges"]["detect.alerts->alerts.in"]["depth"] == 1
    raised = health["actors"]["detect"]["alerts"]
    assert raised == 2, health["actors"]["detect"]
    assert health["unwritten"] == {"alerts": raised}
    assert f"edr: {raised} alerts not written" in err


def test_second_signal_cancels_at_once_and_still_reports_the_loss(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    proc, stderr = _start_failing_replay(tmp_path, "blocker/alerts", 5, stop_secs=60)
    elapsed, err = _stop(proc, stderr, signal.SIGTERM, signal.SIGTERM)
    assert elapsed < 5, err  # the second signal, not the 60 s stop timeout, ended it
    assert proc.returncode == 1, err
    assert "5 alerts not written: a second signal cancelled the stop" in err
    assert _health_in(err)["cancelled"] == "second signal"


def test_sigint_is_bounded_too(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    proc, stderr = _start_failing_replay(tmp_path, "blocker/alerts", 5)
    elapsed, err = _stop(proc, stderr, signal.SIGINT)
    assert elapsed <= STOP_SECS + EXIT_SLACK and proc.returncode == 1, err
    assert "5 alerts not written" in err


# --- the same, in process: the supervisor's deadline and the unwritten protocol --------------------------------


class Hoard(ActorBase):
    """A sink that takes batches and never delivers them: what it holds is unwritten."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.held = 0

    @classmethod
    def build(cls, ctx: object, name: str) -> Hoard:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        async for batch in ports.input("in"):
            self.held += len(batch)
            await trio.sleep_forever()  # "retrying a failing disk"

    def unwritten(self) -> dict[str, int]:
        return {"things": self.held}


class Sleeper(ActorBase):
    """A sink whose work is a thread that cancellation cannot interrupt (a hung system call)."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    @classmethod
    def build(cls, ctx: object, name: str) -> Sleeper:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        async for _batch in ports.input("in"):
            await trio.to_thread.run_sync(time.sleep, 1.5)


class Raise(ActorBase):
    """Detection stand-in: every number in becomes one alert out."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("alerts",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.alerts = 0

    @classmethod
    def build(cls, ctx: object, name: str) -> Raise:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        async for batch in ports.input("in"):
            alerts = [_alert(i) for i in batch]
            self.alerts += len(alerts)
            await ports.output("alerts").send(alerts)




def _pair(sink: str) -> Any:
    return parse_graph({
        "actors": {"src": {"kind": "t_counter"}, "sink": {"kind": sink}},
        "edges": [{"from": "src.out", "to": "sink.in", "capacity": 2, "policy": "block"}],
    }, "test-graph.toml", "test", KINDS)


async def _stop_after(delay: float, s: Supervisor) -> None:
    await trio.sleep(delay)
    s.stop()


async def test_stop_timeout_cancels_a_sink_that_never_drains() -> None:
    sup = Supervisor(_pair("t_hoard"), None, stop_timeout=0.4)
    t0 = trio.current_time()
    with trio.fail_after(5):
        code = await sup.run(handle_signals=False, background=[lambda s: _stop_after(0.05, s)])
    # stopped at 0.05 s; what was left is cancelled at 0.05 + 0.4 - 0.1 (the grace), within the 0.4 s bound
    assert 0.35 <= trio.current_time() - t0 < 0.45 + 0.2
    assert sup.cancelled == "stop timeout"
    # the hoard holds one batch, the edge two more (the counter's were cancelled while blocked: abandoned)
    s = sup.statistics()["src.out->sink.in"]
    edge = sup.edges["src.out->sink.in"]
    assert s.depth == 2 and edge.abandoned == 1
    assert sup.unwritten() == {"things": 1}
    assert code == 1  # something was never delivered: never exit 0


async def test_without_anything_unwritten_a_timed_out_stop_returns_0() -> None:
    sup = Supervisor(_graph("t_boom", "t_stuck"), None, stop_timeout=0.3)
    sup.actors = {"src": Counter("src"), "mid": Stuck("mid"), "sink": Stuck("sink")}
    with trio.fail_after(5):
        code = await sup.run(handle_signals=False, background=[lambda s: _stop_after(0.05, s)])
    assert sup.cancelled == "stop timeout" and sup.unwritten() == {} and code == 0


async def test_stuck_thread_calls_on_stuck_when_the_stop_timeout_is_up() -> None:
    sup = Supervisor(_pair("t_sleeper"), None, stop_timeout=0.4)
    calls: list[tuple[float, list[str]]] = []
    t0 = time.monotonic()
    with trio.fail_after(10):
        await sup.run(handle_signals=False, background=[lambda s: _stop_after(0.05, s)],
                      on_stuck=lambda running: calls.append((time.monotonic() - t0, running)))
    # cancelled at 0.05 + 0.3, given up on at 0.05 + 0.4: while the thread still sleeps (until 1.5 s)
    assert len(calls) == 1, calls
    at, running = calls[0]
    assert running == ["sink"] and 0.4 < at < 0.9, calls


async def test_edge_counts_a_batch_abandoned_by_a_cancelled_sender() -> None:
    edge = Edge("a.out->b.in", 1, Policy.BLOCK)
    InPort("b.in").attach(edge)
    await edge.send([1, 2])
    with trio.move_on_after(0.05):
        await edge.send([3, 4, 5])  # full: waits, then is cancelled
    s = edge.statistics()
    assert edge.abandoned == 3 and s.sent == 2 and s.depth == 2 and s.dropped == 0
    with trio.CancelScope() as scope:
        scope.cancel()
        await edge.send([6])  # cancelled before it could be queued
    assert edge.abandoned == 4


async def test_alert_writer_counts_exactly_what_a_short_write_left(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """4 alerts; the disk takes 1.5 lines, then is full: 3 alerts are unwritten (the cut one included),
    plus the 2 queued on the writer's edge, while it retries and after it is cancelled."""
    monkeypatch.setattr(alerts_actor, "_RETRY_FIRST", 0.01)
    monkeypatch.setattr(alerts_actor, "_RETRY_MAX", 0.02)
    file = DailyFile(tmp_path / "logs", "alerts.json")
    writer = AlertWriter("alerts", file, AlertLines(HostInfo("h", "linux"), AlertChain()),
                         log=logging.getLogger("edr.test.unwritten"))
    edge = Edge("detect.alerts->alerts.in", 4, Policy.BLOCK)
    port = InPort("alerts.in")
    port.attach(edge)
    real_write = os.write
    first_line: list[int] = []

    def disk(fd: int, data: bytes) -> int:
        if not first_line:
            first_line.append(bytes(data).index(b"\n") + 1)
            return real_write(fd, bytes(data[: first_line[0] * 3 // 2]))  # one line and a half
        raise OSError(errno.ENOSPC, "No space left on device")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            monkeypatch.setattr(os, "write", disk)
            nursery.start_soon(writer.run, Ports(inputs={"in": port}, outputs={}))
            await edge.send([_alert(i) for i in range(4)])
            await edge.send([_alert(4), _alert(5)])
            while file.errors < 3:
                await trio.sleep(0.01)
            assert writer.unwritten() == {"alerts": 3 + 2}
            nursery.cancel_scope.cancel()
    monkeypatch.setattr(os, "write", real_write)
    assert writer.unwritten() == {"alerts": 5} and writer.alerts == 0
    assert writer.statistics()["unwritten"] == 5
    assert writer.by_rule == {}  # counted per rule only once written
    on_disk = file.current_path.read_bytes()
    # the half line was cut from the file after the failed write (DailyFile) and counts unwritten
    assert on_disk.count(b"\n") == 1 and len(on_disk) == first_line[0]


def _alert(i: int) -> Alert:
    event = Event("network_connection", "linux", {"ProcessId": i, "Image": "/usr/bin/nc", "DestinationPort": 4444},
                  1_763_000_000.0 + i, seq=i, origin={"log.file.path": "x.ndjson", "edr.log.line": i})
    return Alert(rule_id="R-1", rule_name="test rule", severity="high", engine="simple", event=event)


async def test_alerts_abandoned_by_blocked_detection_are_counted(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Live sources do not wait for the graph: with the alert writer stuck, detection blocks on the full
    alert edge holding a batch. The stop timeout cancels it; that batch is counted, so the count is
    exactly every alert detection raised."""
    monkeypatch.setattr(alerts_actor, "_RETRY_FIRST", 0.01)
    monkeypatch.setattr(alerts_actor, "_RETRY_MAX", 0.02)
    (tmp_path / "blocker").write_text("x")
    file = DailyFile(tmp_path / "blocker" / "alerts", "alerts.json")
    graph = parse_graph({
        "actors": {"src": {"kind": "t_counter"}, "detect": {"kind": "t_raise"}, "alerts": {"kind": "alerts"}},
        "edges": [{"from": "src.out", "to": "detect.in", "capacity": 2, "policy": "block"},
                  {"from": "detect.alerts", "to": "alerts.in", "capacity": 2, "policy": "block"}],
    }, "test-graph.toml", "test", KINDS)
    writer = AlertWriter("alerts", file, AlertLines(HostInfo("h", "linux"), AlertChain()),
                         log=logging.getLogger("edr.test.abandoned"))
    sup = Supervisor(graph, None, {"alerts": writer}, stop_timeout=0.5)
    with trio.fail_after(5):
        code = await sup.run(handle_signals=False, background=[lambda s: _stop_after(0.1, s)])
    edge = sup.edges["detect.alerts->alerts.in"]
    assert edge.abandoned == 1 and edge.statistics().depth == 2  # one batch of one alert given up on
    raised = sup.actors["detect"].alerts
    assert raised == 1 + 2 + 1  # held by the writer, queued, abandoned
    assert sup.unwritten() == {"alerts": raised} and writer.alerts == 0
    assert code == 1 and sup.cancelled == "stop timeout"


STUCK_SCRIPT = """
import functools, sys, time, trio
from edr.runtime.graph import parse_graph
from edr.runtime.supervisor import Supervisor
from tests.test_shutdown import KINDS
from edr.shutdown import hard_exit
from edr.oplog import setup_logging

setup_logging("info", sys.argv[1], "edr.log", False)
actors = {"src": {"kind": "t_counter"}, "hung": {"kind": "t_stuck_thread"}}
edges = [{"from": "src.out", "to": "hung.in", "capacity": 2, "policy": "block"}]
if sys.argv[3] == "with-loss":  # a sink that holds what it was given, never written
    actors["sink"] = {"kind": "t_hoard"}
    edges.append({"from": "src.out", "to": "sink.in", "capacity": 2, "policy": "block"})
graph = parse_graph({"actors": actors, "edges": edges}, "stuck.toml", "test", KINDS)
sup = Supervisor(graph, None, stop_timeout=float(sys.argv[2]))
print("running", flush=True)
sys.exit(trio.run(functools.partial(sup.run, on_stuck=hard_exit(sup))))
"""


class StuckThread(ActorBase):
    """A sink whose thread never returns in time (a write to a hung disk); cancellation cannot reach it."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    @classmethod
    def build(cls, ctx: object, name: str) -> StuckThread:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        async for _batch in ports.input("in"):
            await trio.to_thread.run_sync(time.sleep, 600)


@pytest.mark.parametrize("loss", ["with-loss", "without-loss"])
def test_a_thread_stuck_past_the_stop_timeout_still_ends_the_process(tmp_path: Path, loss: str) -> None:
    """The last resort: after the stop timeout a watchdog thread reports and ends the process:
    with 1 when something was not written, with 0 when only a clean-up was cut short."""
    root = Path(__file__).resolve().parents[1]
    env = clean_env(PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(root)]))
    proc = subprocess.Popen([sys.executable, "-c", STUCK_SCRIPT, str(tmp_path), str(STOP_SECS), loss],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"running\n"
    time.sleep(0.3)  # the hoard (if any) holds a batch, the hung actor sits in its thread
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, raw = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 30s after SIGTERM: {proc.communicate()[1].decode()[-2000:]}")
    elapsed, err = time.monotonic() - t0, raw.decode()
    assert elapsed <= STOP_SECS + EXIT_SLACK, err
    assert "edr: stop timeout: hung still running after being cancelled" in err
    oplog = "".join(f.read_text() for f in tmp_path.glob("edr.log.*"))
    assert "CRITICAL" in oplog
    if loss == "with-loss":
        assert proc.returncode == 1, err
        assert re.search(r"exiting now with [1-9]\d* things not written", err), err
        assert "stop timeout: hung, sink still running" in oplog
    else:
        assert proc.returncode == 0, err
        assert "exiting now with nothing not written" in err
