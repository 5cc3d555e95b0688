"""Reading a Linux process's identity from /proc: start time (clock ticks since boot) and executable."""

from __future__ import annotations

import os
from typing import Final

_DELETED: Final = " (deleted)"


def clock_ticks() -> int:
    """USER_HZ: the unit of /proc/<pid>/stat start times (100 on every mainstream kernel)."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def boot_time() -> float | None:
    """System boot time in seconds since the epoch (``btime`` of /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ")".
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])  # fields 3.. start at index 0, so field 22 is index 19
    except (IndexError, ValueError):
        return None


def executable(pid: int) -> str | None:
    """The target of /proc/<pid>/exe without a " (deleted)" suffix; None for kernel threads or if gone.

    Raises PermissionError when the link exists but may not be read (another
    user's process without CAP_SYS_PTRACE): that is not a process gone.
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
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
