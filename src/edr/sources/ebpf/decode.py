"""Raw kernel records -> normalized :class:`~edr.event.Event` (Sysmon for Linux field names).

Sans-IO apart from the injected :class:`~edr.sources.ebpf.host.HostView`
(working directories, fd paths, socket ends read from /proc when the kernel
could not capture them, file birth times and types).  State: the boot-time
clock offset, DNS queries waiting for their answer, each process's working
directory and the files it opened for writing.  :meth:`Decoder.decode` never
raises: a record it cannot read is counted in ``statistics()["malformed"]``
and skipped.

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
  :mod:`edr.platform.linux.kill`); for a process forked before the sensor
  started, /proc/<pid>/stat at decode time does, unless that answer is later
  than the exec itself (the pid was reused already): then the field is
  absent, never a guess.  It is not an epoch time; the event's own time is
  ``Event.timestamp``.
- ``process_termination`` carries ``ExitCode`` (not a Sysmon field: Sysmon
  has no exit status): N for ``exit(N)``/``exit_group(N)`` (``sh -c 'exit 7'``
  gives 7), and for a process killed by a signal 128 + the signal's number,
  as a shell's ``$?`` reports it, with ``ExitSignal`` naming the signal (a
  SIGKILLed process: ``ExitCode`` 137, ``ExitSignal`` ``"SIGKILL"``; ``yes |
  head -1``'s ``yes``: 141, ``"SIGPIPE"``).  The kernel states it on the way
  out (exit syscalls, signal delivery, see ``bpf/sensor.c``).  Both are absent
  when the process ended without either (a kernel-initiated exit); counted
  as ``exit_status_unknown``.  A core dump is not told apart.
- ``network_connection``: ``Source*`` is the initiator.  Outbound connect()
  and the first UDP datagram a process sends to a new peer (sendto/sendmsg
  with an address; repeats are filtered in the kernel) are ``Initiated:
  "true"``; accept() is ``"false"`` with the remote peer as source and the
  local socket as destination.  Both ends and the protocol come from the
  kernel, so a socket closed at once or a process gone keeps them: TCP
  connects from the socket's state changes, reported when the handshake
  completes or fails (failed attempts are reported too, so indicators on
  destinations see blocked callbacks); accepted TCP connections from the
  new socket's change to ESTABLISHED; UDP from the cgroup socket hooks,
  unconnected sends at the send, a connect() at its socket's first datagram.
  A UDP socket connected and closed without sending (a route probe such as
  getaddrinfo's, or one whose datagram a local firewall dropped) is
  reported when it is closed, with the destination connect() named and no
  source.  A source bound to the wildcard address is what routing picks for
  the destination.  Only where the kernel could not see the socket (an
  accept() that asked for no peer address; UDP without the cgroup hooks)
  are the ends read from the live process (pidfd_getfd + getsockname),
  counted as ``socket_from_proc``, or ``socket_unknown`` when it is gone.
  IPv4-mapped IPv6 addresses are reported as IPv4.  Booleans are the strings
  "true"/"false", as Sysmon writes them and SigmaHQ's rules compare them.
- ``file_event`` (opens for writing, mkdir, link, symlink), ``file_delete``
  (unlink, rmdir), ``file_rename``, ``file_change`` (chmod, chown), with
  ``Operation`` naming what happened.  For an open: ``file_create`` when the
  open created the file (``O_CREAT|O_EXCL``, which succeeds only by creating,
  or an ``O_CREAT`` open of a file born during the open: its statx birth time
  is not older than the syscall's entry, give or take three kernel ticks of
  the coarse clock file times use (so a file created within ~13 ms before an
  ``O_CREAT`` open counts as created by it); a file gone
  before decoding, or on a filesystem without birth times, counts as created,
  ``create_unverified``); ``file_write`` when the file existed (appended to,
  written in place or truncated: ``echo x >> f`` and ``echo x > f`` on an
  existing ``f``).  ``O_TMPFILE`` is a create, named by its directory.
- ``TargetFilename`` and ``SourceFilename`` are always absolute: a relative
  path is joined to the working directory (tracked from fork, exec and
  chdir, else /proc) or to its directory descriptor (joined in the kernel
  for directories opened with ``O_DIRECTORY`` or ``O_PATH`` and their
  duplicates, else /proc); an fd-based change (fchmod, ``AT_EMPTY_PATH``)
  names the file the process opened for writing on that fd, or the
  directory, else /proc's answer.  When none knows (the process is gone and
  the descriptor was opened some other way, e.g. ``O_RDONLY`` alone as
  Python's ``shutil.rmtree`` does), the event is dropped and counted as
  ``path_unresolved``, never reported with a relative or empty path.  The
  one exception is a symlink's ``SourceFilename``: its content, verbatim.
- Opens for writing of device nodes, FIFOs and sockets are not file events:
  the busiest (/dev/null, ttys, the std streams) are dropped in the kernel,
  the others after a stat (``device_opens``).  Files under /dev on tmpfs
  (/dev/shm, /dev/mqueue) are reported like any file.
- ``dns_query``: one event per query, emitted when its answer arrives (with
  ``QueryResults`` in Sysmon's format and ``QueryStatus`` the rcode) or, when
  no answer came within ``dns_timeout`` seconds of event time, without
  results.  Answer TTLs travel in ``origin["dns.answers.ttl"]`` for the DNS cache.
"""

from __future__ import annotations

import os
import signal
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
from edr.sources.ebpf.host import HostView, NullHost

O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_EXCL = 0o200
O_TRUNC = 0o1000
O_TMPFILE = 0o20000000  # __O_TMPFILE: an unnamed file in the directory opened

_TRUE = "true"
_FALSE = "false"

#: Linux's CLOCK_REALTIME_COARSE (not in the time module): file times come from it
CLOCK_REALTIME_COARSE = 5


def birth_slack_ns() -> int:
    """How far before an open's entry a file born by that open may say it was born.

    File birth times come from the coarse clock, which the kernel advances
    once per tick (its resolution: 4 ms at HZ=250) and, on a tickless or
    virtual CPU, sometimes a tick late: measured here up to 7 ms behind the
    precise clock the sensor stamps the syscall's entry with, at HZ=250.
    Three ticks and a millisecond (13 ms at HZ=250, 31 ms at HZ=100).
    """
    try:
        tick = time.clock_getres(CLOCK_REALTIME_COARSE)
    except OSError:
        tick = 0.01  # HZ=100, the coarsest kernels
    return int(3 * tick * 1e9) + 1_000_000


#: process_termination: the exit status.  An ``exit(N)``/``exit_group(N)``
#: reports N (0..255); a process killed by signal S reports 128 + S, as a
#: shell's ``$?`` does, and names the signal in :data:`EXIT_SIGNAL`.  Absent
#: when the kernel told neither (a kernel-initiated exit).  Not a Sysmon field:
#: Sysmon has no exit status.
EXIT_CODE = "ExitCode"
#: process_termination of a process killed by a signal: its name (``SIGKILL``).
EXIT_SIGNAL = "ExitSignal"


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; real-time signals as ``SIGRTMIN+N``; unknown numbers as ``SIG<n>``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        pass
    if signal.SIGRTMIN < number < signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return f"SIG{number}"


def boot_offset_now() -> float:
    """Seconds to add to CLOCK_BOOTTIME (bpf_ktime_get_boot_ns) to get epoch time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


_PROTOCOLS = {r.IPPROTO_TCP: "tcp", r.IPPROTO_UDP: "udp"}
#: bounds of the decoder's small caches (cleared when full): cgroups by id, process names by their raw bytes
MAX_CGROUPS = 8192
MAX_COMMS = 4096


def _sockaddr(end: tuple[str, int]) -> r.SockAddr:
    return r.SockAddr(end[0], end[1], ":" in end[0])


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
                 clock_ticks: int | None = None, birth_slack: int | None = None) -> None:
        self._host: HostView = host if host is not None else NullHost()
        self.ignore_pids: set[int] = set(ignore_pids)
        self._boot_offset = boot_offset_now() if boot_offset is None else boot_offset
        # USER_HZ, the unit of /proc/<pid>/stat start times (ProcessStartTime's unit)
        self._clock_ticks = clock_ticks if clock_ticks is not None else os.sysconf("SC_CLK_TCK")
        self._dns_timeout = dns_timeout
        self._birth_slack = birth_slack_ns() if birth_slack is None else birth_slack
        self._max_pending = max_pending_dns
        self._pending: dict[tuple[int, int, str], _PendingQuery] = {}
        self._seq = 0
        self._stats = {"decoded": 0, "malformed": 0, "ignored": 0, "dns_unanswered": 0,
                       "dns_unmatched_answers": 0, "start_from_proc": 0, "start_unknown": 0,
                       "exit_status_unknown": 0, "euid_from_proc": 0, "socket_from_proc": 0, "socket_unknown": 0,
                       "path_unresolved": 0, "device_opens": 0, "create_unverified": 0}
        # cgroup id -> (cgroup path, container id)
        self._cgroups: dict[int, tuple[str, str | None]] = {}
        # the header's raw comm -> its text
        self._comms: dict[bytes, str] = {}
        # pid -> working directory at event time, from exec (/proc), fork
        # (inherited) and chdir records: /proc/pid/cwd is gone once the
        # process has exited, which short-lived tools do before we decode
        self._cwds: dict[int, str] = {}
        self._max_cwds = max_tracked_processes
        # pid -> fd -> path of the files it opened for writing (from the open
        # events), for fd-based changes (fchmod) the kernel flags as on such an fd
        self._write_fds: dict[int, dict[int, str]] = {}

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

    def decode_batch(self, batch: Iterable[r.RawRecord]) -> list[Event]:
        """The events of every record of ``batch``, in order: :meth:`decode` of each, in one list.

        One call and one update of the counters per batch instead of per record.
        """
        out: list[Event] = []
        decode = self._decode
        malformed = 0
        for raw in batch:
            try:
                out += decode(raw.data)
            except Exception:
                malformed += 1  # as in decode: one bad record never stops the batch
        stats = self._stats
        stats["decoded"] += len(out)
        if malformed:
            stats["malformed"] += malformed
        return out

    def flush(self, now: float | None = None) -> list[Event]:
        """DNS queries unanswered for ``dns_timeout`` seconds at ``now`` (epoch), as events."""
        return self._expire_dns(time.time() if now is None else now)

    def next_flush(self) -> float | None:
        """When (epoch seconds) :meth:`flush` will next have a query to report, or None while none is pending."""
        for pending in self._pending.values():
            # insertion order is query order: the first is the oldest
            return pending.timestamp + self._dns_timeout
        return None

    def statistics(self) -> dict[str, int]:
        """Counters: decoded events, malformed and ignored records, DNS pairing."""
        return {**self._stats, "dns_pending": len(self._pending)}

    # ------------------------------------------------------------ internals --
    def _event(self, category: str, fields: dict[str, Any], ts: float,
               origin: dict[str, Any] | None = None) -> Event:
        self._seq += 1
        # positional (category, product, fields, timestamp, seq, service, origin): keywords cost more
        return Event(category, LINUX, fields, ts, self._seq, None, origin)

    def _decode(self, data: bytes) -> list[Event]:
        ts_ns, cgid, typ, xflags, pid, _tid, uid, gid, aux, comm_raw = r.HDR.unpack_from(data)
        if pid in self.ignore_pids and typ != r.EV_FORK:
            # a fork record is about the child, not the ignored parent
            self._stats["ignored"] += 1
            return []
        ts = ts_ns / 1e9 + self._boot_offset
        # a few names (true, sh, python3) make up most records: decoded once each
        comm = self._comms.get(comm_raw)
        if comm is None:
            comm = r.cstr(comm_raw)
            if len(self._comms) >= MAX_COMMS:
                self._comms.clear()
            self._comms[comm_raw] = comm
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
            self._write_fds.pop(pid, None)
            fields = {F.PROCESS_ID: pid, F.COMM: comm, F.UID: uid, F.GID: gid, F.CGROUP_ID: cgid}
            self._exit_status(fields, xflags, aux)
            return [self._event(PROCESS_TERMINATION, fields, ts)]
        if typ in (r.EV_CONNECT, r.EV_ACCEPT, r.EV_SENDTO):
            return self._network(data, ts, typ, xflags, pid, uid, comm, cgid)
        if typ == r.EV_FILE:
            return self._file(data, ts, xflags, pid, uid, comm, cgid, aux)
        if typ == r.EV_DNS:
            return self._dns(data, ts, pid, uid, comm)
        self._stats["malformed"] += 1
        return []

    def _exit_status(self, fields: dict[str, Any], kind: int, value: int) -> None:
        if kind == r.XF_EXIT_CODE:
            fields[EXIT_CODE] = value
        elif kind == r.XF_EXIT_SIGNAL:
            # as a shell reports it ($? is 128 + N), the signal named beside it
            fields[EXIT_CODE] = 128 + value
            fields[EXIT_SIGNAL] = signal_name(value)
        else:
            self._stats["exit_status_unknown"] += 1

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

    def _cgroup(self, pid: int, cgid: int) -> tuple[str, str | None] | None:
        """The cgroup's path and the container id it names, remembered per cgroup id; None if unknown."""
        known = self._cgroups.get(cgid)
        if known is not None:
            return known
        path = self._host.cgroup_path(pid, cgid)
        if path is None:
            return None
        if len(self._cgroups) >= MAX_CGROUPS:
            self._cgroups.clear()
        known = self._cgroups[cgid] = (path, container_id_from_cgroup(path))
        return known

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
        _argc, fname_len, args_len, start_ns, kernel_euid, _pad = r.EXEC_TAIL.unpack_from(data, r.HDR_SIZE)
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
        # the kernel's own (sensor built with the BTF offsets) costs nothing; /proc costs a stat
        # and is gone once a short-lived process has exited
        if kernel_euid == r.EUID_UNKNOWN:
            self._stats["euid_from_proc"] += 1
            euid = host.euid(pid, uid)
        else:
            euid = kernel_euid
        if euid is not None:
            fields[F.EUID] = euid
        cgroup = self._cgroup(pid, cgid)
        if cgroup is not None:
            fields[F.CGROUP_PATH], container = cgroup
            if container:
                fields[F.CONTAINER_ID] = container
        return self._event(PROCESS_CREATION, fields, ts)

    def _network(self, data: bytes, ts: float, typ: int, xflags: int, pid: int, uid: int, comm: str,
                 cgid: int) -> list[Event]:
        fd, proto, addrlen, addr, laddrlen, _pad, laddr, _pad2 = r.NET_TAIL.unpack_from(data, r.HDR_SIZE)
        remote = r.parse_sockaddr(addr, addrlen) if addrlen else None
        kernel_local = r.parse_sockaddr(laddr, laddrlen) if laddrlen else None
        protocol = _PROTOCOLS.get(proto, "")
        local: r.SockAddr | None = kernel_local
        if local is None and not xflags & r.XF_NET_UNSENT:
            # the kernel did not see this socket's local end (UDP without the
            # cgroup hooks, an accept() that asked for no peer): ask the live
            # process, which may have closed the socket or exited already
            info = self._host.socket_info(pid, fd)
            if info is None:
                self._stats["socket_unknown"] += 1
            else:
                self._stats["socket_from_proc"] += 1
                protocol = protocol or info.protocol
                if info.local is not None:
                    local = _sockaddr(info.local)
                if typ == r.EV_ACCEPT and remote is None and info.peer is not None:
                    remote = _sockaddr(info.peer)
        if typ == r.EV_ACCEPT:
            initiated = _FALSE
            src, dst = remote, local
            protocol = protocol or "tcp"
        else:
            initiated = _TRUE
            src, dst = local, remote
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

    def _resolve(self, pid: int, dfd: int, path: str, xflags: int = 0) -> str | None:
        """``path`` made absolute: against the cwd (AT_FDCWD) or directory fd ``dfd``; None if unknowable.

        An empty ``path`` names ``dfd`` itself (fchmod, AT_EMPTY_PATH): the
        live process's fd table, else the file this process's reported
        write-open gave that fd, when the kernel says the fd is still that one.
        """
        if path.startswith("/"):
            return os.path.normpath(path)
        if not path:
            if dfd == r.AT_FDCWD:
                return self._cwd(pid)
            if xflags & r.XF_FD_WRITTEN:
                written = self._write_fds.get(pid, {}).get(dfd)
                if written is not None:
                    return written
            target = self._host.fd_path(pid, dfd)
            return target if target is not None and target.startswith("/") else None
        base = self._cwd(pid) if dfd == r.AT_FDCWD else self._host.fd_path(pid, dfd)
        if not base or not base.startswith("/"):
            return None  # the process is gone and its cwd or directory fd was never known
        return os.path.normpath(os.path.join(base, path))

    def _opened(self, pid: int, flags: int, path: str, fd: int, start_ns: int) -> str:
        """The operation of a successful open for writing (or with O_CREAT)."""
        if fd >= 0:
            fds = self._write_fds.get(pid)
            if fds is None:
                if len(self._write_fds) >= self._max_cwds:
                    del self._write_fds[next(iter(self._write_fds))]
                fds = self._write_fds[pid] = {}
            fds[fd] = path
        if not flags & O_CREAT:
            # the file existed: written in place, appended to or truncated
            return "file_create" if flags & O_TMPFILE else "file_write"
        if flags & O_EXCL:
            return "file_create"  # O_CREAT|O_EXCL succeeds only by creating the file
        # O_CREAT alone creates the file only if it did not exist, which no
        # tracepoint says: the file's birth time does, if it was born during the open
        born = self._host.birth_boot_ns(path)
        if born is None:
            # gone already, or a filesystem without birth times: what was asked for
            self._stats["create_unverified"] += 1
            return "file_create"
        return "file_create" if born >= start_ns - self._birth_slack else "file_write"

    def _file(self, data: bytes, ts: float, xflags: int, pid: int, uid: int, comm: str, cgid: int,
              ret: int) -> list[Event]:
        op, _pad, dfd, dfd2, flags, _mode, _arg, start_ns = r.FILE_TAIL.unpack_from(data, r.HDR_SIZE)
        if len(data) < r.FILE_PATH2_OFF:
            raise ValueError("file record without its path")
        p1 = r.cstr(data[r.FILE_PATH1_OFF:r.FILE_PATH2_OFF])
        p2 = r.cstr(data[r.FILE_PATH2_OFF:r.FILE_PATH2_OFF + r.PATH_SIZE])
        fields: dict[str, Any] = {F.PROCESS_ID: pid, F.UID: uid, F.COMM: comm, F.CGROUP_ID: cgid}
        source: str | None = None
        if op == r.OP_OPEN:
            category = FILE_EVENT
            target = self._resolve(pid, dfd, p1)
            if target is not None and target.startswith("/dev/") and self._host.special_file(target):
                # a device node, FIFO or socket opened for writing: not a file
                self._stats["device_opens"] += 1
                return []
            operation = self._opened(pid, flags, target, ret, start_ns) if target is not None else ""
        elif op in (r.OP_UNLINK, r.OP_RMDIR):
            category = FILE_DELETE
            operation = "file_rmdir" if op == r.OP_RMDIR or flags & r.AT_REMOVEDIR else "file_unlink"
            target = self._resolve(pid, dfd, p1)
        elif op == r.OP_RENAME:
            category, operation = FILE_RENAME, "file_rename"
            source = self._resolve(pid, dfd, p1)
            target = self._resolve(pid, dfd2, p2)
            if source is None:
                target = None
        elif op == r.OP_MKDIR:
            category, operation = FILE_EVENT, "file_mkdir"
            target = self._resolve(pid, dfd, p1)
        elif op in (r.OP_CHMOD, r.OP_CHOWN):
            category = FILE_CHANGE
            operation = "file_chmod" if op == r.OP_CHMOD else "file_chown"
            target = self._resolve(pid, dfd, p1, xflags)
        elif op == r.OP_LINK:
            category, operation = FILE_EVENT, "file_link"
            source = self._resolve(pid, dfd, p1, xflags)
            target = self._resolve(pid, dfd2, p2)
            if source is None:
                target = None
        elif op == r.OP_SYMLINK:
            # a symlink's content is kept verbatim: it is resolved relative to the link, later
            category, operation = FILE_EVENT, "file_symlink"
            source = p1
            target = self._resolve(pid, dfd2, p2)
        else:
            self._stats["malformed"] += 1
            return []
        if target is None:
            # a relative or empty name whose base is unknown: never reported as a path
            self._stats["path_unresolved"] += 1
            return []
        fields[F.TARGET_FILENAME] = target
        if source is not None:
            fields[F.SOURCE_FILENAME] = source
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
