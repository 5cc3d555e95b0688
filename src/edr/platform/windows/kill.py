"""Process termination on Windows: OpenProcess, identity check on that handle, TerminateProcess.

The handle pins the process object, so the checks (creation time, image
path) and the kill all apply to one process even if its id is reused.
Import-safe everywhere: ctypes' Windows bits are touched only when called.
"""

from __future__ import annotations

from typing import Any, Final

from edr.platform.kill import FAILED, GONE, MISMATCH, TERMINATED, KillResult

PROCESS_TERMINATE: Final = 0x0001
PROCESS_QUERY_LIMITED_INFORMATION: Final = 0x1000
SYNCHRONIZE: Final = 0x00100000
ERROR_INVALID_PARAMETER: Final = 87
WAIT_OBJECT_0: Final = 0
#: FILETIME of the Unix epoch (100 ns intervals since 1601-01-01).
EPOCH_FILETIME: Final = 116444736000000000
START_SLACK_SECS: Final = 2.0


def filetime_to_epoch(filetime: int) -> float:
    """A FILETIME as seconds since the Unix epoch."""
    return (filetime - EPOCH_FILETIME) / 1e7


def _identity_problem(created: int, path: str, image: str, start_ticks: int | None,
                      event_time: float | None, start_epoch: float | None) -> str | None:
    if start_ticks is not None:
        if created != start_ticks:
            return f"creation time {created} != {start_ticks} (pid reused)"
    elif start_epoch is not None:
        if abs(filetime_to_epoch(created) - start_epoch) > 1.0:
            return "creation time differs from the alerted process's (pid reused)"
    elif event_time is not None:
        if filetime_to_epoch(created) > event_time + START_SLACK_SECS:
            return "process created after the alerted event (pid reused)"
    else:
        return "no start time or event time to verify the process identity"
    if path.lower().replace("/", "\\") != image.lower().replace("/", "\\"):
        return f"executable {path!r} is not {image!r}"
    return None


def terminate(pid: int, image: str, start_ticks: int | None, event_time: float | None,
              start_epoch: float | None = None) -> KillResult:
    """TerminateProcess ``pid`` if it is still the process alerted on (creation time and image)."""
    import ctypes
    from ctypes import wintypes

    kernel32: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    access = PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE
    handle = kernel32.OpenProcess(access, False, pid)
    if not handle:
        err = ctypes.get_last_error()  # type: ignore[attr-defined]
        if err == ERROR_INVALID_PARAMETER:
            return KillResult(GONE, "no such process")
        return KillResult(FAILED, f"OpenProcess failed (error {err})")
    try:
        creation, exit_, kernel, user = (wintypes.FILETIME() for _ in range(4))
        if not kernel32.GetProcessTimes(handle, ctypes.byref(creation), ctypes.byref(exit_),
                                        ctypes.byref(kernel), ctypes.byref(user)):
            return KillResult(FAILED, f"GetProcessTimes failed (error {ctypes.get_last_error()})")  # type: ignore[attr-defined]
        created = (creation.dwHighDateTime << 32) | creation.dwLowDateTime
        buf = ctypes.create_unicode_buffer(32768)
        size = wintypes.DWORD(len(buf))
        if not kernel32.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size)):
            return KillResult(FAILED, f"QueryFullProcessImageNameW failed (error {ctypes.get_last_error()})")  # type: ignore[attr-defined]
        if kernel32.WaitForSingleObject(handle, 0) == WAIT_OBJECT_0:
            return KillResult(GONE, "exited before the kill")
        problem = _identity_problem(created, buf.value, image, start_ticks, event_time, start_epoch)
        if problem is not None:
            return KillResult(MISMATCH, problem)
        if not kernel32.TerminateProcess(handle, 1):
            return KillResult(FAILED, f"TerminateProcess failed (error {ctypes.get_last_error()})")  # type: ignore[attr-defined]
        kernel32.WaitForSingleObject(handle, 2000)
        return KillResult(TERMINATED)
    finally:
        kernel32.CloseHandle(handle)
