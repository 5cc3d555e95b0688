"""Every facade function on Linux, against real processes and files (and a real unprivileged user)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edr.platform import LINUX, current, for_platform
from edr.platform.kill import GONE, MISMATCH, TERMINATED
from edr.platform.linux import LinuxPlatform, systemd
from edr.platform.protected import AGENT, INIT
from edr.platform.windows import WindowsPlatform
from tests.platform.test_posix_private_files import NOBODY, as_root

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux platform")

#: A pid far above pid_max's default: no process has it.
GONE_PID = 2**22 + 17


@pytest.fixture
def child(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping Python child with a known command line and working directory, ready when yielded."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys,time; print('ready', flush=True); time.sleep(60)",
                             "edr-marker"], cwd=tmp_path, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_current_is_linux_and_chosen_once() -> None:
    platform = current()
    assert isinstance(platform, LinuxPlatform) and platform is current()
    assert (platform.name, platform.init_pid, platform.paths_ignore_case) == (LINUX, 1, False)
    assert isinstance(for_platform("linux"), LinuxPlatform) and isinstance(for_platform("win32"), WindowsPlatform)
    assert platform.trusted_paths == ("/usr/bin/", "/usr/sbin/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/",
                                      "/bin/", "/sbin/", "/lib/", "/lib64/")


def test_process_facts_of_a_running_child(child: subprocess.Popen[bytes], tmp_path: Path) -> None:
    platform = current()
    assert child.pid in platform.running_pids() and os.getpid() in platform.running_pids()
    assert platform.executable(child.pid) == os.path.realpath(sys.executable)
    ticks = platform.start_ticks(child.pid)
    assert isinstance(ticks, int)
    # psutil's create_time is the same field: boot time + ticks / USER_HZ
    assert abs(psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK") - psutil.Process(child.pid).create_time()) < 0.02
    rss = platform.resident_bytes(child.pid)
    assert rss is not None and rss > 1 << 20
    assert abs(rss - psutil.Process(child.pid).memory_info().rss) < 1 << 20
    [snap] = [p for p in platform.running_processes() if p.pid == child.pid]
    assert (snap.ppid, snap.image, snap.cwd, snap.uid) == (os.getpid(), os.path.realpath(sys.executable),
                                                           str(tmp_path), os.getuid())
    assert snap.command_line.endswith(" edr-marker") and snap.command_line.startswith(sys.executable)
    assert snap.start_time is not None and abs(snap.start_time - psutil.Process(child.pid).create_time()) < 1.0
    assert snap.user is None  # named from the uid by the enricher's cache


def test_a_process_that_is_gone_is_none_never_an_error(child: subprocess.Popen[bytes]) -> None:
    platform = current()
    child.kill()
    child.wait()
    assert child.pid not in platform.running_pids()
    assert platform.executable(child.pid) is None
    assert platform.start_ticks(child.pid) is None
    assert platform.resident_bytes(child.pid) is None
    assert child.pid not in {p.pid for p in platform.running_processes()}


def test_kernel_threads_are_listed_as_pids_but_not_as_processes() -> None:
    platform = current()
    assert 2 in platform.running_pids()  # kthreadd
    assert platform.executable(2) is None
    assert 2 not in {p.pid for p in platform.running_processes()}


@as_root
def test_another_users_view_of_a_root_process_is_a_permission_error() -> None:
    """Without CAP_SYS_PTRACE /proc/1/exe cannot be read: that is not "gone" (the responder must not think so)."""
    code = ("from edr.platform import current\n"
            "try:\n    current().executable(1)\nexcept PermissionError:\n    print('denied')\n"
            "print(current().start_ticks(1) is not None)\n")
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                           "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.split() == ["denied", "True"], done.stderr


def test_user_names_from_the_passwd_database() -> None:
    import pwd

    platform = current()
    assert platform.user_name(0) == "root"
    assert platform.user_name(NOBODY) == pwd.getpwuid(NOBODY).pw_name
    assert platform.user_name(2**31 - 7) is None  # no such user
    assert platform.user_name(2**40) is None  # beyond uid_t: None, not OverflowError


def test_the_scan_target_opens_the_file_the_descriptor_holds_not_what_the_path_names_now(tmp_path: Path) -> None:
    path = tmp_path / "scanned"
    path.write_bytes(b"the file that was opened")
    with open(path, "rb") as fh:
        replacement = tmp_path / "replacement"
        replacement.write_bytes(b"planted after the open")
        os.replace(replacement, path)
        target = current().scan_target(fh.fileno(), str(path))
        assert target == f"/proc/self/fd/{fh.fileno()}"
        with open(target, "rb") as again:
            assert again.read() == b"the file that was opened"
    assert path.read_bytes() == b"planted after the open"


def test_terminate_checks_identity_then_kills(child: subprocess.Popen[bytes]) -> None:
    platform = current()
    image = platform.executable(child.pid)
    ticks = platform.start_ticks(child.pid)
    assert image is not None and ticks is not None
    assert platform.terminate(child.pid, image, ticks - 1, None).outcome == MISMATCH  # an older process's stamp
    assert platform.terminate(child.pid, "/usr/bin/other", ticks, None).outcome == MISMATCH
    assert child.poll() is None
    assert platform.terminate(child.pid, image, ticks, None).outcome == TERMINATED
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert platform.terminate(child.pid, image, ticks, None).outcome == GONE


def test_protected_processes_are_the_agent_its_ancestors_and_init() -> None:
    protected = {p.pid: p.roles for p in current().protected_processes({})}
    assert AGENT in protected[os.getpid()]
    assert os.getppid() in protected
    assert INIT in protected[1]


def test_resource_usage_is_this_process() -> None:
    platform = current()
    before = platform.resource_usage()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = platform.resource_usage()
    assert after.cpu_seconds >= before.cpu_seconds + 0.15
    assert abs(after.rss_bytes - psutil.Process().memory_info().rss) < 8 << 20
    assert after.peak_rss_bytes >= 1 << 20


def test_lock_file_is_exclusive_per_open_file_and_released_on_close(tmp_path: Path) -> None:
    platform = current()
    path = tmp_path / "lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR)
    try:
        assert platform.lock_file(first) is True
        assert platform.lock_file(second) is False  # another open file description, even in this process
        held_elsewhere = subprocess.run([sys.executable, "-c", "import os,sys\nfrom edr.platform import current\n"
                                         f"print(current().lock_file(os.open({str(path)!r}, os.O_RDWR)))"],
                                        capture_output=True, text=True, timeout=60)
        assert held_elsewhere.stdout.strip() == "False", held_elsewhere.stderr
        os.close(first)
        first = -1
        assert platform.lock_file(second) is True
    finally:
        for fd in (first, second):
            if fd >= 0:
                os.close(fd)
    with pytest.raises(OSError):
        platform.lock_file(second)  # closed: a real error, not "held"


def test_the_service_notifier_is_sd_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    service = current().service
    assert service is systemd
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert service.notify_ready() is False and service.watchdog_interval() is None
