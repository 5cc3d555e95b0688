"""Binary record layouts written by ``bpf/sensor.c`` and their parsers.

Every record starts with the 56-byte header ``struct hdr``.  Keep these
offsets in step with the C structs.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final, NamedTuple

# families: one ring buffer each
PROCESS: Final = "process"
NETWORK: Final = "network"
FILE: Final = "file"
DNS: Final = "dns"
FAMILIES: Final = (PROCESS, NETWORK, FILE, DNS)
#: index of each family in the kernel's ``lost`` counter array
FAMILY_INDEX: Final = {PROCESS: 0, NETWORK: 1, FILE: 2, DNS: 3}

# record types (struct hdr.type)
EV_EXEC: Final = 1
EV_FORK: Final = 2
EV_EXIT: Final = 3
EV_CHDIR: Final = 4
EV_CONNECT: Final = 10
EV_ACCEPT: Final = 11
EV_SENDTO: Final = 12
EV_FILE: Final = 20
EV_DNS: Final = 30

# exec xflags
XF_ARGV_TRUNCATED: Final = 1
XF_NO_ARGV: Final = 2
# exit xflags: what the header's aux holds
XF_EXIT_CODE: Final = 1  # the exit()/exit_group() status, 0..255
XF_EXIT_SIGNAL: Final = 2  # the number of the signal that killed the process
# network xflags
XF_NET_UNSENT: Final = 1  # a connected UDP socket released before any datagram left
# file xflags
XF_FD_WRITTEN: Final = 1  # an fd-based change of a file the process opened for writing (fd still open)

# file ops
OP_OPEN: Final = 1
OP_UNLINK: Final = 2
OP_RMDIR: Final = 3
OP_RENAME: Final = 4
OP_MKDIR: Final = 5
OP_CHMOD: Final = 6
OP_CHOWN: Final = 7
OP_LINK: Final = 8
OP_SYMLINK: Final = 9

AT_FDCWD: Final = -100
AT_REMOVEDIR: Final = 0x200
PATH_SIZE: Final = 512

#: ts, cgroup_id, type, xflags, pid, tid, uid, gid, aux, comm
HDR: Final = struct.Struct("<QQHHIIIIi16s")
HDR_SIZE: Final = HDR.size  # 56
#: argc, fname_len, args_len, start_ns, euid, pad (then argv blob[args_len], filename[fname_len]).
#: ``start_ns``: the process's fork time (CLOCK_BOOTTIME ns) from the sensor's
#: fork record, 0 when there is none (forked before the sensor was loaded, or the
#: map entry was evicted or removed when the group leader exited early).
#: ``euid``: the effective uid the new program runs as, :data:`EUID_UNKNOWN`
#: when the sensor was built without the kernel's struct offsets (no BTF).
EXEC_TAIL: Final = struct.Struct("<HHIQII")
EXEC_BLOB_OFF: Final = HDR_SIZE + EXEC_TAIL.size  # 80
#: The exec record's euid when the kernel did not give it (the kernel's INVALID_UID).
EUID_UNKNOWN: Final = 0xFFFFFFFF
#: fd, pad (then path[512])
CHDIR_TAIL: Final = struct.Struct("<iI")
CHDIR_PATH_OFF: Final = 64
#: fd, proto, addrlen, addr[28] (remote), laddrlen, pad, laddr[28] (local), pad.
#: ``proto`` (6 or 17) and ``laddr`` are set when the kernel gave them; ``fd`` is -1 from the cgroup hooks.
NET_TAIL: Final = struct.Struct("<iHH28sHH28sI")
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
#: fd, direction, len, addr[28], pad (then payload)
DNS_TAIL: Final = struct.Struct("<iHH28sI")
DNS_PAYLOAD_OFF: Final = 96
#: op, pad, dfd, dfd2, flags, mode, arg, start_ns (then path1[512], path2[512]).
#: ``start_ns``: the syscall's entry (CLOCK_BOOTTIME ns); the header's ts is its exit.
FILE_TAIL: Final = struct.Struct("<HHiiIIIQ")
FILE_PATH1_OFF: Final = HDR_SIZE + FILE_TAIL.size  # 88
FILE_PATH2_OFF: Final = FILE_PATH1_OFF + PATH_SIZE

AF_INET: Final = 2
AF_INET6: Final = 10


class RawRecord(NamedTuple):
    """One record as the kernel wrote it: its family's name and its bytes."""

    family: str
    data: bytes


_TS: Final = struct.Struct("<Q")


def record_time(rec: RawRecord) -> int:
    """The record's kernel timestamp (ns since boot): the sort key merging families."""
    return _TS.unpack_from(rec.data)[0] if len(rec.data) >= 8 else 0


NSEC_PER_SEC: Final = 1_000_000_000


def boot_ns_to_ticks(ns: int, clock_ticks: int) -> int:
    """CLOCK_BOOTTIME nanoseconds as clock ticks since boot, truncated as the kernel does.

    This is the unit and rounding of field 22 of /proc/<pid>/stat
    (``nsec_to_clock_t(task->start_boottime)``); ``clock_ticks`` is USER_HZ
    (``sysconf(_SC_CLK_TCK)``), 100 on every mainstream kernel.
    """
    return ns // (NSEC_PER_SEC // clock_ticks)


def cstr(raw: bytes) -> str:
    """A NUL-terminated C string as text (undecodable bytes escaped, never raising)."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", "surrogateescape")


class SockAddr(NamedTuple):
    """An IPv4 or IPv6 socket address."""

    ip: str
    port: int
    is_ipv6: bool


def parse_sockaddr(raw: bytes, length: int | None = None) -> SockAddr | None:
    """Parse a ``struct sockaddr_in``/``sockaddr_in6``; None for other families or short data."""
    if length is not None:
        raw = raw[:length]
    if len(raw) < 8:
        return None
    family = int.from_bytes(raw[0:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == AF_INET:
        return SockAddr(str(ipaddress.IPv4Address(raw[4:8])), port, False)
    if family == AF_INET6 and len(raw) >= 24:
        ip6 = ipaddress.IPv6Address(raw[8:24])
        if ip6.ipv4_mapped is not None:
            # a v6 socket talking IPv4: report the IPv4 address rules and IOCs name
            return SockAddr(str(ip6.ipv4_mapped), port, False)
        return SockAddr(str(ip6), port, True)
    return None
