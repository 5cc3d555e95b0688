"""`edr run` for real: one agent per configuration, and a bounded stop when alerts cannot be written."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.conftest import ebpf_unavailable
from tests.live.agent import start_agent, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

STOP_SECS = 2.0
#: Beyond the stop timeout: the final health record, closing the BPF programs' file descriptors and
#: the interpreter's teardown.
EXIT_SLACK = 1.5

#: Only what these tests do raises alerts: no Sigma, YARA, IOC or built-in rules.
QUIET = """
[scanner]
sigma_enabled = false
yara_enabled = false
[ioc]
enabled = false
[simple]
builtin_enabled = false
rules_path = "{rules}"
[sensor]
families = ["process"]
[agent]
stop_timeout_secs = {stop}
state_directory = "state"
"""


def _config(work: Path, marker: str, alerts_dir: Path | None = None) -> str:
    rules = work / "rules.toml"
    rules.write_text(f'[[rules]]\nid = "T-STOP"\nname = "stop test marker"\ntype = "process"\nseverity = "high"\n'
                     f'action = "alert"\nprocess_names = ["{marker}"]\n')
    text = QUIET.format(rules=rules, stop=STOP_SECS)
    text += f'[logging]\ndirectory = "{work / "logs"}"\n'
    text += f'[alerts]\ndirectory = "{alerts_dir or work / "logs"}"\n'
    return text


def _oplog(logs: Path) -> str:
    return "".join(f.read_text() for f in sorted(logs.glob("edr.log.*")))


def test_second_agent_exits_2_naming_the_first_and_a_killed_one_frees_the_lock(tmp_path: Path) -> None:
    config = _config(tmp_path, "edr-unused-marker")
    first, logs = start_agent(tmp_path, config, timeout=120)
    lock = tmp_path / "state" / "edr.lock"
    try:
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "edr", "run", "--config", str(tmp_path / "config.toml"),
                                 "--no-console"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and str(lock) in second.stderr, second.stderr
        assert took < 15, f"the second agent took {took:.1f}s to refuse (it must not load rules or BPF first)"
        assert lock.read_text() == f"{first.pid}\n"
        assert first.poll() is None  # the first one is untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    logs.rename(tmp_path / "logs-first")  # start_agent waits for "edr started" in logs/: the third's own
    third, _ = start_agent(tmp_path, config, timeout=120)  # the kernel released the dead agent's lock
    try:
        assert lock.read_text() == f"{third.pid}\n"
        third.send_signal(signal.SIGTERM)
        _, err = third.communicate(timeout=30)
        assert third.returncode == 0, err.decode()
    finally:
        if third.poll() is None:
            third.kill()
            third.wait()


def test_sigterm_with_unwritable_alerts_ends_within_the_stop_timeout(tmp_path: Path) -> None:
    marker = f"edr-stop-{uuid.uuid4().hex[:8]}"
    binary = tmp_path / marker
    shutil.copy("/bin/true", binary)
    # writable at start (the agent checks that and would exit 2), made immutable once it runs: every
    # write of the alert file fails from then on
    alerts_dir = tmp_path / "alerts"
    alerts_dir.mkdir(mode=0o700)
    agent, logs = start_agent(tmp_path, _config(tmp_path, marker, alerts_dir), timeout=120)
    subprocess.run(["chattr", "+i", str(alerts_dir)], check=True)
    try:
        for _ in range(3):
            subprocess.run([str(binary)], check=True)
        assert wait_for(lambda: "alerts: writing" in _oplog(logs), 10), "the alert writer never failed"
        # all three alerts reached the writer or its edge (the writer only ever holds one batch)
        time.sleep(1.0)
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        _, err_bytes = agent.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        subprocess.run(["chattr", "-i", str(alerts_dir)], check=False)
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    err = err_bytes.decode()
    print(f"edr run ended {elapsed:.2f}s after SIGTERM (stop timeout {STOP_SECS}s)")
    assert elapsed <= STOP_SECS + EXIT_SLACK, err
    assert agent.returncode == 1, err
    assert "edr: 3 alerts not written: the stop timeout of 2s (agent.stop_timeout_secs) passed" in err
    health = [line for line in _oplog(logs).splitlines() if " health {" in line]
    final = orjson.loads(health[-1].split(" health ", 1)[1])
    assert final["final"] is True and final["unwritten"] == {"alerts": 3}
    assert final["actors"]["alerts"]["alerts"] == 0
    assert "edr stopped (exit 1)" in _oplog(logs)
