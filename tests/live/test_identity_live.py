"""Prevention through the real agent cannot be dodged by waiting before exec (issue #12, point 1).

`edr run` with prevention on and the YARA marker rule; the marked program is a
copy of ``sleep`` that would run for a minute.  The process is started in a
way that used to put its fork time and its exec time far apart, which the
responder then read as a reused PID:

- ``sh -c 'sleep 3; exec MARKED 60'``: forked while the sensor runs (the
  kernel's fork record gives the start time), exec three seconds later;
- a shell forked *before* the agent started (no fork record: the decoder
  reads its start from /proc), told to exec the marked program afterwards.

Both must die by SIGKILL well before their natural end, with "terminated"
in the operational log and no "identity mismatch".
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edr.platform.linux import procfs
from tests.conftest import REPO, ebpf_unavailable
from tests.live.agent import read_alerts, start_agent, wait_for
from tests.scan.marked import marked_binary

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

#: How long the marked program would run if nobody killed it.
NATURAL_SECS = 60
#: A kill must come this soon after the exec (the agent alerts within a second or two).
KILL_WITHIN_SECS = 15.0


class Agent:
    """The running agent, its log directory, and a shell forked before it started."""

    def __init__(self, proc: subprocess.Popen[bytes], logs: Path, marked: Path,
                 early: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.logs = logs
        self.marked = marked
        self.early = early

    def oplog(self) -> str:
        return "".join(f.read_text(errors="replace") for f in self.logs.glob("edr.log.*"))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    work = tmp_path_factory.mktemp("identity")
    marked = marked_binary(work / "bin", "edr-identity-demo")
    rules = work / "yara"
    rules.mkdir()
    shutil.copy(REPO / "rules" / "yara" / "edr_test_marker.yar", rules / "edr_test_marker.yar")
    # Forked before the sensor exists, so no fork record names it: it waits for a line on
    # stdin, then execs the marked program.
    early = subprocess.Popen(["/bin/sh", "-c", f"read go; exec {marked} {NATURAL_SECS}"],
                             stdin=subprocess.PIPE)
    proc, logs = start_agent(work, f"""
[scanner]
sigma_enabled = false
yara_rules_path = "{rules}"
[simple]
rules_path = "{REPO / 'rules' / 'edr-rules.toml'}"
[ioc]
enabled = false
[response]
enabled = true
prevention_enabled = true
[logging]
directory = "{work / 'logs'}"
level = "info"
[alerts]
directory = "{work / 'logs'}"
# each execution's own alert is read back (the marked program run twice by this process would be folded)
dedup_enabled = false
[sigma]
cache_dir = "{work / 'cache'}"
""", timeout=120)
    yield Agent(proc, logs, marked, early)
    if early.poll() is None:
        early.kill()
        early.wait()
    if proc.poll() is None:
        proc.terminate()  # a clean stop detaches the programs and flushes the logs
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _assert_killed(agent: Agent, proc: subprocess.Popen[bytes], exec_at: float) -> None:
    try:
        rc = proc.wait(timeout=KILL_WITHIN_SECS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"pid {proc.pid} was not killed within {KILL_WITHIN_SECS}s of its exec:\n"
                    f"{agent.oplog()[-3000:]}")
    elapsed = time.monotonic() - exec_at
    assert rc == -signal.SIGKILL, (rc, agent.oplog()[-3000:])
    assert elapsed < KILL_WITHIN_SECS < NATURAL_SECS
    text = wait_for(lambda: agent.oplog() if f"terminated process pid={proc.pid} " in agent.oplog() else "", 5.0)
    assert f'terminated process pid={proc.pid} image="{agent.marked}"' in text, text[-3000:]
    mismatches = [line for line in text.splitlines() if "identity mismatch" in line and f"pid={proc.pid} " in line]
    assert not mismatches, mismatches


def test_exec_seconds_after_fork_is_still_killed(agent: Agent) -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", f"sleep 3; exec {agent.marked} {NATURAL_SECS}"])
    time.sleep(0.5)
    forked = procfs.start_ticks(proc.pid)  # the shell's start, as /proc gives it, before the exec
    assert forked is not None
    exec_at = time.monotonic() + 2.5
    _assert_killed(agent, proc, exec_at)
    # The alert names the process by the kernel's start time (clock ticks since boot, the
    # fork's), not by its exec time: /proc's value or the one tick after it.
    alerts = [a for a in read_alerts(agent.logs)
              if a.get("process.pid") == proc.pid and a.get("rule.engine") == "yara"]
    assert alerts, "no YARA alert for the marked program"
    stamped = alerts[0]["edr.event"]["ProcessStartTime"]  # raw fields are written as text
    assert stamped.isdigit() and int(stamped) - forked in (0, 1), (stamped, forked)


def test_process_forked_before_the_agent_is_killed_after_a_late_exec(agent: Agent) -> None:
    early = agent.early
    assert early.poll() is None and early.stdin is not None
    forked = procfs.start_ticks(early.pid)
    time.sleep(1.0)  # the shell is already seconds old; make the exec clearly later still
    exec_at = time.monotonic()
    early.stdin.write(b"go\n")
    early.stdin.flush()
    _assert_killed(agent, early, exec_at)
    alerts = [a for a in read_alerts(agent.logs)
              if a.get("process.pid") == early.pid and a.get("rule.engine") == "yara"]
    assert alerts and alerts[0]["edr.event"]["ProcessStartTime"] == str(forked)
