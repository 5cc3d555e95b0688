"""Orderly shutdown of `edr replay` on SIGTERM/SIGINT, and an actor that raises."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import trio

from edr.config import Config
from edr.runtime.actor import REGISTRY, ActorBase, ActorContext, Ports
from edr.runtime.graph import parse_graph
from edr.runtime.supervisor import Supervisor

from .conftest import BASE_CONFIG, EDR, clean_env, read_alerts

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
    proc = subprocess.Popen([*EDR, "replay", "--config", "edr.toml", "--no-progress", str(big_input)],
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
    def build(cls, ctx: ActorContext, name: str) -> Counter:
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
    def build(cls, ctx: ActorContext, name: str) -> Boom:
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
    def build(cls, ctx: ActorContext, name: str) -> Stuck:
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
    def build(cls, ctx: ActorContext, name: str) -> Collect:
        return cls(name)

    async def run(self, ports: Ports) -> None:
        async for batch in ports.input("in"):
            self.got.extend(batch)
            await trio.sleep(0)


@pytest.fixture
def kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind, cls in {"t_counter": "Counter", "t_boom": "Boom", "t_stuck": "Stuck", "t_collect": "Collect"}.items():
        monkeypatch.setitem(REGISTRY, kind, f"{__name__}:{cls}")


def _graph(middle: str, sink: str, on_error: str = "stop") -> Any:
    return parse_graph({
        "actors": {"src": {"kind": "t_counter"}, "mid": {"kind": middle, "on_error": on_error},
                   "sink": {"kind": sink}},
        "edges": [{"from": "src.out", "to": "mid.in", "capacity": 2, "policy": "block"},
                  {"from": "mid.out", "to": "sink.in", "capacity": 2, "policy": "block"}],
    }, "test-graph.toml", "test")


async def test_failing_actor_stops_the_graph_with_its_name(kinds: None, caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(_graph("t_boom", "t_stuck"), ActorContext(config=Config(), mode="test"))
    caplog.set_level(logging.ERROR, logger="edr.runtime")
    with trio.fail_after(5):  # never a hang, although the sink never reads and the source blocks
        code = await sup.run(handle_signals=False)
    assert code == 1
    assert sup.failed == ["mid"]
    crash = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert len(crash) == 1 and "actor mid (t_boom) crashed" in crash[0].getMessage()
    assert crash[0].exc_info is not None and "deliberate failure" in str(crash[0].exc_info[1])


async def test_failing_actor_with_restart_gives_up_after_max_restarts(kinds: None,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(_graph("t_boom", "t_collect", on_error="restart"), ActorContext(config=Config(), mode="test"))
    caplog.set_level(logging.WARNING, logger="edr.runtime")
    with trio.fail_after(5):
        code = await sup.run(handle_signals=False)
    assert code == 1 and sup.failed == ["mid"]
    assert sum("restarting actor mid" in r.getMessage() for r in caplog.records) == 3


async def test_stop_drains_the_pipeline(kinds: None) -> None:
    graph = parse_graph({
        "actors": {"src": {"kind": "t_counter"}, "sink": {"kind": "t_collect"}},
        "edges": [{"from": "src.out", "to": "sink.in", "capacity": 4, "policy": "block"}],
    }, "test-graph.toml", "test")
    sup = Supervisor(graph, ActorContext(config=Config(), mode="test"))

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
    r = subprocess.run([*EDR, "replay", "--config", "edr.toml", "nope.ndjson"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "nope.ndjson: no such file" in r.stderr
    assert os.path.isdir(tmp_path / "logs")
