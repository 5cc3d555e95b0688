"""Windows: Win32 process handles, TerminateProcess, psutil, ACLs through pywin32, msvcrt locks.

:class:`WindowsPlatform` is :func:`edr.platform.current` on Windows. Every
module here imports on any platform (Windows-only modules are imported
inside the functions that call them), so Linux tests import and exercise
what does not need Windows itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from edr.platform.facade import ServiceNotifier
from edr.platform.facts import ProcessSnapshot, ResourceUsage
from edr.platform.kill import KillResult
from edr.platform.protected import ProtectedProcess, walk_protected
from edr.platform.windows import file_lock, processes
from edr.platform.windows.kill import terminate as _terminate

#: The allowlist prefixes when ``allowlist.paths`` is unset.
TRUSTED_PATHS: Final = ("C:\\Windows\\", "C:\\Program Files\\", "C:\\Program Files (x86)\\")


class NoServiceNotifications:
    """A service manager that takes no notifications: every call says nothing was delivered (False).

    The service control manager learns a Windows service's state from the
    service itself (pywin32's ``ServiceFramework.ReportServiceStatus``), not
    from messages the pipeline sends, and has no watchdog to ping.
    """

    def notify_ready(self) -> bool:
        """Nothing to deliver."""
        return False

    def notify_reloading(self, monotonic_usec: int | None = None) -> bool:
        """Nothing to deliver."""
        return False

    def notify_stopping(self) -> bool:
        """Nothing to deliver."""
        return False

    def notify_watchdog(self) -> bool:
        """Nothing to deliver."""
        return False

    def watchdog_interval(self) -> float | None:
        """No watchdog is armed."""
        return None


class WindowsPlatform:
    """The :class:`~edr.platform.facade.Platform` of Windows."""

    name: Final = "windows"
    trusted_paths: Final = TRUSTED_PATHS
    paths_ignore_case: Final = True
    #: No init process: the service control manager (services.exe) is an ancestor of the service.
    init_pid: Final = None
    service: Final[ServiceNotifier] = NoServiceNotifications()

    def running_pids(self) -> list[int]:
        """psutil's process ids."""
        return processes.running_pids()

    def executable(self, pid: int) -> str | None:
        """QueryFullProcessImageNameW on a process handle (PermissionError when OpenProcess is denied)."""
        return processes.executable(pid)

    def start_ticks(self, pid: int) -> int | None:
        """The creation FILETIME (GetProcessTimes)."""
        return processes.start_ticks(pid)

    def resident_bytes(self, pid: int) -> int | None:
        """The working set (psutil)."""
        return processes.resident_bytes(pid)

    def running_processes(self) -> list[ProcessSnapshot]:
        """psutil's process table."""
        return processes.running_processes()

    def user_name(self, uid: int) -> str | None:
        """Windows has no numeric user ids (SIDs are resolved by the ETW sensor's SID cache): None."""
        return None

    def scan_target(self, fd: int, path: str) -> str:
        """``path``: Windows has no name for an open descriptor that another open follows."""
        return path

    def terminate(self, pid: int, image: str, start_ticks: int | None, event_time: float | None,
                  start_epoch: float | None = None) -> KillResult:
        """OpenProcess, identity check on the handle, TerminateProcess (:mod:`edr.platform.windows.kill`)."""
        return _terminate(pid, image, start_ticks, event_time, start_epoch)

    def protected_processes(self, environ: Mapping[str, str] | None = None) -> tuple[ProtectedProcess, ...]:
        """The agent, its ancestors (services.exe for a service) and ``$MANAGERPID`` when set."""
        return walk_protected(environ, self.init_pid)

    def resource_usage(self) -> ResourceUsage:
        """psutil: working set, peak working set, CPU times."""
        return processes.resource_usage()

    def lock_file(self, fd: int) -> bool:
        """msvcrt.locking of one byte past the data (:mod:`edr.platform.windows.file_lock`)."""
        return file_lock.lock_file(fd)
