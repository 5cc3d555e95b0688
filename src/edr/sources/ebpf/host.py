"""What the decoder asks the live host: working directories, fd paths, sockets, start times, files.

The kernel programs capture what they can (pointers are only valid during the
syscall); the rest is read from /proc after the fact, when the process may
already be gone, or from the file itself (its birth time and type, stat(2)).
Every look-up returns None (or False) on failure and never raises.
:class:`HostView` is the interface the :class:`~edr.sources.ebpf.decode.Decoder`
uses, so tests can substitute a fake host.
"""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import struct
import time
from typing import NamedTuple, Protocol

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 (generic syscall table)

# statx(2): struct statx is 256 bytes; stx_mask at 0, stx_btime (s64 sec, u32 nsec) at 80
STATX_BTIME = 0x800
AT_STATX_DONT_SYNC = 0x4000
_STATX_SIZE = 256
_STATX_MASK = struct.Struct("<I")
_STATX_BTIME = struct.Struct("<qI")


class SocketInfo(NamedTuple):
    """A socket's protocol and both ends, as seen from its owner."""

    protocol: str  # "tcp" | "udp" | ""
    local: tuple[str, int] | None
    peer: tuple[str, int] | None


class HostView(Protocol):
    """Look-ups on the live host; each returns None when the answer is gone."""

    def cwd(self, pid: int) -> str | None:
        """The process's working directory."""
        ...

    def fd_path(self, pid: int, fd: int) -> str | None:
        """The path an open file descriptor refers to."""
        ...

    def exe(self, pid: int) -> str | None:
        """The process's executable (/proc/pid/exe)."""
        ...

    def euid(self, pid: int, uid: int) -> int | None:
        """The process's effective uid (``uid``: its real uid, a hint)."""
        ...

    def cgroup_path(self, pid: int, cgroup_id: int) -> str | None:
        """The cgroup v2 path of the process (or of cgroup id ``cgroup_id``)."""
        ...

    def socket_info(self, pid: int, fd: int) -> SocketInfo | None:
        """Protocol, local and peer address of socket ``fd`` of ``pid``."""
        ...

    def realpath(self, path: str) -> str:
        """``path`` with symbolic links resolved (``path`` itself if that fails)."""
        ...

    def route_source(self, destination: str) -> str | None:
        """The local address the routing table picks to reach ``destination``."""
        ...

    def start_ticks(self, pid: int) -> int | None:
        """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat).

        For processes the sensor saw no fork of.  The answer is about whoever
        holds ``pid`` now, which the caller must weigh against the event's time.
        """
        ...

    def birth_boot_ns(self, path: str) -> int | None:
        """When the file at ``path`` was born (statx btime), on the sensor's clock (CLOCK_BOOTTIME ns).

        None when it is gone or its filesystem keeps no birth time.
        """
        ...

    def special_file(self, path: str) -> bool:
        """True when ``path`` is a device node, FIFO or socket (whose writes are not file changes)."""
        ...


class NullHost:
    """A host that knows nothing: decoding from the records alone."""

    def cwd(self, pid: int) -> str | None:
        """Unknown."""
        return None

    def fd_path(self, pid: int, fd: int) -> str | None:
        """Unknown."""
        return None

    def exe(self, pid: int) -> str | None:
        """Unknown."""
        return None

    def euid(self, pid: int, uid: int) -> int | None:
        """Unknown."""
        return None

    def cgroup_path(self, pid: int, cgroup_id: int) -> str | None:
        """Unknown."""
        return None

    def socket_info(self, pid: int, fd: int) -> SocketInfo | None:
        """Unknown."""
        return None

    def realpath(self, path: str) -> str:
        """Unchanged."""
        return path

    def route_source(self, destination: str) -> str | None:
        """Unknown."""
        return None

    def start_ticks(self, pid: int) -> int | None:
        """Unknown."""
        return None

    def birth_boot_ns(self, path: str) -> int | None:
        """Unknown."""
        return None

    def special_file(self, path: str) -> bool:
        """Unknown: a file."""
        return False


def find_cgroup2_mount(proc: str = "/proc") -> str:
    """Where the cgroup v2 hierarchy is mounted ("" if it is not)."""
    try:
        with open(f"{proc}/self/mounts", "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == b"cgroup2":
                    return parts[1].decode("utf-8", "surrogateescape")
    except OSError:
        pass
    return ""


def _sockname(addr: object) -> tuple[str, int] | None:
    if isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[0], str):
        ip = addr[0]
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]  # IPv4-mapped: the IPv4 address, as parse_sockaddr reports it
        return (ip, int(addr[1]))
    return None


class LiveHost:
    """Look-ups through /proc, pidfd_getfd(2) and /sys/fs/cgroup."""

    def __init__(self, proc: str = "/proc", cgroup_root: str | None = None,
                 realpath_cache_size: int = 4096) -> None:
        self._proc = proc
        # bpf_get_current_cgroup_id() is the cgroup v2 id: the inode of the
        # cgroup's directory where cgroup2 is mounted (/sys/fs/cgroup, or
        # /sys/fs/cgroup/unified on hybrid hosts)
        self._cgroup_root = cgroup_root if cgroup_root is not None else find_cgroup2_mount(proc)
        self._realpaths: dict[str, str] = {}
        self._realpath_max = realpath_cache_size
        self._cgroups: dict[int, str] = {}
        self._routes: dict[str, tuple[float, str | None]] = {}
        self._cgroup_scans = 0
        self._special: dict[str, bool] = {}
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        # glibc >= 2.28; without it birth times are unknown
        self._statx = getattr(libc, "statx", None)
        if self._statx is not None:
            self._statx.restype = ctypes.c_int
            self._statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
        self._statx_buf = ctypes.create_string_buffer(_STATX_SIZE)

    def cwd(self, pid: int) -> str | None:
        """readlink /proc/pid/cwd."""
        try:
            return os.readlink(f"{self._proc}/{pid}/cwd")
        except OSError:
            return None

    def fd_path(self, pid: int, fd: int) -> str | None:
        """readlink /proc/pid/fd/N."""
        try:
            return os.readlink(f"{self._proc}/{pid}/fd/{fd}")
        except OSError:
            return None

    def exe(self, pid: int) -> str | None:
        """readlink /proc/pid/exe."""
        try:
            return os.readlink(f"{self._proc}/{pid}/exe")
        except OSError:
            return None

    def start_ticks(self, pid: int) -> int | None:
        """Field 22 of /proc/pid/stat (starttime, clock ticks since boot)."""
        try:
            with open(f"{self._proc}/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return None
        # comm (field 2) may hold spaces and parentheses: the fields follow the last ")"
        rest = data[data.rfind(b")") + 2:].split()
        try:
            return int(rest[19])  # field 3 is rest[0], so field 22 is rest[19]
        except (IndexError, ValueError):
            return None

    def birth_boot_ns(self, path: str) -> int | None:
        """statx(2) btime, moved from the real-time clock to CLOCK_BOOTTIME at the moment of asking."""
        if self._statx is None:
            return None
        buf = self._statx_buf
        if self._statx(-100, os.fsencode(path), AT_STATX_DONT_SYNC, STATX_BTIME, buf) != 0:
            return None
        if not _STATX_MASK.unpack_from(buf)[0] & STATX_BTIME:
            return None
        sec, nsec = _STATX_BTIME.unpack_from(buf, 80)
        real_minus_boot = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        return sec * 1_000_000_000 + nsec - real_minus_boot

    def special_file(self, path: str) -> bool:
        """stat(2) (links followed); device nodes are remembered, they seldom become files."""
        if self._special.get(path):
            return True
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            return False
        special = stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        if special:
            if len(self._special) >= 4096:
                self._special.clear()
            self._special[path] = True
        return special

    def euid(self, pid: int, uid: int) -> int | None:
        """The effective uid: /proc/pid's owner when it equals the real uid, else /proc/pid/status.

        /proc/pid belongs to the effective uid, except for non-dumpable
        processes (setuid programs) whose entries belong to root: a stat is
        ten times cheaper than reading status, so only a mismatch reads it.
        """
        try:
            if os.stat(f"{self._proc}/{pid}").st_uid == uid:
                return uid
        except OSError:
            return None
        try:
            with open(f"{self._proc}/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        return int(line.split()[2])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def cgroup_path(self, pid: int, cgroup_id: int) -> str | None:
        """The cgroup v2 path: cached per cgroup id, from /proc/pid/cgroup or a /sys/fs/cgroup scan."""
        hit = self._cgroups.get(cgroup_id)
        if hit is not None:
            return hit
        path = None
        try:
            with open(f"{self._proc}/{pid}/cgroup", "rb") as f:
                for line in f:
                    if line.startswith(b"0::"):
                        path = line[3:].strip().decode("utf-8", "surrogateescape")
                        break
        except OSError:
            path = None
        if not self._cgroup_root:
            return path
        if path is not None and self._cgroup_id_of(path) == cgroup_id:
            self._remember_cgroup(cgroup_id, path)
            return path
        # the process is gone or moved: find the cgroup by its id (the
        # directory's inode number on cgroup v2); scans are bounded
        if self._cgroup_scans < 64:
            self._cgroup_scans += 1
            self._scan_cgroups()
        return self._cgroups.get(cgroup_id)

    def _cgroup_id_of(self, path: str) -> int | None:
        try:
            return os.stat(self._cgroup_root + path).st_ino
        except OSError:
            return None

    def _remember_cgroup(self, cgroup_id: int, path: str) -> None:
        if len(self._cgroups) >= 8192:
            self._cgroups.pop(next(iter(self._cgroups)))
        self._cgroups[cgroup_id] = path

    def _scan_cgroups(self) -> None:
        root = self._cgroup_root
        for dirpath, _dirs, _files in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = dirpath[len(root):] or "/"
            if not rel.startswith("/"):
                continue
            self._remember_cgroup(ino, rel)

    def socket_info(self, pid: int, fd: int) -> SocketInfo | None:
        """Duplicate the socket with pidfd_getfd(2) and ask it (needs ptrace rights: root)."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        try:
            dup = self._syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if dup < 0:
                return None
            try:
                sock = socket.socket(fileno=dup)
            except OSError:
                os.close(dup)
                return None
            # closing our duplicate leaves the owner's socket open
            try:
                proto = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}.get(sock.type, "")
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    return None
                try:
                    local = _sockname(sock.getsockname())
                except OSError:
                    local = None
                try:
                    peer = _sockname(sock.getpeername())
                except OSError:
                    peer = None
                return SocketInfo(proto, local, peer)
            finally:
                sock.close()
        finally:
            os.close(pidfd)

    def realpath(self, path: str) -> str:
        """os.path.realpath, cached: executables' symlinks (/bin/sh) rarely change."""
        hit = self._realpaths.get(path)
        if hit is not None:
            return hit
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            real = path
        if len(self._realpaths) >= self._realpath_max:
            self._realpaths.clear()
        self._realpaths[path] = real
        return real

    def route_source(self, destination: str) -> str | None:
        """connect() a UDP socket (sends nothing) and read the address the kernel chose; cached 60 s."""
        now = time.monotonic()
        hit = self._routes.get(destination)
        if hit is not None and now - hit[0] < 60.0:
            return hit[1]
        family = socket.AF_INET6 if ":" in destination else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((destination, 9))
                source: str | None = s.getsockname()[0]
        except OSError:
            source = None
        if len(self._routes) >= 4096:
            self._routes.clear()
        self._routes[destination] = (now, source)
        return source
