"""Test helper: kernel records built byte for byte as bpf/sensor.c writes them."""

from __future__ import annotations

import socket
import struct
from typing import Any

from edr.sources.ebpf import records as r

BOOT_OFFSET = 1_700_000_000.0


def hdr(typ: int, pid: int, *, ts_ns: int = 5_000_000_000, cgid: int = 77, xflags: int = 0, tid: int = 0,
        uid: int = 1000, gid: int = 1000, aux: int = 0, comm: bytes = b"comm") -> bytes:
    return r.HDR.pack(ts_ns, cgid, typ, xflags, pid, tid or pid, uid, gid, aux, comm)


def exec_rec(pid: int, filename: str, argv: list[str], *, ppid: int = 0, truncated: bool = False,
             start_ns: int = 0, euid: int = r.EUID_UNKNOWN, **kw: Any) -> r.RawRecord:
    """An exec record; ``start_ns`` is the fork time the kernel recorded (0: no fork record seen).

    ``euid`` is what the kernel read (default: unknown, so the decoder asks its host).
    """
    blob = b"".join(a.encode() + b"\0" for a in argv)
    fname = filename.encode() + b"\0"
    data = hdr(r.EV_EXEC, pid, aux=ppid, xflags=r.XF_ARGV_TRUNCATED if truncated else 0, **kw)
    data += r.EXEC_TAIL.pack(len(argv), len(fname), len(blob), start_ns, euid, 0) + blob + fname
    return r.RawRecord(r.PROCESS, data)


def fork_rec(ppid: int, child: int, **kw: Any) -> r.RawRecord:
    return r.RawRecord(r.PROCESS, hdr(r.EV_FORK, ppid, aux=child, **kw))


def exit_rec(pid: int, *, code: int | None = None, signal: int | None = None, **kw: Any) -> r.RawRecord:
    """An exit record: ``code`` from an exit syscall, or the ``signal`` that killed it, or neither."""
    if code is not None:
        kw.update(xflags=r.XF_EXIT_CODE, aux=code)
    elif signal is not None:
        kw.update(xflags=r.XF_EXIT_SIGNAL, aux=signal)
    return r.RawRecord(r.PROCESS, hdr(r.EV_EXIT, pid, **kw))


def chdir_rec(pid: int, path: str, fd: int = r.AT_FDCWD, **kw: Any) -> r.RawRecord:
    data = hdr(r.EV_CHDIR, pid, **kw) + r.CHDIR_TAIL.pack(fd, 0)
    return r.RawRecord(r.PROCESS, data + path.encode().ljust(r.PATH_SIZE, b"\0"))


def file_rec(pid: int, op: int, path1: str, path2: str = "", *, dfd: int = r.AT_FDCWD,
             dfd2: int = r.AT_FDCWD, flags: int = 0, start_ns: int = 4_999_000_000, **kw: Any) -> r.RawRecord:
    """A file record; ``aux`` is the syscall's result (an open's fd), ``start_ns`` its entry time."""
    data = hdr(r.EV_FILE, pid, **kw) + r.FILE_TAIL.pack(op, 0, dfd, dfd2, flags, 0o644, 0, start_ns)
    data += path1.encode().ljust(r.PATH_SIZE, b"\0")
    if path2:
        data += path2.encode().ljust(r.PATH_SIZE, b"\0")
    return r.RawRecord(r.FILE, data)


def sockaddr(ip: str, port: int) -> bytes:
    if ":" in ip:
        return struct.pack("<HHI16sI", r.AF_INET6, socket.htons(port), 0, socket.inet_pton(socket.AF_INET6, ip), 0)
    return struct.pack("<HH4s", r.AF_INET, socket.htons(port), socket.inet_aton(ip)).ljust(16, b"\0")


def net_rec(typ: int, pid: int, fd: int, ip: str | None, port: int = 0, *, local: tuple[str, int] | None = None,
            proto: int = 0, **kw: Any) -> r.RawRecord:
    addr = sockaddr(ip, port) if ip else b""
    laddr = sockaddr(*local) if local else b""
    data = hdr(typ, pid, **kw) + r.NET_TAIL.pack(fd, proto, len(addr), addr.ljust(28, b"\0"), len(laddr), 0,
                                                 laddr.ljust(28, b"\0"), 0)
    return r.RawRecord(r.NETWORK, data)


def dns_message(name: str, *, txid: int = 0x1234, qtype: int = 1, response: bool = False,
                answers: tuple[tuple[int, int, bytes], ...] = (), rcode: int = 0) -> bytes:
    flags = (0x8180 | rcode) if response else 0x0100
    msg = struct.pack(">HHHHHH", txid, flags, 1, len(answers), 0, 0)
    msg += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
    for rtype, ttl, rdata in answers:
        msg += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return msg


def dns_rec(pid: int, payload: bytes, *, answer: bool = False, server: str = "127.0.0.53",
            **kw: Any) -> r.RawRecord:
    addr = sockaddr(server, 53)
    data = hdr(r.EV_DNS, pid, **kw) + r.DNS_TAIL.pack(3, 1 if answer else 0, len(payload), addr.ljust(28, b"\0"), 0)
    return r.RawRecord(r.DNS, data + payload)
