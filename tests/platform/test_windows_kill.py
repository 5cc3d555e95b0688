"""Response on Windows: the identity of the alerted process is verified on its handle before TerminateProcess.

The pure checks (:func:`edr.platform.windows.kill._identity_problem`,
:func:`~edr.platform.windows.kill.same_image`) are tested directly; the flow
of :func:`~edr.platform.windows.kill.terminate` runs against a process
table standing in for the kernel32 calls it makes through
:mod:`edr.platform.windows.processes` (OpenProcess, GetProcessTimes,
QueryFullProcessImageNameW, WaitForSingleObject, TerminateProcess), so the
order (identity first, then the kill, on one handle) is what is checked.

Windows has no exec: a process keeps its image for life. What the check
must catch instead is a PID reused by a new process, most dangerously one
running the very same image (a service or shell restarted): only the
creation time tells them apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from edr.platform.kill import FAILED, GONE, MISMATCH, TERMINATED
from edr.platform.windows import kill
from edr.platform.windows.kill import START_SLACK_SECS, _identity_problem, same_image
from edr.platform.windows.processes import EPOCH_FILETIME, ProcessGone, filetime_to_epoch

CMD = "C:\\Windows\\System32\\cmd.exe"
CMD_NATIVE = "\\Device\\HarddiskVolume3\\Windows\\System32\\cmd.exe"
#: 2026-01-01T00:00:00Z as a FILETIME.
CREATED = EPOCH_FILETIME + 1767225600 * 10_000_000
SECOND = 10_000_000  # FILETIME units


def test_a_reused_pid_running_the_same_image_is_not_the_alerted_process() -> None:
    later = CREATED + 5 * SECOND  # cmd.exe exited, a new cmd.exe got its PID five seconds later
    assert _identity_problem(later, CMD, CMD, CREATED, None, None) == f"creation time {later} != {CREATED} (pid reused)"
    # alerts that carry only a start time in seconds, or only the event's time
    epoch = filetime_to_epoch(CREATED)
    assert _identity_problem(later, CMD, CMD, None, None, epoch) == \
        "creation time differs from the alerted process's (pid reused)"
    assert _identity_problem(later, CMD, CMD, None, epoch + 1.0, None) == \
        "process created after the alerted event (pid reused)"
    # the same process, seen within the slack
    assert _identity_problem(CREATED, CMD, CMD, None, epoch + START_SLACK_SECS, None) is None


def test_the_creation_time_is_checked_before_the_image() -> None:
    # a different image and a different creation time: the PID was reused (the creation time says so first)
    assert _identity_problem(CREATED + 1, "C:\\Temp\\evil.exe", CMD, CREATED, None, None) == \
        f"creation time {CREATED + 1} != {CREATED} (pid reused)"
    # the same creation time and another image cannot be the same process: refused all the same
    assert _identity_problem(CREATED, "C:\\Temp\\evil.exe", CMD, CREATED, None, None) == \
        f"executable 'C:\\\\Temp\\\\evil.exe' is not {CMD!r}"


@pytest.mark.parametrize(("path", "image", "same"), [
    (CMD, CMD, True),
    (CMD, "c:/windows/system32/CMD.EXE", True),
    (CMD, "\\\\?\\C:\\Windows\\System32\\cmd.exe", True),  # a long-path prefix names the same file
    ("\\??\\C:\\Windows\\System32\\cmd.exe", CMD, True),  # the object manager's prefix, as in some events
    (CMD_NATIVE, CMD_NATIVE.upper(), True),
    (CMD, "C:\\Windows\\System32\\cmd.exe.bak", False),
    (CMD, "C:\\Windows\\SysWOW64\\cmd.exe", False),
    (CMD, "cmd.exe", False),  # a bare name is not an identity
])
def test_same_image(path: str, image: str, same: bool) -> None:
    assert same_image(path, image) is same


@attrs.define
class Proc:
    created: int
    path: str
    native: str
    exited: bool = False
    terminated: bool = False


class Kernel:
    """A process table answering the calls terminate() makes, in the order it makes them."""

    def __init__(self, procs: dict[int, Proc], *, denied: bool = False, terminate_fails: bool = False,
                 times_fail: bool = False) -> None:
        self.procs = procs
        self.denied = denied
        self.terminate_fails = terminate_fails
        self.times_fail = times_fail
        self.calls: list[tuple[Any, ...]] = []

    @contextlib.contextmanager
    def process_handle(self, pid: int, access: int) -> Iterator[Proc]:
        self.calls.append(("OpenProcess", pid, access))
        if self.denied:
            raise PermissionError(f"OpenProcess({pid}) denied (error 5)")
        proc = self.procs.get(pid)
        if proc is None:
            raise ProcessGone(pid)
        try:
            yield proc
        finally:
            self.calls.append(("CloseHandle", pid))

    def creation_filetime(self, handle: Proc) -> int:
        self.calls.append(("GetProcessTimes",))
        if self.times_fail:
            raise OSError("GetProcessTimes failed (error 6)")
        return handle.created

    def image_path(self, handle: Proc, native: bool = False) -> str:
        self.calls.append(("QueryFullProcessImageNameW", native))
        return handle.native if native else handle.path

    def has_exited(self, handle: Proc) -> bool:
        return handle.exited

    def kernel32(self) -> Any:
        table = self

        class K32:
            def TerminateProcess(self, handle: Proc, code: int) -> int:
                table.calls.append(("TerminateProcess", code))
                if table.terminate_fails:
                    return 0
                handle.terminated = handle.exited = True
                return 1

            def WaitForSingleObject(self, handle: Proc, ms: int) -> int:
                table.calls.append(("WaitForSingleObject", ms))
                return 0

        return K32()

    def last_error(self) -> int:
        return 5


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    table = Kernel({4242: Proc(CREATED, CMD, CMD_NATIVE)})
    for name in ("process_handle", "creation_filetime", "image_path", "has_exited", "kernel32", "last_error"):
        monkeypatch.setattr(kill, name, getattr(table, name))
    return table


def test_the_alerted_process_is_terminated_through_the_handle_it_was_verified_on(kernel: Kernel) -> None:
    result = kill.terminate(4242, CMD, CREATED, None)
    assert result.outcome == TERMINATED and kernel.procs[4242].terminated
    names = [c[0] for c in kernel.calls]
    assert names == ["OpenProcess", "GetProcessTimes", "QueryFullProcessImageNameW", "TerminateProcess",
                     "WaitForSingleObject", "CloseHandle"]
    assert kernel.calls[0][2] == kill.PROCESS_TERMINATE | kill.PROCESS_QUERY_LIMITED_INFORMATION | kill.SYNCHRONIZE


def test_a_reused_pid_is_never_terminated(kernel: Kernel) -> None:
    kernel.procs[4242] = Proc(CREATED + 3 * SECOND, CMD, CMD_NATIVE)  # a new cmd.exe with the alerted PID
    result = kill.terminate(4242, CMD, CREATED, None)
    assert result.outcome == MISMATCH and "pid reused" in result.detail
    assert not kernel.procs[4242].terminated
    assert "TerminateProcess" not in [c[0] for c in kernel.calls]
    assert kernel.calls[-1] == ("CloseHandle", 4242)


def test_an_alert_naming_the_image_by_its_device_path_is_compared_with_the_native_name(kernel: Kernel) -> None:
    # the ETW normalizer keeps \Device\HarddiskVolumeN\... when it could not map the volume to a drive letter
    result = kill.terminate(4242, CMD_NATIVE, CREATED, None)
    assert result.outcome == TERMINATED
    assert ("QueryFullProcessImageNameW", True) in kernel.calls
    kernel.procs[4242] = Proc(CREATED, "C:\\Temp\\cmd.exe", "\\Device\\HarddiskVolume3\\Temp\\cmd.exe")
    result = kill.terminate(4242, CMD_NATIVE, CREATED, None)
    assert result.outcome == MISMATCH and not kernel.procs[4242].terminated


def test_gone_exited_denied_and_failed(kernel: Kernel) -> None:
    assert kill.terminate(999, CMD, CREATED, None) == kill.KillResult(GONE, "no such process")
    kernel.procs[4242].exited = True
    assert kill.terminate(4242, CMD, CREATED, None) == kill.KillResult(GONE, "exited before the kill")
    kernel.procs[4242].exited = False
    kernel.terminate_fails = True
    assert kill.terminate(4242, CMD, CREATED, None) == kill.KillResult(FAILED, "TerminateProcess failed (error 5)")
    kernel.terminate_fails, kernel.times_fail = False, True
    assert kill.terminate(4242, CMD, CREATED, None) == kill.KillResult(FAILED, "GetProcessTimes failed (error 6)")
    kernel.times_fail, kernel.denied = False, True
    assert kill.terminate(4242, CMD, CREATED, None) == kill.KillResult(FAILED, "OpenProcess(4242) denied (error 5)")
    assert not kernel.procs[4242].terminated


def test_without_any_time_to_verify_nothing_is_terminated(kernel: Kernel) -> None:
    result = kill.terminate(4242, CMD, None, None)
    assert result == kill.KillResult(MISMATCH, "no start time or event time to verify the process identity")
    assert not kernel.procs[4242].terminated
