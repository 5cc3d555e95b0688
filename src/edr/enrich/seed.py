"""Seed the process cache from /proc: the processes that existed before the sensor."""

from __future__ import annotations

import os

from edr.enrich.process_cache import ProcessCache, ProcessInfo
from edr.enrich.users import UserCache
from edr.platform.linux.containers import container_id_from_cgroup


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def boot_time(proc: str = "/proc") -> float:
    """Epoch seconds of the boot (``btime`` of /proc/stat); 0.0 if unknown."""
    data = _read(f"{proc}/stat") or b""
    for line in data.splitlines():
        if line.startswith(b"btime "):
            try:
                return float(line.split()[1])
            except (ValueError, IndexError):
                break
    return 0.0


def read_process(pid: int, proc: str = "/proc", users: UserCache | None = None,
                 btime: float = 0.0, clk_tck: int = 100) -> ProcessInfo | None:
    """One process from /proc (None if it vanished or is a kernel thread)."""
    base = f"{proc}/{pid}"
    stat = _read(f"{base}/stat")
    if stat is None:
        return None
    try:
        # comm may contain spaces and parentheses: the fields follow the last ')'
        rest = stat[stat.rindex(b")") + 2:].split()
        ppid = int(rest[1])
        start_ticks = int(rest[19])
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
    status = _read(f"{base}/status") or b""
    for line in status.splitlines():
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
    return ProcessInfo(
        pid=pid,
        ppid=ppid,
        image=image,
        command_line=command_line,
        uid=uid,
        user=users.name(uid) if users is not None and uid is not None else None,
        cwd=cwd,
        start_time=btime + start_ticks / clk_tck if btime else None,
        cgroup_path=cgroup_path,
        container_id=container_id_from_cgroup(cgroup_path),
    )


def seed_from_proc(cache: ProcessCache, users: UserCache | None = None, proc: str = "/proc") -> int:
    """Add every user-space process in ``proc`` to ``cache``; return how many were added.

    Processes vanishing during the scan are skipped; nothing raises.
    """
    btime = boot_time(proc)
    try:
        clk_tck = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        clk_tck = 100
    try:
        names = os.listdir(proc)
    except OSError:
        return 0
    added = 0
    for name in names:
        if not name.isdigit():
            continue
        info = read_process(int(name), proc, users, btime, clk_tck)
        if info is not None:
            cache.put(info)
            added += 1
    return added
