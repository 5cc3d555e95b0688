"""Windows process facts: Win32 process handles (creation time, image) and psutil (lists, memory).

Import-safe everywhere: ``ctypes.WinDLL`` is reached only when a function
that needs a process handle is called. The psutil functions work on any
platform psutil supports, which is how they are tested on Linux.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any, Final

import psutil

from edr.platform.facts import ProcessSnapshot, ResourceUsage

PROCESS_TERMINATE: Final = 0x0001
PROCESS_QUERY_LIMITED_INFORMATION: Final = 0x1000
SYNCHRONIZE: Final = 0x00100000
ERROR_ACCESS_DENIED: Final = 5
ERROR_INVALID_PARAMETER: Final = 87
WAIT_OBJECT_0: Final = 0
#: QueryFullProcessImageNameW's flag for the NT device path instead of the Win32 one.
PROCESS_NAME_NATIVE: Final = 0x00000001
#: FILETIME of the Unix epoch (100 ns intervals since 1601-01-01).
EPOCH_FILETIME: Final = 116444736000000000
#: Longest image path QueryFullProcessImageNameW is given room for (the NT path limit).
MAX_IMAGE_PATH: Final = 32768


def filetime_to_epoch(filetime: int) -> float:
    """A FILETIME as seconds since the Unix epoch."""
    return (filetime - EPOCH_FILETIME) / 1e7


class ProcessGone(Exception):
    """OpenProcess found no process with that id."""


def kernel32() -> Any:
    """kernel32.dll with per-thread last-error capture (Windows only)."""
    import ctypes

    return ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined, unused-ignore]


def last_error() -> int:
    """The Win32 error of the last failed kernel32 call on this thread."""
    import ctypes

    return int(ctypes.get_last_error())  # type: ignore[attr-defined, unused-ignore]


@contextlib.contextmanager
def process_handle(pid: int, access: int) -> Iterator[int]:
    """An open handle of ``pid`` with ``access``, closed on exit.

    Raises :class:`ProcessGone` when there is no such process,
    PermissionError when it may not be opened, OSError otherwise. The
    handle pins the process object: whatever is done through it applies to
    this process even if its id is reused meanwhile.
    """
    k32 = kernel32()
    handle = k32.OpenProcess(access, False, pid)
    if not handle:
        err = last_error()
        if err == ERROR_INVALID_PARAMETER:
            raise ProcessGone(pid)
        if err == ERROR_ACCESS_DENIED:
            raise PermissionError(f"OpenProcess({pid}) denied (error {err})")
        raise OSError(f"OpenProcess({pid}) failed (error {err})")
    try:
        yield handle
    finally:
        k32.CloseHandle(handle)


def creation_filetime(handle: int) -> int:
    """The process's creation time (FILETIME: 100 ns intervals since 1601); OSError on failure."""
    import ctypes
    from ctypes import wintypes

    creation, exit_, kernel, user = (wintypes.FILETIME() for _ in range(4))
    if not kernel32().GetProcessTimes(handle, ctypes.byref(creation), ctypes.byref(exit_),
                                      ctypes.byref(kernel), ctypes.byref(user)):
        raise OSError(f"GetProcessTimes failed (error {last_error()})")
    return (creation.dwHighDateTime << 32) | creation.dwLowDateTime


def image_path(handle: int, native: bool = False) -> str:
    """The process's image as a Win32 path (``C:\\Windows\\System32\\cmd.exe``); OSError on failure.

    With ``native``, the NT device path (``\\Device\\HarddiskVolume3\\Windows\\...``,
    ``PROCESS_NAME_NATIVE``): what an event carries when its volume had no drive letter.
    """
    import ctypes
    from ctypes import wintypes

    buf = ctypes.create_unicode_buffer(MAX_IMAGE_PATH)
    size = wintypes.DWORD(len(buf))
    if not kernel32().QueryFullProcessImageNameW(handle, PROCESS_NAME_NATIVE if native else 0, buf,
                                                 ctypes.byref(size)):
        raise OSError(f"QueryFullProcessImageNameW failed (error {last_error()})")
    return str(buf.value)


def has_exited(handle: int) -> bool:
    """Whether the process has exited (its handle is signalled); the handle needs SYNCHRONIZE."""
    return bool(kernel32().WaitForSingleObject(handle, 0) == WAIT_OBJECT_0)


def start_ticks(pid: int) -> int | None:
    """The creation FILETIME of ``pid`` (what the ETW normalizer stamps as ``ProcessStartTime``); None if gone."""
    try:
        with process_handle(pid, PROCESS_QUERY_LIMITED_INFORMATION) as handle:
            return creation_filetime(handle)
    except (ProcessGone, OSError):
        return None


def executable(pid: int) -> str | None:
    """The Win32 path of the image ``pid`` runs; None if gone; PermissionError if it may not be opened."""
    try:
        with process_handle(pid, PROCESS_QUERY_LIMITED_INFORMATION) as handle:
            return image_path(handle)
    except PermissionError:
        raise
    except (ProcessGone, OSError):
        return None


def running_pids() -> list[int]:
    """Every process id (psutil's snapshot of the process table)."""
    try:
        return list(psutil.pids())
    except (psutil.Error, OSError):
        return []


def resident_bytes(pid: int) -> int | None:
    """The working set of ``pid`` in bytes (psutil's ``rss``); None if gone or not readable."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None


_SNAPSHOT_ATTRS: Final = ["pid", "ppid", "exe", "cmdline", "username", "cwd", "create_time"]


def snapshot(info: dict[str, Any]) -> ProcessSnapshot | None:
    """A :class:`ProcessSnapshot` from psutil's ``as_dict`` of :data:`_SNAPSHOT_ATTRS` (None without a pid)."""
    pid = info.get("pid")
    if not isinstance(pid, int):
        return None
    argv = info.get("cmdline") or []
    return ProcessSnapshot(
        pid=pid,
        ppid=info.get("ppid") or 0,
        image=info.get("exe") or "",
        # psutil splits the command line as CommandLineToArgvW does; list2cmdline quotes it back the same way
        command_line=subprocess.list2cmdline(argv),
        user=info.get("username") or None,
        cwd=info.get("cwd") or None,
        start_time=info.get("create_time") or None,
    )


def running_processes() -> list[ProcessSnapshot]:
    """Every process psutil lists, with what it may read of each (a denied field is left empty)."""
    found = []
    for proc in psutil.process_iter(_SNAPSHOT_ATTRS, ad_value=None):
        snap = snapshot(proc.info)
        if snap is not None and snap.pid > 4:  # the Idle and System processes have no image of their own
            found.append(snap)
    return found


def resource_usage(process: Any = None) -> ResourceUsage:
    """This process's working set, peak working set and CPU seconds (psutil; ``process`` for tests)."""
    proc: Any = psutil.Process() if process is None else process
    memory = proc.memory_info()
    cpu = proc.cpu_times()
    return ResourceUsage(rss_bytes=int(memory.rss), peak_rss_bytes=int(memory.peak_wset),
                         cpu_seconds=float(cpu.user + cpu.system))
