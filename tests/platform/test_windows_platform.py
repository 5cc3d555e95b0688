"""The Windows platform's parts that run anywhere: psutil look-ups for real, the pure identity check, the rest by shape.

What needs Windows itself (OpenProcess, TerminateProcess, msvcrt.locking,
pywin32) is imported inside functions: here it is only imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edr.platform.protected import AGENT, INIT, PARENT
from edr.platform.windows import NoServiceNotifications, WindowsPlatform, file_lock, processes
from edr.platform.windows.kill import START_SLACK_SECS, _identity_problem
from edr.platform.windows.processes import EPOCH_FILETIME, filetime_to_epoch

CMD = "C:\\Windows\\System32\\cmd.exe"
#: 2026-01-01T00:00:00Z as a FILETIME.
CREATED = EPOCH_FILETIME + 1767225600 * 10_000_000


@pytest.fixture
def child(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)",
                             "two words", 'a "quoted" arg'], cwd=tmp_path, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_the_windows_answers_that_need_no_call() -> None:
    platform = WindowsPlatform()
    assert (platform.name, platform.init_pid, platform.paths_ignore_case) == ("windows", None, True)
    assert platform.trusted_paths == ("C:\\Windows\\", "C:\\Program Files\\", "C:\\Program Files (x86)\\")
    assert platform.user_name(0) is None  # SIDs, not uids: the ETW sensor's SID cache names users
    assert platform.scan_target(7, "C:\\x\\y.exe") == "C:\\x\\y.exe"


def test_the_service_control_manager_takes_no_notifications() -> None:
    service = WindowsPlatform().service
    assert isinstance(service, NoServiceNotifications)
    assert [service.notify_ready(), service.notify_reloading(5), service.notify_stopping(),
            service.notify_watchdog(), service.watchdog_interval()] == [False, False, False, False, None]


def test_psutil_look_ups_on_a_real_process(child: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """psutil answers these on Windows as on Linux: the same code runs here against a real child."""
    platform = WindowsPlatform()
    assert child.pid in platform.running_pids()
    rss = platform.resident_bytes(child.pid)
    assert rss is not None and rss == pytest.approx(psutil.Process(child.pid).memory_info().rss, abs=1 << 20)
    [snap] = [p for p in platform.running_processes() if p.pid == child.pid]
    assert (snap.ppid, snap.image, snap.cwd) == (os.getpid(), os.path.realpath(sys.executable), str(tmp_path))
    # quoted back as CommandLineToArgvW splits it, so Sigma sees what Windows would show
    assert snap.command_line.endswith(' "two words" "a \\"quoted\\" arg"')
    assert snap.user == psutil.Process(child.pid).username() and snap.uid is None
    assert snap.start_time == pytest.approx(psutil.Process(child.pid).create_time())
    child.kill()
    child.wait()
    assert platform.resident_bytes(child.pid) is None
    assert child.pid not in {p.pid for p in platform.running_processes()}


def test_a_snapshot_needs_only_what_psutil_could_read() -> None:
    denied = {"pid": 612, "ppid": 4, "exe": None, "cmdline": None, "username": None, "cwd": None, "create_time": None}
    snap = processes.snapshot(denied)
    assert snap is not None and (snap.image, snap.command_line, snap.user, snap.cwd, snap.start_time) == \
        ("", "", None, None, None)
    assert processes.snapshot({"pid": None}) is None


def test_protected_processes_have_no_init_on_windows() -> None:
    protected = {p.pid: p.roles for p in WindowsPlatform().protected_processes({})}
    assert AGENT in protected[os.getpid()] and PARENT in protected[os.getppid()]
    assert not any(INIT in roles for roles in protected.values())


def test_resource_usage_reads_the_working_set_and_its_peak() -> None:
    memory = namedtuple("pmem", "rss vms peak_wset")(rss=50 << 20, vms=90 << 20, peak_wset=70 << 20)
    cpu = namedtuple("pcputimes", "user system")(user=1.25, system=0.5)

    class Process:
        def memory_info(self) -> object:
            return memory

        def cpu_times(self) -> object:
            return cpu

    usage = processes.resource_usage(Process())
    assert (usage.rss_bytes, usage.peak_rss_bytes, usage.cpu_seconds) == (50 << 20, 70 << 20, 1.75)


def test_identity_check_by_creation_time_then_image() -> None:
    assert _identity_problem(CREATED, CMD, CMD, CREATED, None, None) is None
    assert _identity_problem(CREATED, CMD, "c:/windows/system32/CMD.EXE", CREATED, None, None) is None
    assert _identity_problem(CREATED + 1, CMD, CMD, CREATED, None, None) == \
        f"creation time {CREATED + 1} != {CREATED} (pid reused)"
    assert _identity_problem(CREATED, "C:\\Temp\\cmd.exe", CMD, CREATED, None, None) == \
        f"executable 'C:\\\\Temp\\\\cmd.exe' is not {CMD!r}"


def test_identity_check_by_epoch_or_event_time_when_no_creation_time_was_recorded() -> None:
    epoch = filetime_to_epoch(CREATED)
    assert epoch == 1767225600.0
    assert _identity_problem(CREATED, CMD, CMD, None, None, epoch + 0.9) is None
    assert _identity_problem(CREATED, CMD, CMD, None, None, epoch + 1.1) == \
        "creation time differs from the alerted process's (pid reused)"
    assert _identity_problem(CREATED, CMD, CMD, None, epoch - START_SLACK_SECS + 0.1, None) is None
    assert _identity_problem(CREATED, CMD, CMD, None, epoch - START_SLACK_SECS - 0.1, None) == \
        "process created after the alerted event (pid reused)"
    assert _identity_problem(CREATED, CMD, CMD, None, None, None) == \
        "no start time or event time to verify the process identity"


def test_the_lock_stays_clear_of_the_data() -> None:
    """msvcrt locks are mandatory: the locked byte must lie past the PID the holder writes, below 2**31."""
    assert 1 << 20 < file_lock.LOCK_OFFSET < 2**31 - 1
    assert callable(file_lock.lock_file)
