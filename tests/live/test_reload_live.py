"""Hot reload of a running `edr run` under an exec storm: real BPF sensor, real signals, real systemd notify socket.

While ``/bin/true TAG SEQ`` is exec'd 400 times a second, a SIGHUP swaps in
a rule set with one Sigma rule more: the new rule fires on the next action,
every exec of the storm is in the event file (no sequence number missing:
nothing was lost while the rules were swapped), and the kernel lost
nothing. Then `edr reload` with a broken rule added is refused, with the
broken file named in the log, and the previous set keeps matching. The
service manager's side is a datagram socket bound where systemd's would be:
``RELOADING=1`` (with ``MONOTONIC_USEC``) then ``READY=1`` for each reload.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, ebpf_unavailable
from tests.live.agent import read_alerts, wait_for
from tests.live.reload_helpers import (
    EXEC_STORM,
    NotifySocket,
    health_records,
    kernel_lost,
    op_log,
    start_agent_env,
    stop_agent,
)

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

RATE = 400
STORM_SECS = 8.0

NEW_RULE = """title: Reload Test Marker
id: {rule_id}
status: test
description: added while the agent runs, by the hot reload test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: '{marker}'
    condition: selection
level: high
"""

BROKEN_RULE = """title: Reload Test Broken Rule
id: {rule_id}
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'never'
    condition: selection and undefined_selection
level: high
"""


def _storm_seqs(logs: Path, tag: str) -> set[int]:
    seqs: set[int] = set()
    needle = f"/bin/true {tag} ".encode()
    for f in logs.glob("events.json.*"):
        for line in f.read_bytes().splitlines():
            if needle in line:
                cmd = orjson.loads(line)["fields"].get("CommandLine", "")
                seqs.add(int(cmd.rsplit(" ", 1)[1]))
    return seqs


def test_sighup_swaps_rules_under_an_exec_storm_without_losing_an_event(tmp_path: Path) -> None:
    sigma = tmp_path / "sigma"
    shutil.copytree(REPO / "rules" / "sigma", sigma)
    logs = tmp_path / "logs"
    notify = NotifySocket(tmp_path / "notify.sock")
    config = f"""
[scanner]
sigma_rules_path = "{sigma}"
yara_rules_path = "{REPO / 'rules' / 'yara'}"
[simple]
rules_path = "{REPO / 'rules' / 'edr-rules.toml'}"
[ioc]
hashes_path = "{REPO / 'rules' / 'ioc' / 'hashes.txt'}"
ips_path = "{REPO / 'rules' / 'ioc' / 'ips.txt'}"
domains_path = "{REPO / 'rules' / 'ioc' / 'domains.txt'}"
paths_regex_path = "{REPO / 'rules' / 'ioc' / 'paths_regex.txt'}"
[logging]
directory = "{logs}"
[alerts]
directory = "{logs}"
[events]
enabled = true
directory = "{logs}"
categories = ["process_creation"]
[health]
interval_secs = 1
[sigma]
cache_dir = "{tmp_path / 'cache'}"
[agent]
state_directory = "{tmp_path / 'state'}"
"""
    proc = start_agent_env(tmp_path, config, {"NOTIFY_SOCKET": str(notify.path)}, timeout=180)
    storm = None
    try:
        assert wait_for(lambda: "READY=1" in notify.messages, 10), notify.messages
        tag = f"edr-storm-{uuid.uuid4().hex[:8]}"
        storm = subprocess.Popen([sys.executable, "-c", EXEC_STORM, tag, str(RATE), str(STORM_SECS)],
                                 stdout=subprocess.PIPE)
        # the storm is under way (events recorded) before the reload
        assert wait_for(lambda: len(_storm_seqs(logs, tag)) > RATE // 2, 20), "the storm is not being recorded"

        # 1. one rule more, swapped in by SIGHUP while the storm runs
        marker = f"edr-reload-marker-{uuid.uuid4().hex[:8]}"
        rule_id = str(uuid.uuid4())
        (sigma / "linux" / "proc_creation_reload_marker.yml").write_text(NEW_RULE.format(rule_id=rule_id,
                                                                                         marker=marker))
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_for(lambda: "rule set #2 in use" in op_log(logs), 60), op_log(logs)[-3000:]
        assert storm.poll() is None, "the storm ended before the swap: it did not run across the reload"
        log_text = op_log(logs)
        assert "reload: rule set #2 in force (was #1)" in log_text
        assert "sigma rules 3 -> 4" in log_text, log_text[-3000:]

        # the new rule fires on the next action
        subprocess.run(["/bin/true", marker], check=True)
        hits = wait_for(lambda: [a for a in read_alerts(logs) if a.get("rule.id") == rule_id], 10)
        assert hits, "the rule added by the reload did not fire"

        # every exec of the storm is in the event file: no gap across the swap
        out, _ = storm.communicate(timeout=60)
        made = int(out.decode().strip())
        assert made >= RATE * STORM_SECS * 0.9, f"the storm made only {made} execs"
        wanted = set(range(made))
        wait_for(lambda: _storm_seqs(logs, tag) >= wanted, 30)
        missing = sorted(wanted - _storm_seqs(logs, tag))
        assert not missing, f"{len(missing)} of {made} storm execs missing from the event file: {missing[:20]}"

        # 2. a broken rule: `edr reload` is refused, the reasons name the file, the previous set stays
        broken = sigma / "linux" / "proc_creation_reload_broken.yml"
        broken.write_text(BROKEN_RULE.format(rule_id=str(uuid.uuid4())))
        result = subprocess.run([sys.executable, "-m", "edr", "reload", "--config", str(tmp_path / "config.toml")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"PID {proc.pid}" in result.stdout
        assert wait_for(lambda: "reload refused (" in op_log(logs), 60), op_log(logs)[-3000:]
        log_text = op_log(logs)
        refused = [line for line in log_text.splitlines() if "reload refused:" in line]
        assert any(str(broken) in line and "undefined_selection" in line for line in refused), refused
        assert "above): rule set #2 stays in force" in log_text
        assert "rule set #3" not in log_text
        subprocess.run(["/bin/true", marker, "again"], check=True)
        assert wait_for(lambda: len([a for a in read_alerts(logs) if a.get("rule.id") == rule_id]) >= 2, 10), \
            "the previous rule set stopped matching after a refused reload"

        # the kernel lost nothing, across both reloads (read while the sensor is open)
        wait_for(lambda: len(health_records(logs)) >= 2, 5)
        lost = kernel_lost(logs)
        assert all(n == 0 for n in lost.values()), lost

        # systemd heard RELOADING=1 (with MONOTONIC_USEC) then READY=1, for each reload
        assert wait_for(lambda: len(notify.messages) >= 5, 10), notify.messages
        msgs = notify.messages
        start = msgs.index("READY=1")
        reloads = [m for m in msgs[start + 1:] if "WATCHDOG" not in m]
        assert len(reloads) >= 4, msgs
        for reloading, ready in zip(reloads[0:4:2], reloads[1:4:2], strict=True):
            lines = reloading.split("\n")
            assert lines[0] == "RELOADING=1", msgs
            assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0, msgs
            assert ready == "READY=1", msgs
    finally:
        if storm is not None and storm.poll() is None:
            storm.kill()
            storm.wait()
        code = stop_agent(proc)
        notify.close()
    assert code == 0, op_log(logs)[-3000:]
    final = [h for h in health_records(logs) if h.get("final")]
    assert final, "no final health record"
    assert final[-1]["actors"]["detect"]["rules_version"] == 2
