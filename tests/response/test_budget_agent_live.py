"""The response budget through the real agent: `edr run`, eBPF, a Sigma rule, 50 real processes in a second.

The rule matches the exec of a copy of ``sleep`` that would run for a
minute. 50 are started within a second; with prevention on and a budget of
10 kills per minute for the rule, at most the budget die (by SIGKILL), the
breaker opens, its critical alert is in the alert file, the others are
logged as would-terminate once each, and the final health record carries
the accounting.
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from edr.response.breaker_alert import BREAKER_RULE_ID
from tests.conftest import ebpf_unavailable
from tests.live.agent import read_alerts, start_agent, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

VICTIMS = 50
BUDGET = 10
RULE_ID = "4f1f0d7a-0c4e-4b7e-8d53-5d0b6a9e7c21"
RULE = textwrap.dedent(f"""\
    title: EDR live budget victim started
    id: {RULE_ID}
    status: test
    logsource:
        product: linux
        category: process_creation
    detection:
        selection:
            Image|endswith: '/edr-live-budget-victim'
        condition: selection
    level: critical
    """)
PID = re.compile(r" pid=(\d+) ")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    rules = tmp_path / "sigma"
    rules.mkdir()
    (rules / "victim.yml").write_text(RULE)
    victim = tmp_path / "bin" / "edr-live-budget-victim"
    victim.parent.mkdir()
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy2(sleep, victim)
    proc, logs = start_agent(tmp_path, f"""
[scanner]
sigma_rules_path = "{rules}"
yara_enabled = false
[simple]
enabled = false
[ioc]
enabled = false
[response]
enabled = true
prevention_enabled = true
rule_kills_per_minute = {BUDGET}
global_kills_per_minute = 30
breaker_cooldown_secs = 600
[health]
interval_secs = 1
[logging]
directory = "{tmp_path / 'logs'}"
level = "info"
[alerts]
directory = "{tmp_path / 'logs'}"
[sigma]
cache_dir = "{tmp_path / 'cache'}"
""", timeout=120)
    yield proc, logs, victim
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def oplog(logs: Path) -> str:
    return "".join(f.read_text(errors="replace") for f in logs.glob("edr.log.*"))


def test_fifty_matches_in_a_second_kill_at_most_the_budget_and_open_the_breaker(agent) -> None:
    proc, logs, victim = agent
    start = time.monotonic()
    victims = [subprocess.Popen([str(victim), "60"]) for _ in range(VICTIMS)]
    spawned = time.monotonic() - start
    try:
        assert spawned < 1.0, f"50 processes took {spawned:.2f}s to start"
        pids = {v.pid for v in victims}

        def decided() -> tuple[list[int], list[int]]:
            text = oplog(logs)
            killed = [int(m.group(1)) for line in text.splitlines() if "terminated process" in line
                      if (m := PID.search(line)) and int(m.group(1)) in pids]
            diverted = [int(m.group(1)) for line in text.splitlines() if "breaker=open" in line
                        if (m := PID.search(line)) and int(m.group(1)) in pids]
            return killed, diverted

        wait_for(lambda: sum(map(len, decided())) >= VICTIMS, 60.0, 0.2)
        elapsed = time.monotonic() - start
        killed, diverted = decided()
        text = oplog(logs)
        # one decision per process: killed, or logged as would-terminate because the breaker is open
        assert sorted(killed + diverted) == sorted(pids), text[-3000:]
        # the budget: one minute's burst, plus what refilled while the decisions were made
        assert BUDGET <= len(killed) <= BUDGET + math.floor(elapsed * BUDGET / 60.0), (len(killed), elapsed)
        for v in victims:
            if v.pid in killed:
                assert v.wait(timeout=10) == -signal.SIGKILL
        assert [v.pid for v in victims if v.poll() is not None] == [v.pid for v in victims if v.pid in killed]
        [opened] = [line for line in text.splitlines() if "circuit breaker opened" in line]
        assert f'rule_id="{RULE_ID}"' in opened and "budget=rule" in opened and "mode=prevention" in opened

        def breaker_alerts() -> list[dict]:
            return [a for a in read_alerts(logs) if a.get("rule.id") == BREAKER_RULE_ID]

        [alert] = wait_for(breaker_alerts, 10.0)
        assert alert["rule.severity"] == "critical" and alert["edr.response.breaker.rule_id"] == RULE_ID
        assert alert["edr.response.breaker.rule_granted"] == len(killed)
        assert alert["edr.response.mode"] == "prevention"
    finally:
        for v in victims:
            if v.poll() is None:
                v.kill()
            v.wait()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    final = [line for line in oplog(logs).splitlines() if 'health {"final":true' in line][-1]
    responder = orjson.loads(final.split("health ", 1)[1])["actors"]["responder"]
    assert responder["terminated"] == len(killed) and responder["budget_denied"] == VICTIMS - len(killed)
    assert responder["budget"]["breaker"]["state"] == "open" and responder["budget"]["breaker"]["trips"] == 1
    assert responder["breaker_alerts"] == 1
