"""Process termination on Windows: OpenProcess, identity check on that handle, TerminateProcess.

The handle pins the process object, so the checks (creation time, image
path) and the kill all apply to one process even if its id is reused.
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
    if path.lower().replace("/", "\\") != image.lower().replace("/", "\\"):
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
                path = image_path(handle)
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
