"""Response budget and circuit breaker with real processes, real signals and the real alert writer.

A real Sigma rule matches 50 real processes within a second, and every
process is reported twice. The graph is the agent's, minus the sensor: a
feed of process_creation events (read from /proc) -> the detection actor
(its engines built from the configuration) -> the alert writer and the
responder; the responder's breaker alert -> the alert writer.

- prevention: at most the rule's budget (10 per minute) are killed, the
  breaker opens, one critical EDR-RESPONSE-BREAKER alert is written, the
  rest are logged as would-terminate, and none is decided twice;
- dry-run: nothing is killed, one would-terminate line per process, and
  the same budget and breaker accounting.

And with the responder alone and an injected clock: the breaker closes
after its cool-down and kills resume.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from edr.alerts.actor import AlertWriter
from edr.alerts.daily_file import DailyFile
from edr.config import Config, IocConfig, ResponseConfig, ScannerConfig, SigmaConfig, SimpleConfig
from edr.detect.alert import Alert
from edr.event import Event
from edr.platform.linux import procfs
from edr.response.actor import Responder
from edr.response.breaker_alert import BREAKER_RULE_ID
from edr.wiring import builders
from edr.wiring.context import AgentContext
from tests.response.test_responder import Lines, yara_alert
from tests.scan.harness import Feed, running, supervised, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and real signals")

VICTIMS = 50
RULE_BUDGET = 10
RULE_ID = "9d3c1f3e-6a52-4f0e-9a57-2b1f6f2a0b11"
RULE = textwrap.dedent(f"""\
    title: EDR test budget victim started
    id: {RULE_ID}
    status: test
    logsource:
        product: linux
        category: process_creation
    detection:
        selection:
            Image|endswith: '/edr-budget-victim'
        condition: selection
    level: critical
    """)


@pytest.fixture
def oplog() -> Iterator[Lines]:
    logger = logging.getLogger("edr.response")
    handler = Lines()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def victims(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """50 real ``sleep`` processes, under a name of their own (outside every trusted path)."""
    binary = tmp_path / "bin" / "edr-budget-victim"
    binary.parent.mkdir()
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy2(sleep, binary)
    procs = [subprocess.Popen([str(binary), "300"]) for _ in range(VICTIMS)]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def creation_event(proc: subprocess.Popen[bytes]) -> Event:
    """The process_creation event the sensor would have sent for ``proc``, from /proc."""
    image = str(Path(f"/proc/{proc.pid}/exe").readlink())
    ticks = procfs.start_ticks(proc.pid)
    assert ticks is not None
    fields = {"ProcessId": proc.pid, "Image": image, "CommandLine": f"{image} 300",
              "ProcessStartTime": ticks, "ParentProcessId": procfs_parent(proc.pid)}
    return Event("process_creation", "linux", fields, time.time())


def procfs_parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def run_graph(tmp_path: Path, procs: list[subprocess.Popen[bytes]], *, prevention: bool) -> tuple[
        Responder, AlertWriter, float]:
    """Feed two process_creation events per process through detection to the responder; returns the
    responder, the alert writer and how long the responses took (seconds, for the budget's refill)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "victim.yml").write_text(RULE)
    cfg = Config(scanner=ScannerConfig(sigma_rules_path=str(rules), yara_enabled=False),
                 sigma=SigmaConfig(cache_dir=""), ioc=IocConfig(enabled=False), simple=SimpleConfig(enabled=False),
                 response=ResponseConfig(enabled=True, prevention_enabled=prevention,
                                         rule_kills_per_minute=RULE_BUDGET, global_kills_per_minute=30,
                                         breaker_cooldown_secs=600.0))
    # mode "test": the alert writer writes every alert (no live folding of repeated ones)
    ctx = AgentContext.create(cfg, "test", alert_file=DailyFile(tmp_path / "alerts", "alerts.json"))
    detect = builders.detect(ctx, "detect")
    responder = builders.responder(ctx, "responder")
    writer = builders.alerts(ctx, "alerts")
    events = [creation_event(p) for p in procs]
    # every process matched twice: the second alert on a process must not be decided again
    feed = Feed("feed", [events, [creation_event(p) for p in procs]])
    sup = supervised(
        {"feed": ("t_feed", feed), "detect": ("detect", detect), "responder": ("responder", responder),
         "alerts": ("alerts", writer)},
        # the agent's edges (actors/linux.toml) between these actors
        [("feed.out", "detect.in", 64, "block"), ("detect.alerts", "alerts.in", 64, "block"),
         ("detect.alerts", "responder.in", 16, "drop_newest"), ("responder.alerts", "alerts.in", 4, "block")])
    start = time.monotonic()
    trio.run(_run, sup)
    return responder, writer, time.monotonic() - start


async def _run(sup: object) -> None:
    with trio.fail_after(60):
        assert await sup.run(handle_signals=False) == 0  # type: ignore[attr-defined]


def alert_docs(tmp_path: Path) -> list[dict]:
    files = sorted((tmp_path / "alerts").glob("alerts.json*"))
    return [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]


def granted_bound(elapsed: float) -> int:
    """The rule's budget: one minute's burst plus what refilled while the responses ran."""
    return RULE_BUDGET + math.floor(elapsed * RULE_BUDGET / 60.0)


PID = re.compile(r" pid=(\d+) ")


def pids_in(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := PID.search(line))]


def check_accounting(responder: Responder, elapsed: float) -> int:
    """The budget and breaker accounting both modes share; returns the decisions the budget granted."""
    stats = responder.statistics()
    budget = stats["budget"]
    granted = budget["granted"]
    assert RULE_BUDGET <= granted <= granted_bound(elapsed), (granted, elapsed)
    assert stats["received"] == 2 * VICTIMS and stats["queued"] == 2 * VICTIMS and stats["dropped"] == 0
    assert stats["suppressed"] == VICTIMS  # each process's second alert
    assert stats["budget_denied"] == budget["denied"] == VICTIMS - granted
    assert budget["breaker"]["state"] == "open" and budget["breaker"]["trips"] == 1
    assert stats["breaker_alerts"] == 1
    return granted


def check_breaker_alert(tmp_path: Path, granted: int, mode: str, procs: list[subprocess.Popen[bytes]]) -> None:
    docs = alert_docs(tmp_path)
    breaker = [d for d in docs if d["rule.id"] == BREAKER_RULE_ID]
    sigma = [d for d in docs if d["rule.id"] == RULE_ID]
    assert len(sigma) == 2 * VICTIMS  # the detections themselves are all written
    [alert] = breaker
    assert alert["rule.severity"] == "critical" and alert["rule.engine"] == "response"
    assert alert["edr.response.mode"] == mode
    assert alert["edr.response.breaker.rule_id"] == RULE_ID
    assert alert["edr.response.breaker.rule_name"] == "EDR test budget victim started"
    assert alert["edr.response.breaker.budget"] == "rule"
    assert alert["edr.response.breaker.limit_per_minute"] == RULE_BUDGET
    assert alert["edr.response.breaker.rule_granted"] == alert["edr.response.breaker.total_granted"] == granted
    assert alert["edr.response.breaker.cooldown_secs"] == 600.0 and alert["edr.response.breaker.trips"] == 1
    assert alert["process.pid"] in {p.pid for p in procs}
    assert "edr.unmapped" not in alert
    assert RULE_ID in alert["rule.description"]


def test_prevention_kills_at_most_the_budget_and_trips_the_breaker(tmp_path: Path, oplog: Lines,
                                                                    victims: list[subprocess.Popen[bytes]]) -> None:
    responder, writer, elapsed = run_graph(tmp_path, victims, prevention=True)
    killed = pids_in(oplog.having("Active response terminated process"))
    diverted = pids_in(oplog.having("would terminate"))
    assert RULE_BUDGET <= len(killed) <= granted_bound(elapsed), (len(killed), elapsed)
    granted = check_accounting(responder, elapsed)
    assert responder.terminated == granted == len(killed)
    # which are alive: exactly those the log says were killed are dead, by SIGKILL
    for proc in victims:
        if proc.pid in killed:
            assert proc.wait(timeout=5) == -9
    time.sleep(0.2)
    assert [p.pid for p in victims if p.poll() is not None] == [p.pid for p in victims if p.pid in killed]
    assert all(line.endswith('dry_run=true breaker=open rule="EDR test budget victim started"')
               for line in oplog.having("would terminate"))
    # every process decided exactly once: killed or logged as would-terminate, never both
    assert sorted(killed + diverted) == sorted(p.pid for p in victims)
    [opened] = oplog.having("circuit breaker opened")
    assert " CRITICAL edr.response: " in opened and f'rule_id="{RULE_ID}"' in opened
    assert "budget=rule limit_per_minute=10" in opened and "mode=prevention" in opened
    assert writer.alerts == 2 * VICTIMS + 1
    check_breaker_alert(tmp_path, granted, "prevention", victims)


def test_dry_run_kills_nothing_one_line_per_process_same_accounting(tmp_path: Path, oplog: Lines,
                                                                    victims: list[subprocess.Popen[bytes]]) -> None:
    responder, writer, elapsed = run_graph(tmp_path, victims, prevention=False)
    time.sleep(0.2)
    assert all(p.poll() is None for p in victims), "dry-run must not kill"
    lines = oplog.having("would terminate")
    assert sorted(pids_in(lines)) == sorted(p.pid for p in victims)  # exactly one line per process
    granted = check_accounting(responder, elapsed)
    assert responder.terminated == 0 and responder.dry_run == VICTIMS
    assert len([line for line in lines if line.endswith(" dry_run=true")]) == granted
    assert len([line for line in lines if "breaker=open" in line]) == VICTIMS - granted
    [opened] = oplog.having("circuit breaker opened")
    assert "mode=dry-run" in opened
    assert not oplog.having("terminated process")
    assert writer.alerts == 2 * VICTIMS + 1
    check_breaker_alert(tmp_path, granted, "dry_run", victims)


async def test_breaker_closes_after_its_cool_down_and_kills_resume(tmp_path: Path, oplog: Lines,
                                                                   victims: list[subprocess.Popen[bytes]]) -> None:
    cfg = Config(response=ResponseConfig(enabled=True, prevention_enabled=True, rule_kills_per_minute=1,
                                         breaker_cooldown_secs=60.0))
    actor = builders.responder(AgentContext.create(cfg, "test"), "responder")
    now = [1000.0]
    actor.clock = lambda: now[0]
    first, second, third = victims[:3]

    def alert(proc: subprocess.Popen[bytes]) -> Alert:
        return yara_alert(proc.pid, str(Path(f"/proc/{proc.pid}/exe").readlink()),
                          ProcessStartTime=procfs.start_ticks(proc.pid))

    async with running(actor, output="alerts") as run:
        await run.send([alert(first), alert(second)])
        await wait_for(lambda: actor.terminated == 1 and actor.budget_denied == 1, state=actor.statistics)
        [breaker] = run.received
        assert breaker.rule_id == BREAKER_RULE_ID and breaker.ecs["process.pid"] == second.pid
        now[0] += 59.9
        await run.send([alert(third)])
        await wait_for(lambda: actor.budget_denied == 2, state=actor.statistics)
        now[0] += 0.1  # the cool-down is over: the next decision closes the breaker
        fourth = victims[3]
        await run.send([alert(fourth)])
        await wait_for(lambda: actor.terminated == 2, state=actor.statistics)
    assert first.wait(timeout=5) == -9 and fourth.wait(timeout=5) == -9
    assert second.poll() is None and third.poll() is None
    assert len(oplog.having("circuit breaker closed after its cool-down")) == 1
    assert actor.statistics()["budget"]["breaker"] == {"state": "closed", "trips": 1, "open_for_secs": None,
                                                       "cooldown_secs": 60.0}
    assert len(run.received) == 1
