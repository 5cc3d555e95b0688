"""Process termination on Windows: OpenProcess, identity check on that handle, TerminateProcess.

The handle pins the process object, so the checks (creation time, image
path) and the kill all apply to one process even if its id is reused.
Windows has no exec (a process keeps its image for life), so the danger is
a PID reused by a new process, possibly running the same image: the
creation time is checked first and decides; the image must match too.
Import-safe everywhere: ctypes' Windows bits are touched only when called.
"""

from __future__ import annotations

from typing import Final

from edr.platform.kill import FAILED, GONE, MISMATCH, TERMINATED, KillResult
from edr.platform.windows.processes import (
    PROCESS_QUERY_LIMITED_INFORMATION,
    PROCESS_TERMINATE,
    SYNCHRONIZE,
    ProcessGone,
    creation_filetime,
    filetime_to_epoch,
    has_exited,
    image_path,
    kernel32,
    last_error,
    process_handle,
)

START_SLACK_SECS: Final = 2.0
#: How long to wait for the killed process to be gone (milliseconds).
EXIT_WAIT_MS: Final = 2000


#: Prefixes that name the same file as the path after them: Win32 long paths, the object manager's DOS devices.
_PATH_PREFIXES: Final = ("\\\\?\\", "\\??\\")


def _comparable(path: str) -> str:
    path = path.replace("/", "\\").lower()
    for prefix in _PATH_PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def is_device_path(image: str) -> bool:
    """Whether ``image`` is an NT device path (``\\Device\\HarddiskVolume3\\...``) rather than a Win32 one."""
    return image.replace("/", "\\").lower().startswith("\\device\\")


def same_image(path: str, image: str) -> bool:
    """Whether the process's image ``path`` is the alerted ``image`` (case, slashes and prefixes aside)."""
    return _comparable(path) == _comparable(image)


def _identity_problem(created: int, path: str, image: str, start_ticks: int | None,
                      event_time: float | None, start_epoch: float | None) -> str | None:
    """Why the process created at FILETIME ``created`` running ``path`` is not the alerted one, or None."""
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
    if not same_image(path, image):
        return f"executable {path!r} is not {image!r}"
    return None


def terminate(pid: int, image: str, start_ticks: int | None, event_time: float | None,
              start_epoch: float | None = None) -> KillResult:
    """TerminateProcess ``pid`` if it is still the process alerted on (creation time and image)."""
    access = PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE
    try:
        with process_handle(pid, access) as handle:
            try:
                created = creation_filetime(handle)
                # an alert keeps the device path when its volume had no drive letter: compare like with like
                path = image_path(handle, native=is_device_path(image))
            except OSError as exc:
                return KillResult(FAILED, str(exc))
            if has_exited(handle):
                return KillResult(GONE, "exited before the kill")
            problem = _identity_problem(created, path, image, start_ticks, event_time, start_epoch)
            if problem is not None:
                return KillResult(MISMATCH, problem)
            k32 = kernel32()
            if not k32.TerminateProcess(handle, 1):
                return KillResult(FAILED, f"TerminateProcess failed (error {last_error()})")
            k32.WaitForSingleObject(handle, EXIT_WAIT_MS)
            return KillResult(TERMINATED)
    except ProcessGone:
        return KillResult(GONE, "no such process")
    except OSError as exc:  # OpenProcess refused (PermissionError included)
        return KillResult(FAILED, str(exc))
