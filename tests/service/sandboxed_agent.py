"""A real ``edr run`` inside the sandbox a generated unit declares, and the actions it must still see (test helper).

The actions are chosen so that each one needs a capability the unit keeps:
the program and its directory belong to another user with mode 0700 (the
scanner needs CAP_DAC_READ_SEARCH to read it, the responder CAP_KILL to kill
it), the program connects to a suspicious port, a root process writes a cron
file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edr.service.systemd_unit import UnitFacts, render_unit
from tests.conftest import REPO
from tests.live.agent import read_alerts, wait_for
from tests.scan.marked import marked_binary
from tests.service.notify_listener import NotifyListener
from tests.service.sandbox import sandbox_spec, sandboxed

NOBODY = 65534


def agent_config(work: Path) -> str:
    """A configuration writing only under ``work/var``, with prevention on and the YARA marker rule."""
    yara = work / "yara"
    yara.mkdir(exist_ok=True)
    shutil.copy(REPO / "rules" / "yara" / "edr_test_marker.yar", yara / "edr_test_marker.yar")
    var = work / "var"
    return f"""
[agent]
state_directory = "{var / 'state'}"
[scanner]
sigma_rules_path = "{REPO / 'rules' / 'sigma'}"
yara_rules_path = "{yara}"
[simple]
rules_path = "{REPO / 'rules' / 'edr-rules.toml'}"
[ioc]
enabled = false
[response]
enabled = true
prevention_enabled = true
[logging]
directory = "{var / 'logs'}"
level = "info"
[alerts]
directory = "{var / 'logs'}"
[sigma]
cache_dir = "{var / 'cache'}"
[health]
interval_secs = 1
"""


def unit_for(work: Path) -> str:
    """The unit ``edr service install`` would write for this test installation."""
    return render_unit(UnitFacts(executable=sys.executable, config=work / "config.toml",
                                 state_directory=work / "var"))


class SandboxedAgent:
    """The agent process, its notifications and its log directory."""

    def __init__(self, proc: subprocess.Popen[bytes], notify: NotifyListener, logs: Path) -> None:
        self.proc = proc
        self.notify = notify
        self.logs = logs

    def oplog(self) -> str:
        return "".join(f.read_text(errors="replace") for f in sorted(self.logs.glob("edr.log.*")))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as systemd stops a service; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@contextmanager
def sandboxed_agent(work: Path, *, unit: str | None = None, capabilities: list[str] | None = None,
                    kill_on_forbidden_syscall: bool = True, watchdog_usec: int = 1_000_000,
                    start_timeout: float = 120.0) -> Iterator[SandboxedAgent]:
    """``edr run`` under the unit's sandbox (``capabilities`` overrides its bounding set), once READY=1 arrived.

    With ``kill_on_forbidden_syscall`` a system call outside the filter kills
    the agent (SIGSYS) instead of failing with EPERM, so nothing degrades quietly.
    """
    (work / "var").mkdir(parents=True, exist_ok=True)
    conf = work / "config.toml"
    conf.write_text(agent_config(work))
    spec: dict[str, Any] = sandbox_spec(unit or unit_for(work), errno=not kill_on_forbidden_syscall)
    if capabilities is not None:
        spec["capabilities"] = capabilities
    notify = NotifyListener(work)
    env = {**os.environ, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(watchdog_usec)}
    proc = subprocess.Popen(sandboxed(spec, [sys.executable, "-m", "edr", "run", "--config", str(conf),
                                             "--no-console"]),
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    agent = SandboxedAgent(proc, notify, work / "var" / "logs")
    try:
        deadline = time.monotonic() + start_timeout
        while not notify.wait_for("READY=1", 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _out, err = proc.communicate()
                raise AssertionError(f"agent not ready: rc={proc.returncode} {err.decode()[-3000:]}\n"
                                     f"{agent.oplog()[-3000:]}")
        yield agent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


@contextmanager
def foreign_marked_program() -> Iterator[Path]:
    """A marked program owned by nobody, in a directory only nobody may enter (0700)."""
    home = Path(tempfile.mkdtemp(prefix="edr-foreign-", dir="/tmp"))
    try:
        path = marked_binary(home, f"edr-foreign-{uuid.uuid4().hex[:6]}")
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o700)
        os.chown(home, NOBODY, NOBODY)
        home.chmod(0o700)
        yield path
    finally:
        shutil.rmtree(home, ignore_errors=True)


def as_nobody(argv: list[str]) -> subprocess.Popen[bytes]:
    """``argv`` run as uid/gid 65534 with no supplementary groups."""
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv])


def foreign_program_killed(agent: SandboxedAgent, program: Path, timeout: float = 20.0) -> tuple[bool, str]:
    """Run ``program`` as nobody; whether the agent killed it (by YARA verdict) within ``timeout`` s, and why not."""
    proc = as_nobody([str(program), "60"])
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False, f"pid {proc.pid} still running after {timeout} s"
    if rc != -signal.SIGKILL:
        return False, f"pid {proc.pid} ended with {rc}"
    line = wait_for(lambda: f"terminated process pid={proc.pid} " in agent.oplog(), 5.0)
    return bool(line), "" if line else "no 'terminated' line in the log"


def suspicious_connect_alerted(agent: SandboxedAgent) -> bool:
    """A connection to port 4444 by nobody's process gives the built-in alert naming its program."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 4444))
        srv.listen(4)
        client = as_nobody([sys.executable, "-c",
                            "import socket,time; s=socket.create_connection(('127.0.0.1',4444)); time.sleep(2)"])
        conn, _ = srv.accept()
        conn.close()
        client.wait(timeout=10)
    return bool(wait_for(lambda: [a for a in read_alerts(agent.logs)
                                  if a.get("rule.id") == "BUILTIN-SUSPICIOUS-PORT"
                                  and a.get("process.pid") == client.pid
                                  and a.get("process.executable") == os.path.realpath(sys.executable)], 10.0))


def cron_write_alerted(agent: SandboxedAgent) -> bool:
    """A write under /etc/cron.d gives the built-in alert."""
    path = Path(f"/etc/cron.d/edr-sandbox-{uuid.uuid4().hex[:8]}")
    try:
        subprocess.run(["/bin/sh", "-c", f"echo '# test' > {path}"], check=True)
        return bool(wait_for(lambda: [a for a in read_alerts(agent.logs)
                                      if a.get("file.path") == str(path) and a.get("rule.id") == "BUILTIN-CRON"],
                             5.0))
    finally:
        path.unlink(missing_ok=True)
