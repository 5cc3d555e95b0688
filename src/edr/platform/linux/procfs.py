"""Linux process facts from /proc: identity (start time, executable), memory, and the running processes.

Every function reads a few small files and never raises for a process
that is gone (it is None, or left out), except :func:`executable`, which
tells "may not read" (PermissionError) from "gone" (None). ``proc`` names
another procfs root, for tests.
"""

from __future__ import annotations

import os
from typing import Final

from edr.platform.facts import ProcessSnapshot
from edr.platform.linux.containers import container_id_from_cgroup

_DELETED: Final = " (deleted)"
PROC: Final = "/proc"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def clock_ticks() -> int:
    """USER_HZ: the unit of /proc/<pid>/stat start times (100 on every mainstream kernel)."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def boot_time(proc: str = PROC) -> float | None:
    """System boot time in seconds since the epoch (``btime`` of /proc/stat), or None."""
    for line in (_read(f"{proc}/stat") or b"").splitlines():
        if line.startswith(b"btime "):
            try:
                return float(line.split()[1])
            except (ValueError, IndexError):
                return None
    return None


def _stat_fields(data: bytes) -> list[bytes]:
    # comm (field 2) may hold spaces and parentheses: the fields follow the last ")".
    # Field 3 (state) is index 0, so field N is index N - 3.
    end = data.rfind(b")")
    return data[end + 2:].split() if end >= 0 else []


def start_ticks(pid: int, proc: str = PROC) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot; None if gone."""
    data = _read(f"{proc}/{pid}/stat")
    if data is None:
        return None
    try:
        return int(_stat_fields(data)[19])
    except (IndexError, ValueError):
        return None


def executable(pid: int, proc: str = PROC) -> str | None:
    """The target of /proc/<pid>/exe without a " (deleted)" suffix; None for kernel threads or if gone.

    Raises PermissionError when the link exists but may not be read (another
    user's process without CAP_SYS_PTRACE): that is not a process gone.
    """
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except PermissionError:
        raise
    except OSError:
        return None
    return exe.removesuffix(_DELETED)


def same_executable(image: str, exe: str) -> bool:
    """Whether an event's ``Image`` names the running executable (symlinks resolved when possible)."""
    if image == exe:
        return True
    try:
        return os.path.realpath(image) == exe
    except (OSError, ValueError):
        return False


def resident_bytes(pid: int, proc: str = PROC) -> int | None:
    """Resident set size of ``pid`` from /proc/<pid>/statm; None if the process is gone."""
    data = _read(f"{proc}/{pid}/statm")
    try:
        return int(data.split()[1]) * os.sysconf("SC_PAGE_SIZE") if data is not None else None
    except (IndexError, ValueError, OSError):
        return None


def running_pids(proc: str = PROC) -> list[int]:
    """The numeric entries of /proc: every process (kernel threads included); empty if unreadable."""
    try:
        return [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def read_process(pid: int, proc: str = PROC, btime: float | None = None,
                 clk_tck: int = 100) -> ProcessSnapshot | None:
    """One process from /proc (None if it vanished or is a kernel thread).

    ``btime`` (the boot time) turns the start ticks into epoch seconds;
    without it the snapshot has no ``start_time``.
    """
    base = f"{proc}/{pid}"
    stat = _read(f"{base}/stat")
    if stat is None:
        return None
    try:
        fields = _stat_fields(stat)
        ppid = int(fields[1])
        ticks = int(fields[19])
    except (ValueError, IndexError):
        return None
    cmdline = _read(f"{base}/cmdline")
    if not cmdline:
        return None  # kernel threads have no command line
    try:
        image = os.readlink(f"{base}/exe")
    except OSError:
        image = ""
    uid: int | None = None
    for line in (_read(f"{base}/status") or b"").splitlines():
        if line.startswith(b"Uid:"):
            try:
                uid = int(line.split()[1])
            except (ValueError, IndexError):
                uid = None
            break
    try:
        cwd: str | None = os.readlink(f"{base}/cwd")
    except OSError:
        cwd = None
    cgroup_path = None
    for line in (_read(f"{base}/cgroup") or b"").splitlines():
        if line.startswith(b"0::"):
            cgroup_path = line[3:].decode("utf-8", "surrogateescape")
    command_line = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "surrogateescape")
    return ProcessSnapshot(
        pid=pid,
        ppid=ppid,
        image=image,
        command_line=command_line,
        uid=uid,
        cwd=cwd,
        start_time=btime + ticks / clk_tck if btime else None,
        cgroup_path=cgroup_path,
        container_id=container_id_from_cgroup(cgroup_path),
    )


def running_processes(proc: str = PROC) -> list[ProcessSnapshot]:
    """Every user-space process in ``proc``; processes vanishing during the scan are left out, nothing raises."""
    btime = boot_time(proc)
    clk_tck = clock_ticks()
    found = []
    for pid in running_pids(proc):
        snapshot = read_process(pid, proc, btime, clk_tck)
        if snapshot is not None:
            found.append(snapshot)
    return found
