"""The writer's core end to end: real Sigma alerts through dedup, ECS and the chain into daily files,
across a restart and a day change; the files verify and the counts add up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.alerts.alert_lines import AlertLines
from edr.alerts.chain import AlertChain
from edr.alerts.chain_recovery import AnchorSchedule, anchor_for, family_path, recover_chain, save_anchor
from edr.alerts.daily_file import DailyFile
from edr.alerts.dedup import COUNT_KEY, AlertDeduplicator
from edr.alerts.ecs import HostInfo
from edr.alerts.verify import render_text, verify
from edr.detect.alert import Alert
from edr.detect.sigma import load_sigma
from edr.platform.private_files import PrivateDir

from .test_dedup import exec_event

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 23, 59, 50, tzinfo=UTC).timestamp()
KEY = b"alert-lines-test-key-0123456789"


@pytest.fixture(scope="module")
def engine() -> Any:
    engine, _report = load_sigma([str(REPO / "rules" / "sigma" / "linux")])
    return engine


def whoami_alerts(engine: Any, start: float, shell: int, n: int, step: float = 0.009) -> list[Alert]:
    events = [exec_event(start + i * step, pid=shell * 1000 + i, ppid=shell) for i in range(n)]
    return [a for e in events for a in engine.match(e)]


def test_writer_core_across_a_restart_and_a_day_change(tmp_path: Path, engine: Any) -> None:
    logs, state = tmp_path / "logs", tmp_path / "state"
    clock = [T0]
    host = HostInfo("web-1", "linux")
    written: list[bytes] = []

    def start() -> tuple[AlertLines, DailyFile]:
        resumed = recover_chain(logs, "alerts.json", state_directory=state, key=KEY)
        assert resumed.notes == ()
        core = AlertLines(host, AlertChain(resumed.start, key=KEY), AlertDeduplicator(10.0))
        return core, DailyFile(logs, "alerts.json", clock=lambda: clock[0])

    def write(file: DailyFile, lines: list[bytes]) -> None:
        file.write(lines)
        written.extend(lines)

    def stop(core: AlertLines, file: DailyFile) -> None:
        write(file, core.finish())
        save_anchor(PrivateDir(state), anchor_for(core.chain.state, family=family_path(logs, "alerts.json"),
                                                  key=KEY))
        file.close()

    core, file = start()
    a = whoami_alerts(engine, T0, shell=900, n=100)
    b = whoami_alerts(engine, T0 + 0.5, shell=901, n=3)
    assert len(a) == 100 and len(b) == 3
    batch = sorted(a + b, key=lambda x: x.time)
    for i in range(0, len(batch), 16):
        write(file, core.accept(batch[i:i + 16]))
    assert len(written) == 2  # the first of each shell, at once
    assert core.due() == pytest.approx(T0 + 10.0)
    assert core.tick(T0 + 9.0) == []
    clock[0] = T0 + 10.6  # past midnight: the rollups go to the next day's file
    write(file, core.tick(clock[0]))
    assert [orjson.loads(x).get(COUNT_KEY) for x in written] == [None, None, 100, 3]
    write(file, core.accept(whoami_alerts(engine, T0 + 11.0, shell=900, n=4)))  # a new window
    stop(core, file)  # the pending rollup of 4 is written at the end

    core, file = start()  # restart, next day
    clock[0] = T0 + 60
    write(file, core.accept(whoami_alerts(engine, T0 + 60, shell=902, n=2)))
    stop(core, file)

    files = sorted(str(p) for p in logs.iterdir())
    assert [Path(f).name for f in files] == ["alerts.json.2026-03-01", "alerts.json.2026-03-02"]
    report = verify(files, KEY)
    assert report.ok, render_text(report)
    assert report.chained == len(written) == 8 and len(report.segments) == 1
    docs = [orjson.loads(x) for x in written]
    # what happened, from the file alone: lines without a count, plus count - 1 per rollup
    total = sum(1 if COUNT_KEY not in d else d[COUNT_KEY] - 1 for d in docs)
    assert total == 100 + 3 + 4 + 2
    assert all(d["rule.id"] == "4c2e9a71-5d83-4f6b-8e0a-2b7d9c1f3e45" for d in docs)
    assert core.statistics()["chain"]["sealed"] == 2


def test_without_dedup_every_alert_is_a_line(engine: Any) -> None:
    core = AlertLines(HostInfo("h", "linux"), AlertChain())
    alerts = whoami_alerts(engine, T0, shell=900, n=5)
    lines = core.accept(alerts)
    assert len(lines) == 5 and core.due() is None and core.tick(T0 + 100) == [] and core.finish() == []
    assert [orjson.loads(x)["edr.chain.seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert core.by_rule == {"User Discovery With Whoami From A Shell": 5}


def test_anchor_schedule_in_a_writer_loop(tmp_path: Path) -> None:
    # what the actor does after each write: save the anchor when due, and at close
    state = PrivateDir(tmp_path / "state")
    schedule = AnchorSchedule(1.0)
    chain = AlertChain()
    saves = 0
    for t in (0.0, 0.3, 0.6, 1.2, 1.3):
        chain.seal({"n": t})
        if schedule.due(t, chain.state):
            save_anchor(state, anchor_for(chain.state, family="/x/alerts.json", key=None))
            schedule.saved(t, chain.state)
            saves += 1
    assert saves == 2 and schedule.pending(chain.state)
