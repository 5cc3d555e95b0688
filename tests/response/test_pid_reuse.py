"""A PID reused by an unrelated process is not killed: real processes, real PID reuse.

The reuse is forced in a new PID namespace (``unshare --pid --fork
--mount-proc``), where the only processes are the helper's: it runs the
marked program, lets it exit, then sets ``ns_last_pid`` so that the next
process it starts gets the same number.  Nothing else on the host can take
that number first, so the test is deterministic.  The helper then asks
``kill_linux.terminate`` to kill the alerted (exited) process by its identity
and reports what happened to the newcomer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.scan.marked import marked_binary

HELPER = r"""
import json, subprocess, sys, time
from edr.platform.linux import kill as kill_linux, procfs

marked, other = sys.argv[1], sys.argv[2]


def start_as(pid, argv):
    # The next pid the namespace hands out is ns_last_pid + 1 (it is free: its holder was reaped).
    with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
        fh.write(str(pid - 1))
    return subprocess.Popen(argv)


alerted = subprocess.Popen([marked, "0.05"])
pid, ticks = alerted.pid, procfs.start_ticks(alerted.pid)
alerted.wait()
# A real reuse comes much later (the pid counter must wrap); 100 ms is 10 ticks at USER_HZ 100.
time.sleep(0.1)
report = {"pid": pid, "ticks": ticks, "cases": []}
for argv in ([marked, "30"], [other, "30"]):
    newcomer = start_as(pid, argv)
    case = {"argv0": argv[0], "newcomer_pid": newcomer.pid, "newcomer_ticks": procfs.start_ticks(newcomer.pid)}
    # the alert's identity as /proc gave it, and as the sensor may stamp it (one tick later)
    results = []
    for stamp in (ticks, ticks + 1):
        r = kill_linux.terminate(pid, marked, stamp, None)
        results.append([r.outcome, r.detail])
    case["results"] = results
    time.sleep(0.2)
    case["alive_after"] = newcomer.poll() is None
    # control: the check does kill when the identity is the newcomer's own
    own = kill_linux.terminate(newcomer.pid, argv[0], case["newcomer_ticks"], None)
    case["own"] = [own.outcome, own.detail]
    case["own_rc"] = newcomer.wait(timeout=5)
    report["cases"].append(case)
print(json.dumps(report))
"""


def _unshare_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return "Linux PID namespaces"
    if os.geteuid() != 0:
        return "needs root (a PID namespace and ns_last_pid)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a PID namespace here: {probe.stderr.decode(errors='replace').strip()}"
    return None


@pytest.mark.skipif(_unshare_problem() is not None, reason=str(_unshare_problem()))
def test_reused_pid_is_not_killed(tmp_path: Path) -> None:
    marked = marked_binary(tmp_path, "edr-reuse-demo")
    other = shutil.which("sleep") or "/bin/sleep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", HELPER,
                           str(marked), os.path.realpath(other)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["cases"]) == 2
    for case in report["cases"]:
        # the reuse really happened, by a process that started later
        assert case["newcomer_pid"] == report["pid"], case
        assert case["newcomer_ticks"] >= report["ticks"] + 2, case
        for outcome, detail in case["results"]:
            assert outcome == "mismatch", case
            assert detail.startswith(f"start time {case['newcomer_ticks']} != "), case
        assert case["alive_after"], case
        # and the same call kills when the identity is right: the check is not just refusing
        assert case["own"][0] == "terminated", case
        assert case["own_rc"] == -9, case
