"""Linux: /proc, the passwd database, cgroups, pidfd, flock, POSIX file modes and systemd.

:class:`LinuxPlatform` is :func:`edr.platform.current` on Linux; the
modules beside it are what it is made of (and what the eBPF sensor uses
directly: :mod:`.containers`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from typing import Final

from edr.platform.facade import ServiceNotifier
from edr.platform.facts import ProcessSnapshot, ResourceUsage
from edr.platform.kill import FAILED, KillResult
from edr.platform.linux import file_lock, procfs, resources, systemd, users
from edr.platform.linux.kill import terminate as _terminate
from edr.platform.protected import ProtectedProcess, walk_protected

#: The allowlist prefixes when ``allowlist.paths`` is unset: where the distribution installs programs.
TRUSTED_PATHS: Final = (
    "/usr/bin/", "/usr/sbin/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/",
    "/bin/", "/sbin/", "/lib/", "/lib64/",
)


class LinuxPlatform:
    """The :class:`~edr.platform.facade.Platform` of Linux (and, as far as it goes, other POSIX systems)."""

    name: Final = "linux"
    trusted_paths: Final = TRUSTED_PATHS
    paths_ignore_case: Final = False
    init_pid: Final = 1
    #: sd_notify (a no-op outside systemd): the module is the notifier.
    service: Final[ServiceNotifier] = systemd

    def running_pids(self) -> list[int]:
        """The numeric entries of /proc."""
        return procfs.running_pids()

    def executable(self, pid: int) -> str | None:
        """/proc/<pid>/exe (PermissionError without CAP_SYS_PTRACE over another user's process)."""
        return procfs.executable(pid)

    def start_ticks(self, pid: int) -> int | None:
        """Field 22 of /proc/<pid>/stat (clock ticks since boot)."""
        return procfs.start_ticks(pid)

    def resident_bytes(self, pid: int) -> int | None:
        """/proc/<pid>/statm's resident pages, in bytes."""
        return procfs.resident_bytes(pid)

    def running_processes(self) -> list[ProcessSnapshot]:
        """Every user-space process in /proc."""
        return procfs.running_processes()

    def user_name(self, uid: int) -> str | None:
        """The passwd database's name for ``uid``."""
        return users.user_name(uid)

    def scan_target(self, fd: int, path: str) -> str:
        """``/proc/self/fd/N``: opening it opens the file ``fd`` refers to, whatever ``path`` names by now."""
        return f"/proc/self/fd/{fd}" if sys.platform.startswith("linux") else path

    def terminate(self, pid: int, image: str, start_ticks: int | None, event_time: float | None,
                  start_epoch: float | None = None) -> KillResult:
        """pidfd, identity check through it, SIGKILL (:mod:`edr.platform.linux.kill`)."""
        if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
            return KillResult(FAILED, f"termination is not supported on {sys.platform} (it needs pidfd_open)")
        return _terminate(pid, image, start_ticks, event_time, start_epoch)

    def protected_processes(self, environ: Mapping[str, str] | None = None) -> tuple[ProtectedProcess, ...]:
        """The agent, its ancestors, its service manager and PID 1."""
        return walk_protected(environ, self.init_pid)

    def resource_usage(self) -> ResourceUsage:
        """statm and getrusage(2)."""
        return resources.resource_usage()

    def lock_file(self, fd: int) -> bool:
        """flock(2), exclusive, non-blocking."""
        return file_lock.lock_file(fd)
