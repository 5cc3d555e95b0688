"""Raw kernel records -> normalized :class:`~edr.event.Event` (Sysmon for Linux field names).

Sans-IO apart from the injected :class:`~edr.sources.ebpf.host.HostView`
(working directories, fd paths, socket ends read from /proc when the kernel
could not capture them).  State: the boot-time clock offset and DNS queries
waiting for their answer.  :meth:`Decoder.decode` never raises: a record it
cannot read is counted in ``statistics()["malformed"]`` and skipped.

Choices (documented for rule writers):

- ``process_creation``: ``Image`` is the executed path with symbolic links
  resolved (``/bin/sh`` -> ``/usr/bin/dash``), as /proc/pid/exe reports it;
  ``CommandLine`` is argv joined by spaces (Sysmon for Linux does the same);
  ``User`` is filled by the enricher from ``Uid`` (real uid).  ``Euid`` is read
  from /proc when the process is still there, else absent.
- ``ProcessStartTime`` (process_creation, process_fork) is when the process
  was *forked*, as an integer: clock ticks since boot, the unit and origin of
  field 22 of /proc/<pid>/stat, so that active response can recognise the
  process however long it waited between fork and exec.  The sensor's fork
  record gives it (it may be one tick after /proc's value, see
  :mod:`edr.response.kill_linux`); for a process forked before the sensor
  started, /proc/<pid>/stat at decode time does, unless that answer is later
  than the exec itself (the pid was reused already): then the field is
  absent, never a guess.  It is not an epoch time; the event's own time is
  ``Event.timestamp``.
- ``network_connection``: ``Source*`` is the initiator.  Outbound connect()
  and the first UDP datagram a process sends to a new peer (sendto/sendmsg
  with an address; repeats are filtered in the kernel) are ``Initiated:
  "true"``; accept() is ``"false"`` with the remote peer as source and the
  local socket as destination.  TCP connects carry both ends from the
  kernel (the socket's state changes) and are reported when the handshake
  completes or fails: failed attempts are reported too, so indicators on
  destinations see blocked callbacks.  UDP and accepted sockets get their
  local end from the live process (pidfd_getfd + getsockname); a process
  that exited first has no local end in its event.  IPv4-mapped IPv6
  addresses are reported as IPv4.  Booleans are the strings "true"/"false",
  as Sysmon writes them and SigmaHQ's rules compare them.
- ``file_event`` (create/write/truncate opens, mkdir, link, symlink),
  ``file_delete`` (unlink, rmdir), ``file_rename``, ``file_change`` (chmod,
  chown), with ``Operation`` naming the syscall family.
- ``dns_query``: one event per query, emitted when its answer arrives (with
  ``QueryResults`` in Sysmon's format and ``QueryStatus`` the rcode) or, when
  no answer came within ``dns_timeout`` seconds of event time, without
  results.  Answer TTLs travel in ``origin["dns.answers.ttl"]`` for the DNS cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from edr.event import (
    DNS_QUERY,
    FILE_CHANGE,
    FILE_DELETE,
    FILE_EVENT,
    FILE_RENAME,
    LINUX,
    NETWORK_CONNECTION,
    PROCESS_CREATION,
    PROCESS_FORK,
    PROCESS_TERMINATION,
    Event,
    F,
)
from edr.platform.linux.containers import container_id_from_cgroup
from edr.sources.ebpf import records as r
from edr.sources.ebpf.dns_wire import DnsMessage, parse_dns, qtype_name, sysmon_query_results
from edr.sources.ebpf.host import HostView, NullHost, SocketInfo

O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000

_TRUE = "true"
_FALSE = "false"


def boot_offset_now() -> float:
    """Seconds to add to CLOCK_BOOTTIME (bpf_ktime_get_boot_ns) to get epoch time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class _PendingQuery(NamedTuple):
    timestamp: float
    pid: int
    fields: dict[str, Any]


class Decoder:
    """Decode :class:`~edr.sources.ebpf.records.RawRecord` into Events.

    ``ignore_pids`` are dropped here too (the kernel filters the pids the
    sensor was opened with; this catches pids added later).
    """

    def __init__(self, *, host: HostView | None = None, ignore_pids: Iterable[int] = (),
                 boot_offset: float | None = None, dns_timeout: float = 2.0,
                 max_pending_dns: int = 4096, max_tracked_processes: int = 65536,
                 clock_ticks: int | None = None) -> None:
        self._host: HostView = host if host is not None else NullHost()
        self.ignore_pids: set[int] = set(ignore_pids)
        self._boot_offset = boot_offset_now() if boot_offset is None else boot_offset
        # USER_HZ, the unit of /proc/<pid>/stat start times (ProcessStartTime's unit)
        self._clock_ticks = clock_ticks if clock_ticks is not None else os.sysconf("SC_CLK_TCK")
        self._dns_timeout = dns_timeout
        self._max_pending = max_pending_dns
        self._pending: dict[tuple[int, int, str], _PendingQuery] = {}
        self._seq = 0
        self._stats = {"decoded": 0, "malformed": 0, "ignored": 0, "dns_unanswered": 0,
                       "dns_unmatched_answers": 0, "start_from_proc": 0, "start_unknown": 0}
        self._cgroup_paths: dict[int, str | None] = {}
        # pid -> working directory at event time, from exec (/proc), fork
        # (inherited) and chdir records: /proc/pid/cwd is gone once the
        # process has exited, which short-lived tools do before we decode
        self._cwds: dict[int, str] = {}
        self._max_cwds = max_tracked_processes

    # ------------------------------------------------------------------ API --
    def decode(self, raw: r.RawRecord) -> list[Event]:
        """The events of one record (none for a malformed or ignored record)."""
        try:
            out = self._decode(raw.data)
        except Exception:
            # records come from the kernel but their strings and payloads from
            # arbitrary processes: never let one bad record stop the sensor
            self._stats["malformed"] += 1
            return []
        self._stats["decoded"] += len(out)
        return out

    def flush(self, now: float | None = None) -> list[Event]:
        """DNS queries unanswered for ``dns_timeout`` seconds at ``now`` (epoch), as events."""
        return self._expire_dns(time.time() if now is None else now)

    def statistics(self) -> dict[str, int]:
        """Counters: decoded events, malformed and ignored records, DNS pairing."""
        return {**self._stats, "dns_pending": len(self._pending)}

    # ------------------------------------------------------------ internals --
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _event(self, category: str, fields: dict[str, Any], ts: float,
               origin: dict[str, Any] | None = None) -> Event:
        return Event(category=category, product=LINUX, fields=fields, timestamp=ts,
                     seq=self._next_seq(), origin=origin)

    def _decode(self, data: bytes) -> list[Event]:
        ts_ns, cgid, typ, xflags, pid, _tid, uid, gid, aux, comm_raw = r.HDR.unpack_from(data)
        if pid in self.ignore_pids and typ != r.EV_FORK:
            # a fork record is about the child, not the ignored parent
            self._stats["ignored"] += 1
            return []
        ts = ts_ns / 1e9 + self._boot_offset
        comm = r.cstr(comm_raw)
        if typ == r.EV_EXEC:
            return [self._exec(data, ts, ts_ns, cgid, xflags, pid, uid, gid, aux, comm)]
        if typ == r.EV_FORK:
            parent_cwd = self._cwds.get(pid)
            if parent_cwd is None:
                # first fork of a process we have not seen exec: ask /proc once
                parent_cwd = self._host.cwd(pid)
                if parent_cwd is not None:
                    self._set_cwd(pid, parent_cwd)
            if parent_cwd is not None:
                self._set_cwd(aux, parent_cwd)
            # the fork record's time is the child's start (the sensor stores the
            # same value for the child's exec)
            return [self._event(PROCESS_FORK, {F.PROCESS_ID: aux, F.PARENT_PROCESS_ID: pid,
                                               F.COMM: comm, F.UID: uid, F.GID: gid,
                                               F.PROCESS_START_TIME: r.boot_ns_to_ticks(
                                                   ts_ns, self._clock_ticks)}, ts)]
        if typ == r.EV_CHDIR:
            self._chdir(data, pid)
            return []
        if typ == r.EV_EXIT:
            self._cwds.pop(pid, None)
            return [self._event(PROCESS_TERMINATION, {F.PROCESS_ID: pid, F.COMM: comm, F.UID: uid,
                                                      F.GID: gid, F.CGROUP_ID: cgid}, ts)]
        if typ in (r.EV_CONNECT, r.EV_ACCEPT, r.EV_SENDTO):
            return self._network(data, ts, typ, pid, uid, comm, cgid)
        if typ == r.EV_FILE:
            return self._file(data, ts, pid, uid, comm, cgid)
        if typ == r.EV_DNS:
            return self._dns(data, ts, pid, uid, comm)
        self._stats["malformed"] += 1
        return []

    def _set_cwd(self, pid: int, cwd: str) -> None:
        cwds = self._cwds
        if pid not in cwds and len(cwds) >= self._max_cwds:
            # exits we did not see (lost records) must not grow the map forever
            del cwds[next(iter(cwds))]
        cwds[pid] = cwd

    def _cwd(self, pid: int) -> str | None:
        cwd = self._cwds.get(pid)
        return cwd if cwd is not None else self._host.cwd(pid)

    def _chdir(self, data: bytes, pid: int) -> None:
        fd, _pad = r.CHDIR_TAIL.unpack_from(data, r.HDR_SIZE)
        path = r.cstr(data[r.CHDIR_PATH_OFF:r.CHDIR_PATH_OFF + r.PATH_SIZE])
        if fd != r.AT_FDCWD:
            new = self._host.fd_path(pid, fd)
        elif path.startswith("/"):
            new = os.path.normpath(path)
        else:
            base = self._cwd(pid)
            new = os.path.normpath(os.path.join(base, path)) if base else None
        if new is None:
            new = self._host.cwd(pid)
        if new is not None:
            self._set_cwd(pid, new)
        else:
            self._cwds.pop(pid, None)

    def _cgroup(self, pid: int, cgid: int) -> str | None:
        if cgid in self._cgroup_paths:
            return self._cgroup_paths[cgid]
        path = self._host.cgroup_path(pid, cgid)
        if len(self._cgroup_paths) >= 8192:
            self._cgroup_paths.clear()
        if path is not None:
            self._cgroup_paths[cgid] = path
        return path

    def _start_ticks(self, pid: int, start_ns: int, exec_ns: int) -> int | None:
        """The process's start in clock ticks since boot: the fork the sensor saw, else /proc."""
        if start_ns:
            return r.boot_ns_to_ticks(start_ns, self._clock_ticks)
        # forked before the sensor was loaded (or its fork entry was evicted)
        ticks = self._host.start_ticks(pid)
        if ticks is not None and ticks <= r.boot_ns_to_ticks(exec_ns, self._clock_ticks):
            self._stats["start_from_proc"] += 1
            return ticks
        # gone, or /proc describes a later holder of the pid: no start time
        # rather than a wrong one (the responder then checks the event time)
        self._stats["start_unknown"] += 1
        return None

    def _exec(self, data: bytes, ts: float, ts_ns: int, cgid: int, xflags: int, pid: int, uid: int,
              gid: int, ppid: int, comm: str) -> Event:
        _argc, fname_len, args_len, start_ns = r.EXEC_TAIL.unpack_from(data, r.HDR_SIZE)
        end = r.EXEC_BLOB_OFF + args_len
        if len(data) < end + fname_len or fname_len < 2:
            raise ValueError("exec record shorter than its lengths")
        argv = data[r.EXEC_BLOB_OFF:end].decode("utf-8", "surrogateescape")
        if argv.endswith("\0"):
            argv = argv[:-1]
        filename = r.cstr(data[end:end + fname_len])
        host = self._host
        # the cwd tracked from fork/chdir is the one at exec time and costs no syscall
        cwd = self._cwds.get(pid)
        if cwd is None:
            cwd = host.cwd(pid)
            if cwd is not None:
                self._set_cwd(pid, cwd)
        image = filename
        if filename.startswith(("/dev/fd/", "/proc/self/fd/")):
            # fexecve()/execveat(fd) (fileless: memfd): the path names a descriptor
            # of the caller, only /proc/pid/exe knows the file
            image = host.exe(pid) or filename
        elif not filename.startswith("/") and cwd:
            image = os.path.normpath(os.path.join(cwd, filename))
        image = host.realpath(image)
        fields: dict[str, Any] = {
            F.PROCESS_ID: pid,
            F.IMAGE: image,
            # an exec without a traced execve (kernel usermode helper) has no argv
            F.COMMAND_LINE: argv.replace("\0", " ") if argv else filename,
            F.UID: uid,
            F.GID: gid,
            F.COMM: comm,
            F.CGROUP_ID: cgid,
            F.ARGV_TRUNCATED: bool(xflags & r.XF_ARGV_TRUNCATED),
        }
        start = self._start_ticks(pid, start_ns, ts_ns)
        if start is not None:
            fields[F.PROCESS_START_TIME] = start
        if cwd is not None:
            fields[F.CURRENT_DIRECTORY] = cwd
        if ppid > 0:
            fields[F.PARENT_PROCESS_ID] = ppid
        euid = host.euid(pid, uid)
        if euid is not None:
            fields[F.EUID] = euid
        cgroup = self._cgroup(pid, cgid)
        if cgroup is not None:
            fields[F.CGROUP_PATH] = cgroup
            container = container_id_from_cgroup(cgroup)
            if container:
                fields[F.CONTAINER_ID] = container
        return self._event(PROCESS_CREATION, fields, ts)

    def _network(self, data: bytes, ts: float, typ: int, pid: int, uid: int, comm: str,
                 cgid: int) -> list[Event]:
        fd, proto, addrlen, addr, laddrlen, _pad, laddr, _pad2 = r.NET_TAIL.unpack_from(data, r.HDR_SIZE)
        remote = r.parse_sockaddr(addr, addrlen) if addrlen else None
        kernel_local = r.parse_sockaddr(laddr, laddrlen) if laddrlen else None
        local: tuple[str, int] | None
        info: SocketInfo | None = None
        if kernel_local is not None:
            # a TCP connect: the kernel saw both ends, no need to ask the process
            protocol = "tcp" if proto == r.IPPROTO_TCP else ""
            local = (kernel_local.ip, kernel_local.port)
        else:
            info = self._host.socket_info(pid, fd)
            protocol = info.protocol if info is not None else ""
            local = info.local if info is not None else None
            if not protocol and proto == r.IPPROTO_TCP:
                protocol = "tcp"
        if typ == r.EV_ACCEPT:
            initiated = _FALSE
            if remote is None and info is not None and info.peer is not None:
                remote = r.SockAddr(info.peer[0], info.peer[1], ":" in info.peer[0])
            src, dst = remote, (r.SockAddr(local[0], local[1], ":" in local[0]) if local else None)
            protocol = protocol or "tcp"
        else:
            initiated = _TRUE
            src, dst = (r.SockAddr(local[0], local[1], ":" in local[0]) if local else None), remote
            if typ == r.EV_SENDTO:
                protocol = protocol or "udp"
        if src is not None and dst is not None and src.ip in ("0.0.0.0", "::") and dst.ip not in ("0.0.0.0", "::"):
            # an unconnected UDP socket bound to the wildcard: the source is what routing picks
            routed = self._host.route_source(dst.ip)
            if routed:
                src = r.SockAddr(routed, src.port, src.is_ipv6)
        if src is None and dst is None:
            self._stats["malformed"] += 1
            return []
        fields: dict[str, Any] = {F.PROCESS_ID: pid, F.UID: uid, F.COMM: comm, F.CGROUP_ID: cgid,
                                  F.INITIATED: initiated}
        if protocol:
            fields[F.PROTOCOL] = protocol
        if src is not None:
            fields[F.SOURCE_IP] = src.ip
            fields[F.SOURCE_PORT] = src.port
            fields[F.SOURCE_IS_IPV6] = _TRUE if src.is_ipv6 else _FALSE
        if dst is not None:
            fields[F.DESTINATION_IP] = dst.ip
            fields[F.DESTINATION_PORT] = dst.port
            fields[F.DESTINATION_IS_IPV6] = _TRUE if dst.is_ipv6 else _FALSE
        return [self._event(NETWORK_CONNECTION, fields, ts)]

    def _resolve(self, pid: int, dfd: int, path: str) -> str:
        """Make ``path`` absolute: relative to the cwd (AT_FDCWD) or to directory fd ``dfd``."""
        if path.startswith("/"):
            return os.path.normpath(path)
        if not path:
            # AT_EMPTY_PATH / fchmod(fd): the fd itself is the file
            return self._host.fd_path(pid, dfd) or ""
        base = self._cwd(pid) if dfd == r.AT_FDCWD else self._host.fd_path(pid, dfd)
        if not base or not base.startswith("/"):
            return path  # the process is gone: the relative path is all we have
        return os.path.normpath(os.path.join(base, path))

    def _file(self, data: bytes, ts: float, pid: int, uid: int, comm: str, cgid: int) -> list[Event]:
        op, _pad, dfd, dfd2, flags, _mode, _arg = r.FILE_TAIL.unpack_from(data, r.HDR_SIZE)
        if len(data) < r.FILE_PATH2_OFF:
            raise ValueError("file record without its path")
        p1 = r.cstr(data[r.FILE_PATH1_OFF:r.FILE_PATH2_OFF])
        p2 = r.cstr(data[r.FILE_PATH2_OFF:r.FILE_PATH2_OFF + r.PATH_SIZE])
        fields: dict[str, Any] = {F.PROCESS_ID: pid, F.UID: uid, F.COMM: comm, F.CGROUP_ID: cgid}
        if op == r.OP_OPEN:
            category = FILE_EVENT
            if flags & O_CREAT:
                operation = "file_create"
            elif flags & O_TRUNC:
                operation = "file_truncate"
            else:
                operation = "file_write"
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd, p1)
        elif op in (r.OP_UNLINK, r.OP_RMDIR):
            category = FILE_DELETE
            operation = "file_rmdir" if op == r.OP_RMDIR or flags & r.AT_REMOVEDIR else "file_unlink"
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd, p1)
        elif op == r.OP_RENAME:
            category, operation = FILE_RENAME, "file_rename"
            fields[F.SOURCE_FILENAME] = self._resolve(pid, dfd, p1)
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd2, p2)
        elif op == r.OP_MKDIR:
            category, operation = FILE_EVENT, "file_mkdir"
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd, p1)
        elif op in (r.OP_CHMOD, r.OP_CHOWN):
            category = FILE_CHANGE
            operation = "file_chmod" if op == r.OP_CHMOD else "file_chown"
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd, p1)
        elif op == r.OP_LINK:
            category, operation = FILE_EVENT, "file_link"
            fields[F.SOURCE_FILENAME] = self._resolve(pid, dfd, p1)
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd2, p2)
        elif op == r.OP_SYMLINK:
            # a symlink's content is kept verbatim: it is resolved relative to the link, later
            category, operation = FILE_EVENT, "file_symlink"
            fields[F.SOURCE_FILENAME] = p1
            fields[F.TARGET_FILENAME] = self._resolve(pid, dfd2, p2)
        else:
            self._stats["malformed"] += 1
            return []
        fields[F.OPERATION] = operation
        return [self._event(category, fields, ts)]

    # ------------------------------------------------------------------ dns --
    def _dns(self, data: bytes, ts: float, pid: int, uid: int, comm: str) -> list[Event]:
        _fd, direction, length, addr, _pad = r.DNS_TAIL.unpack_from(data, r.HDR_SIZE)
        if len(data) < r.DNS_PAYLOAD_OFF + length:
            raise ValueError("dns record shorter than its payload")
        msg = parse_dns(data[r.DNS_PAYLOAD_OFF:r.DNS_PAYLOAD_OFF + length])
        out = self._expire_dns(ts)
        if msg is None:
            self._stats["malformed"] += 1
            return out
        key = (pid, msg.txid, msg.qname.lower())
        if direction == 0:
            if msg.is_response:
                return out
            fields: dict[str, Any] = {F.PROCESS_ID: pid, F.UID: uid, F.COMM: comm,
                                      F.QUERY_NAME: msg.qname, F.QUERY_TYPE: qtype_name(msg.qtype)}
            server = r.parse_sockaddr(addr)
            if server is not None:
                fields[F.DESTINATION_IP] = server.ip
                fields[F.DESTINATION_PORT] = server.port
            if len(self._pending) >= self._max_pending:
                # a flood of unanswered queries: report the oldest now rather than drop it
                oldest = next(iter(self._pending))
                out.append(self._unanswered(self._pending.pop(oldest)))
            self._pending[key] = _PendingQuery(ts, pid, fields)
            return out
        if not msg.is_response:
            return out
        pending = self._pending.pop(key, None)
        if pending is None:
            self._stats["dns_unmatched_answers"] += 1
            fields = {F.PROCESS_ID: pid, F.UID: uid, F.COMM: comm, F.QUERY_NAME: msg.qname,
                      F.QUERY_TYPE: qtype_name(msg.qtype)}
            qts = ts
        else:
            fields, qts = pending.fields, pending.timestamp
        out.append(self._answered(fields, msg, qts))
        return out

    def _answered(self, fields: dict[str, Any], msg: DnsMessage, ts: float) -> Event:
        fields[F.QUERY_STATUS] = str(msg.rcode)
        fields[F.QUERY_RESULTS] = sysmon_query_results(msg.answers)
        ttls = [a.ttl for a in msg.answers if a.value]
        origin = {"dns.answers.ttl": min(ttls)} if ttls else None
        return self._event(DNS_QUERY, fields, ts, origin)

    def _unanswered(self, pending: _PendingQuery) -> Event:
        self._stats["dns_unanswered"] += 1
        return self._event(DNS_QUERY, pending.fields, pending.timestamp)

    def _expire_dns(self, now: float) -> list[Event]:
        if not self._pending:
            return []
        out: list[Event] = []
        limit = now - self._dns_timeout
        while self._pending:
            key = next(iter(self._pending))
            if self._pending[key].timestamp > limit:
                break
            out.append(self._unanswered(self._pending.pop(key)))
        return out
