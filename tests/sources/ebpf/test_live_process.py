"""Process events from the real programs: exec with argv, fork parents, exit."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edr.event import PROCESS_CREATION, PROCESS_FORK, PROCESS_TERMINATION, F
from edr.platform.linux import procfs
from tests.sources.ebpf.live import LiveCapture

ME = pwd.getpwuid(os.geteuid()).pw_name
SH = os.path.realpath("/bin/sh")


def test_whoami_from_a_shell(live: LiveCapture) -> None:
    marker = f"edr-{uuid.uuid4().hex}"
    since = live.mark()
    subprocess.run(["/bin/sh", "-c", "/usr/bin/whoami", marker], check=True, capture_output=True)
    shell = live.wait_for(lambda e: e.category == PROCESS_CREATION
                          and e.get(F.COMMAND_LINE) == f"/bin/sh -c /usr/bin/whoami {marker}", since)
    assert len(shell) == 1
    sh_pid = shell[0].fields[F.PROCESS_ID]
    found = live.wait_for(lambda e: e.category == PROCESS_CREATION and e.get(F.PARENT_PROCESS_ID) == sh_pid,
                          since)
    assert len(found) == 1, found
    f = found[0].fields
    assert f[F.IMAGE] == "/usr/bin/whoami"
    assert f[F.COMMAND_LINE] == "/usr/bin/whoami"
    assert f[F.PARENT_IMAGE] == SH
    assert f[F.PARENT_COMMAND_LINE] == f"/bin/sh -c /usr/bin/whoami {marker}"
    assert f[F.USER] == ME
    assert f[F.UID] == os.geteuid()
    assert f[F.COMM] == "whoami"
    assert f[F.ARGV_TRUNCATED] is False
    assert f[F.CURRENT_DIRECTORY] == os.getcwd()
    assert isinstance(f[F.CGROUP_ID], int)
    # the fork's time in clock ticks since boot (not an epoch time): before now, on that clock
    start = f[F.PROCESS_START_TIME]
    assert type(start) is int
    assert 0 < start <= time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK")
    # the event time is kernel time converted to the epoch
    assert abs(found[0].timestamp - shell[0].timestamp) < 5


def test_process_exiting_at_once_keeps_parent_and_command_line(live: LiveCapture) -> None:
    marker = f"edr-{uuid.uuid4().hex}"
    since = live.mark()
    # /bin/true exits immediately; its exit is decoded after its exec, and
    # neither finds it in /proc any more
    subprocess.run(["/bin/sh", "-c", f"/bin/true {marker}; /bin/true"], check=True)
    found = live.wait_for(lambda e: e.get(F.COMMAND_LINE) == f"/bin/true {marker}"
                          and e.category in (PROCESS_CREATION, PROCESS_TERMINATION), since, count=2)
    by_cat = {e.category: e for e in found}
    created = by_cat[PROCESS_CREATION].fields
    assert created[F.IMAGE] == "/usr/bin/true"
    assert created[F.PARENT_IMAGE] == SH
    assert created[F.PARENT_COMMAND_LINE] == f"/bin/sh -c /bin/true {marker}; /bin/true"
    assert created[F.USER] == ME
    ended = by_cat[PROCESS_TERMINATION].fields
    assert ended[F.PROCESS_ID] == created[F.PROCESS_ID]
    assert ended[F.IMAGE] == "/usr/bin/true"
    assert ended[F.PARENT_PROCESS_ID] == created[F.PARENT_PROCESS_ID]


def test_long_argv_is_truncated_and_flagged_not_dropped(live: LiveCapture) -> None:
    marker = f"edr-{uuid.uuid4().hex}"
    args = [marker] + [f"{i:03d}" + "x" * 97 for i in range(99)]
    assert len(args) == 100 and all(len(a) == 100 for a in args[1:])
    since = live.mark()
    subprocess.run(["/bin/true", *args], check=True)
    found = live.wait_for(lambda e: e.category == PROCESS_CREATION
                          and str(e.get(F.COMMAND_LINE, "")).startswith(f"/bin/true {marker} "), since)
    assert len(found) == 1
    f = found[0].fields
    assert f[F.ARGV_TRUNCATED] is True
    assert f[F.IMAGE] == "/usr/bin/true"
    words = f[F.COMMAND_LINE].split(" ")
    # 32 arguments at most, 4 KiB at most, the captured ones intact and in order
    assert len(words) <= 32
    assert len(f[F.COMMAND_LINE]) <= 4096
    assert words[:3] == ["/bin/true", marker, args[1]]
    assert all(w == args[i - 1] for i, w in enumerate(words[1:-1], start=1))


def test_short_argv_is_exact(live: LiveCapture) -> None:
    marker = f"edr-{uuid.uuid4().hex}"
    since = live.mark()
    subprocess.run(["/bin/echo", marker, "two words", ""], check=True, capture_output=True)
    found = live.wait_for(lambda e: e.category == PROCESS_CREATION and marker in str(e.get(F.COMMAND_LINE)),
                          since)
    assert len(found) == 1
    assert found[0].fields[F.COMMAND_LINE] == f"/bin/echo {marker} two words "
    assert found[0].fields[F.ARGV_TRUNCATED] is False


def test_start_time_is_the_fork_time_however_late_the_exec(live: LiveCapture) -> None:
    """The kernel's fork stamp names the process: /proc's start ticks (or one tick later), at fork and exec."""
    marker = f"edr-{uuid.uuid4().hex}"
    since = live.mark()
    proc = subprocess.Popen(["/bin/sh", "-c", f"sleep 1.2; exec /bin/true {marker}"])
    actual = procfs.start_ticks(proc.pid)
    assert actual is not None
    assert proc.wait(timeout=10) == 0
    [created] = live.wait_for(lambda e: e.category == PROCESS_CREATION
                              and e.get(F.COMMAND_LINE) == f"/bin/true {marker}", since)
    [forked] = live.wait_for(lambda e: e.category == PROCESS_FORK and e.get(F.PROCESS_ID) == proc.pid, since)
    assert created.fields[F.PROCESS_ID] == proc.pid
    stamp = created.fields[F.PROCESS_START_TIME]
    assert type(stamp) is int and stamp - actual in (0, 1), (stamp, actual)
    assert forked.fields[F.PROCESS_START_TIME] == stamp
    # more than a second passed between fork and exec; the stamp is the fork's
    assert created.timestamp - forked.timestamp > 1.0


def test_a_setuid_program_runs_as_its_owner_read_from_the_kernels_credentials(live: LiveCapture,
                                                                              tmp_path: Path) -> None:
    """EUID is the new program's effective uid, read by the sensor at exec, not from /proc.

    /proc/<pid> of a setuid program belongs to root, and once it has exited
    (``true`` exits at once) there is nothing left to read there.
    """
    owner = 65534
    if os.geteuid() != 0:
        pytest.skip("making a program setuid to another user needs root")
    if os.statvfs(tmp_path).f_flag & os.ST_NOSUID:
        pytest.skip(f"{tmp_path} is mounted nosuid")
    prog = tmp_path / "edr-setuid-true"
    shutil.copy("/bin/true", prog)
    os.chown(prog, owner, owner)
    os.chmod(prog, 0o4755)
    marker = f"edr-{uuid.uuid4().hex}"
    from_proc = live.decoder.statistics()["euid_from_proc"]
    since = live.mark()
    subprocess.run([str(prog), marker], check=True)
    [created] = live.wait_for(lambda e: e.category == PROCESS_CREATION
                              and e.get(F.COMMAND_LINE) == f"{prog} {marker}", since)
    assert created.fields[F.UID] == os.getuid()
    assert created.fields[F.EUID] == owner
    assert live.decoder.statistics()["euid_from_proc"] == from_proc


# ExitCode / ExitSignal: not Sysmon fields (Sysmon has no exit status); see edr.sources.ebpf.decode
def _ended(live: LiveCapture, since: int, pid: int) -> dict:
    [ended] = live.wait_for(lambda e: e.category == PROCESS_TERMINATION and e.get(F.PROCESS_ID) == pid, since)
    return ended.fields


def test_exit_code_of_sh_exit_7_is_7(live: LiveCapture) -> None:
    since = live.mark()
    proc = subprocess.run(["/bin/sh", "-c", "exit 7"])
    assert proc.returncode == 7
    [created] = live.wait_for(lambda e: e.category == PROCESS_CREATION
                              and e.get(F.COMMAND_LINE) == "/bin/sh -c exit 7", since)
    f = _ended(live, since, created.fields[F.PROCESS_ID])
    assert f["ExitCode"] == 7 and type(f["ExitCode"]) is int
    assert "ExitSignal" not in f


def test_killed_process_reports_the_signal_as_a_shell_would(live: LiveCapture) -> None:
    """SIGKILL: ExitCode 137 (128 + 9, what $? says) and ExitSignal SIGKILL; SIGTERM likewise 143."""
    for sig, name in ((signal.SIGKILL, "SIGKILL"), (signal.SIGTERM, "SIGTERM")):
        since = live.mark()
        proc = subprocess.Popen(["/bin/sleep", "30"])
        live.wait_for(lambda e, pid=proc.pid: e.category == PROCESS_CREATION and e.get(F.PROCESS_ID) == pid,
                      since)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == -sig
        f = _ended(live, since, proc.pid)
        assert (f["ExitCode"], f["ExitSignal"]) == (128 + sig, name)


def test_exit_group_from_another_thread_is_the_process_exit_code(live: LiveCapture) -> None:
    """The leader is torn down by the group exit (it sees SIGKILL): the exit_group's code wins."""
    since = live.mark()
    code = "import os, threading, time; threading.Thread(target=lambda: os._exit(3)).start(); time.sleep(30)"
    proc = subprocess.run([sys.executable, "-c", code], timeout=20)
    assert proc.returncode == 3
    [created] = live.wait_for(lambda e: e.category == PROCESS_CREATION
                              and e.get(F.COMMAND_LINE) == f"{sys.executable} -c {code}", since)
    f = _ended(live, since, created.fields[F.PROCESS_ID])
    assert f["ExitCode"] == 3 and "ExitSignal" not in f


def test_broken_pipe_reports_sigpipe(live: LiveCapture) -> None:
    since = live.mark()
    subprocess.run(["/bin/sh", "-c", "/usr/bin/yes | /usr/bin/head -n 1 > /dev/null"], check=True)
    [yes] = live.wait_for(lambda e: e.category == PROCESS_CREATION and e.get(F.COMMAND_LINE) == "/usr/bin/yes",
                          since)
    f = _ended(live, since, yes.fields[F.PROCESS_ID])
    assert (f["ExitCode"], f["ExitSignal"]) == (141, "SIGPIPE")
