"""The generated unit's hardening against the real agent (issue #14, point 4).

systemd cannot run units on the test machine (PID 1 is not systemd), so the
sandbox is built from the unit's own text with the kernel mechanisms systemd
uses (see ``sandbox_exec.py``): the agent must start, see, alert and kill
under exactly the capabilities, system calls, socket families, W^X rule and
read-only file system the unit declares.  A forbidden system call kills the
agent here (systemd would fail it with EPERM), so nothing degrades quietly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edr.service.systemd_unit import DEFAULT_FACTS, UnitFacts, render_unit
from tests.conftest import ebpf_unavailable
from tests.live.agent import read_alerts
from tests.service.sandbox import missing_tools, sandbox_spec, sandboxed
from tests.service.sandboxed_agent import (
    cron_write_alerted,
    foreign_marked_program,
    foreign_program_killed,
    sandboxed_agent,
    suspicious_connect_alerted,
    unit_for,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable())),
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
    pytest.mark.slow,
]

PROBE = r"""
import ctypes, mmap, os, socket
out = []
try:
    open("/etc/edr-sandbox-probe", "w")
    out.append("wrote /etc")
except OSError:
    pass
with open(os.environ["EDR_PROBE_OK"], "w") as fh:
    fh.write("ok")
if open("/proc/kallsyms").read():
    out.append("read kallsyms")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    out.append("mapped W+X")
except OSError:
    pass
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    out.append("opened netlink")
except OSError:
    pass
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x40000000) == 0:
    out.append("unshared")
status = open("/proc/self/status").read()
print(" ".join(out) or "confined", status.split("CapBnd:")[1].split()[0], status.split("NoNewPrivs:")[1].split()[0])
"""


def own_bounding_set() -> int:
    with open("/proc/self/status") as fh:
        return int(fh.read().split("CapBnd:")[1].split()[0], 16)


def test_the_sandbox_is_real(tmp_path: Path) -> None:
    """What the unit forbids is refused inside the emulation (else the agent test below proves nothing)."""
    unit = unit_for(tmp_path)
    (tmp_path / "var").mkdir()
    ok = tmp_path / "var" / "ok"
    spec = sandbox_spec(unit)
    spec["environment"]["EDR_PROBE_OK"] = str(ok)
    r = subprocess.run(sandboxed(spec, [sys.executable, "-c", PROBE]), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    verdict, bounding, nnp = r.stdout.split()
    assert verdict == "confined", r.stdout
    assert ok.read_text() == "ok"  # the state directory stays writable
    # CAP_DAC_READ_SEARCH(2), CAP_KILL(5), CAP_SYS_PTRACE(19), CAP_PERFMON(38),
    # CAP_BPF(39) and nothing else, as far as this test's own bounding set has them
    listed = sum(1 << n for n in (2, 5, 19, 38, 39))
    assert int(bounding, 16) == listed & own_bounding_set(), bounding
    assert nnp == "1"
    assert not Path("/etc/edr-sandbox-probe").exists()


def test_agent_runs_sees_alerts_and_kills_under_the_unit(tmp_path: Path) -> None:
    with sandboxed_agent(tmp_path) as agent, foreign_marked_program() as program:
        killed, why = foreign_program_killed(agent, program)
        assert killed, f"{why}\n{agent.oplog()[-3000:]}"
        assert suspicious_connect_alerted(agent), agent.oplog()[-3000:]
        assert cron_write_alerted(agent), agent.oplog()[-3000:]
        assert agent.stop() == 0, agent.proc.stderr.read().decode()[-3000:] if agent.proc.stderr else ""
        assert agent.notify.wait_for("STOPPING=1", 5.0)
    assert "Traceback" not in agent.oplog()


@pytest.mark.parametrize("dropped", ["bpf", "perfmon", "sys_ptrace", "dac_read_search", "kill"])
def test_every_capability_kept_is_needed(tmp_path: Path, dropped: str) -> None:
    """Without any one of the unit's capabilities the sensor cannot start or an action goes unanswered."""
    caps = [c for c in sandbox_spec(unit_for(tmp_path))["capabilities"] if c != dropped]
    if dropped in ("bpf", "perfmon"):
        with pytest.raises(AssertionError, match=r"(?s)rc=3 .*BPF programs failed to compile or load"), \
                sandboxed_agent(tmp_path, capabilities=caps, start_timeout=60):
            pass
        return
    with sandboxed_agent(tmp_path, capabilities=caps) as agent, foreign_marked_program() as program:
        # with every capability the kill comes within about two seconds
        killed, _why = foreign_program_killed(agent, program, timeout=8.0)
        assert not killed
        agent.stop()
    log = agent.oplog()
    if dropped == "dac_read_search":  # the scanner cannot read the program, so nothing fires
        assert not [a for a in read_alerts(agent.logs) if a.get("rule.engine") == "yara"]
    elif dropped == "sys_ptrace":  # /proc/PID/exe of another user cannot be read to confirm the target
        assert "Active response failed to terminate process" in log and "needs CAP_SYS_PTRACE" in log, log[-3000:]
    else:  # the signal itself is refused
        assert "failed to terminate process" in log and "Operation not permitted" in log, log[-3000:]


def test_protect_kernel_modules_would_hide_the_headers_bcc_compiles_against(tmp_path: Path) -> None:
    """Why the unit leaves ProtectKernelModules= out: with it the sensor cannot start (exit 3)."""
    unit = render_unit(UnitFacts(executable=sys.executable, config=tmp_path / "config.toml",
                                 state_directory=tmp_path / "var"))
    assert "\nProtectKernelModules=" not in unit and "#   ProtectKernelModules" in unit
    hidden = unit + "[Service]\nProtectKernelModules=yes\n"
    with pytest.raises(AssertionError, match=r"(?s)rc=3 .*kernel headers"), \
            sandboxed_agent(tmp_path, unit=hidden, start_timeout=60):
        pass


def test_default_unit_sandbox_matches_the_one_tested() -> None:
    """The shipped unit declares the same sandbox as the one these tests run the agent in."""
    shipped = sandbox_spec(render_unit(DEFAULT_FACTS))
    tested = sandbox_spec(unit_for(Path("/tmp/x")))
    for key in ("writable", "environment"):
        shipped.pop(key)
        tested.pop(key)
    assert shipped == tested
