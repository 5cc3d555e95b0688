"""The one question the rest of edr asks about the operating system: :func:`current`.

Everything OS-specific that the pipeline, the responder, the scanner, the
health record and the service glue need is a method or attribute of
:class:`Platform`; ``edr.platform.linux`` and ``edr.platform.windows``
implement it. Nothing outside ``edr.platform`` (and the sensors, which are
platform-specific by nature) looks at ``sys.platform`` or reads ``/proc``:
a module that needs to know asks ``current()``.

The implementation is chosen once, from ``sys.platform``, on the first
call, and loaded then: importing this module loads neither platform, so
every module that imports it stays importable on both.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from edr.platform.facts import ProcessSnapshot, ResourceUsage
    from edr.platform.kill import KillResult
    from edr.platform.protected import ProtectedProcess

LINUX: Final = "linux"
WINDOWS: Final = "windows"


class ServiceNotifier(Protocol):
    """What the agent tells the service manager that runs it. Every call is non-blocking and never raises.

    Each returns False when there is no manager listening (a console run)
    or the message could not be delivered.
    """

    def notify_ready(self) -> bool:
        """Start-up (or a reload) is complete."""
        ...

    def notify_reloading(self, monotonic_usec: int | None = None) -> bool:
        """A reload has begun."""
        ...

    def notify_stopping(self) -> bool:
        """An orderly stop has begun."""
        ...

    def notify_watchdog(self) -> bool:
        """The agent is alive."""
        ...

    def watchdog_interval(self) -> float | None:
        """How often to call :meth:`notify_watchdog` (seconds), or None when no watchdog is armed."""
        ...


class Platform(Protocol):
    """Facts about and actions on the operating system edr runs on.

    Process look-ups are blocking system calls (cheap ones: a few file reads
    or a handle); call them from a worker thread when many are made at once.
    A process that has exited is ``None``, never an exception, except where
    a method says otherwise.
    """

    @property
    def name(self) -> str:
        """``"linux"`` or ``"windows"``: the live graph's mode, ``host.os.type`` of alerts."""
        ...

    @property
    def trusted_paths(self) -> tuple[str, ...]:
        """Compiled-in allowlist prefixes (``allowlist.paths`` when it is unset)."""
        ...

    @property
    def paths_ignore_case(self) -> bool:
        """Whether paths compare ignoring case and with ``/`` and ``\\`` alike (allowlists)."""
        ...

    @property
    def init_pid(self) -> int | None:
        """The init process the responder never kills (PID 1 on Linux), or None."""
        ...

    def running_pids(self) -> list[int]:
        """The ids of the processes running now (empty if they cannot be listed)."""
        ...

    def executable(self, pid: int) -> str | None:
        """The image ``pid`` runs now; None if gone (or a kernel thread).

        Raises PermissionError when the process exists but its image may
        not be read: that is not a process gone.
        """
        ...

    def start_ticks(self, pid: int) -> int | None:
        """When ``pid`` started, in the unit of an event's integer ``ProcessStartTime``; None if gone.

        Linux: clock ticks since boot (field 22 of /proc/<pid>/stat);
        Windows: the creation FILETIME (100 ns since 1601).
        """
        ...

    def resident_bytes(self, pid: int) -> int | None:
        """Resident memory of ``pid`` in bytes; None if gone or unreadable."""
        ...

    def running_processes(self) -> list[ProcessSnapshot]:
        """Every user-space process running now (those that vanish while being read are left out)."""
        ...

    def user_name(self, uid: int) -> str | None:
        """The account name of a numeric user id; None when unknown (always on Windows: it has SIDs)."""
        ...

    def scan_target(self, fd: int, path: str) -> str:
        """A name that opens the very file ``fd`` has open (``path`` may name another file by now).

        For libraries that open files by name (YARA): Linux names the
        descriptor (/proc/self/fd/N); where that is impossible, ``path``.
        """
        ...

    def terminate(self, pid: int, image: str, start_ticks: int | None, event_time: float | None,
                  start_epoch: float | None = None) -> KillResult:
        """Kill ``pid`` if it is still the process an alert named (start time and image); blocking.

        The identity check and the kill apply to one process even if its
        id is reused meanwhile (a pidfd on Linux, a process handle on
        Windows). Raises OSError only for failures the result cannot describe.
        """
        ...

    def protected_processes(self, environ: Mapping[str, str] | None = None) -> tuple[ProtectedProcess, ...]:
        """The agent, its ancestors and service manager (and init): never terminated. Blocking, never raises."""
        ...

    def resource_usage(self) -> ResourceUsage:
        """This process's resident and peak memory and CPU time."""
        ...

    def lock_file(self, fd: int) -> bool:
        """Take an exclusive lock on open file ``fd`` without waiting; False when another holder has it.

        The lock is the descriptor's: closing it (or the process ending,
        however it ends) releases it. It does not stop anyone reading the
        file. Raises OSError for any other failure.
        """
        ...

    @property
    def service(self) -> ServiceNotifier:
        """The service manager's notification channel (systemd's sd_notify on Linux)."""
        ...


_current: Platform | None = None


def for_platform(platform: str) -> Platform:
    """The implementation for a ``sys.platform`` value: Windows for ``win32``, else Linux.

    Other POSIX systems get the Linux implementation: its /proc look-ups
    find nothing there, and termination says it is unsupported.
    """
    if platform == "win32":
        from edr.platform.windows import WindowsPlatform

        return WindowsPlatform()
    from edr.platform.linux import LinuxPlatform

    return LinuxPlatform()


def current() -> Platform:
    """The platform edr runs on (chosen from ``sys.platform`` on the first call, then the same object)."""
    global _current
    if _current is None:
        _current = for_platform(sys.platform)
    return _current
