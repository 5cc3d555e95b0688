"""One call per event: process, user, DNS and container context.

The core of the lead's enricher actor: synchronous, no I/O except the
optional seed at start (the platform lists the running processes), never
raises on a bad event.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from edr.enrich.dns_cache import DnsCache
from edr.enrich.process_cache import ProcessCache
from edr.enrich.seed import seed_cache
from edr.enrich.users import UserCache
from edr.event import (
    DNS_QUERY,
    NETWORK_CONNECTION,
    PROCESS_CREATION,
    PROCESS_FORK,
    PROCESS_TERMINATION,
    Event,
    F,
)
from edr.platform import current

# The field names the per-event path reads, as module globals: ``F.X`` is a class attribute, looked up
# on every use, which costs more than a global
_USER = F.USER
_UID = F.UID
_PROCESS_ID = F.PROCESS_ID
_PARENT_PROCESS_ID = F.PARENT_PROCESS_ID
_IMAGE = F.IMAGE
_COMMAND_LINE = F.COMMAND_LINE
_CONTAINER_ID = F.CONTAINER_ID
_PARENT_IMAGE = F.PARENT_IMAGE
_PARENT_COMMAND_LINE = F.PARENT_COMMAND_LINE
_PARENT_USER = F.PARENT_USER
_CURRENT_DIRECTORY = F.CURRENT_DIRECTORY
_CGROUP_ID = F.CGROUP_ID
_CGROUP_PATH = F.CGROUP_PATH

#: key of ``Event.origin`` carrying the smallest TTL of a DNS answer (set by the decoder)
DNS_TTL_ORIGIN_KEY = "dns.answers.ttl"
DEFAULT_DNS_TTL = 300.0


def addresses_from_query_results(results: str) -> list[str]:
    """The IP addresses in a Sysmon ``QueryResults`` string (``::ffff:`` v4 prefix removed)."""
    out: list[str] = []
    for part in results.split(";"):
        part = part.strip()
        if not part or part.startswith("type:"):
            continue
        if part.startswith("::ffff:") and "." in part:
            part = part[7:]
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            continue
    return out


class Enricher:
    """Fill process, parent, user, container and destination-host context into events.

    - ``process_creation``: ``ParentProcessId``/``ParentImage``/``ParentCommandLine``/
      ``ParentUser`` from the cache (the parent known from fork or the start-up seed),
      then the cache learns the new image.
    - ``process_fork``: the child enters the cache as a copy of its parent.
    - ``process_termination`` and every other event of a known pid: ``Image``,
      ``CommandLine`` (termination), ``User``, ``ParentProcessId``, container context.
    - ``dns_query`` with results feeds the DNS cache; ``network_connection``
      gets ``DestinationHostname`` from it.
    - ``User`` from ``Uid`` through the user cache wherever it is missing,
      unless ``name_uids`` is false (replay: this machine's user database
      does not name the uids of the host that recorded the events).

    A cached value is only filled in when known: an empty image or command
    line (a process known from its fork only) leaves the field absent rather
    than empty, as an absent field is what a rule's filter expects of an
    unknown value.
    """

    def __init__(self, *, processes: ProcessCache | None = None, users: UserCache | None = None,
                 dns: DnsCache | None = None, name_uids: bool = True) -> None:
        self.processes = processes if processes is not None else ProcessCache()
        self.users = users if users is not None else UserCache()
        self.dns = dns if dns is not None else DnsCache()
        self._name_uids = name_uids
        self._errors = 0
        self._events = 0

    def seed_running(self) -> int:
        """Load the processes already running (I/O: the platform lists them, /proc on Linux); return how many."""
        return seed_cache(self.processes, current().running_processes(), self.users)

    def process(self, event: Event) -> Event:
        """Enrich ``event`` in place and return it; a failure leaves it as it was."""
        self._events += 1
        try:
            self._process(event)
        except Exception:
            # a malformed event (wrong field types from a bad record) must not
            # stop the pipeline; it passes through unenriched and is counted
            self._errors += 1
        return event

    def process_batch(self, batch: Sequence[Event]) -> list[Event]:
        """:meth:`process` of every event of ``batch``, in one call; the events, in order, in a new list."""
        work = self._process
        errors = 0
        for event in batch:
            try:
                work(event)
            except Exception:  # as in process: the event passes through unenriched, counted
                errors += 1
        self._events += len(batch)
        self._errors += errors
        return list(batch)

    def _process(self, event: Event) -> None:
        ts = event.timestamp
        procs = self.processes
        if ts >= procs.next_expiry:
            procs.expire(ts)
        f = event.fields
        if _USER not in f and self._name_uids:
            uid = f.get(_UID)
            if isinstance(uid, int):
                users = self.users
                name = users.cached(uid)  # the hit, without a call to users.name
                f[_USER] = name if name is not None else users.name(uid)
        pid = f.get(_PROCESS_ID)
        if not isinstance(pid, int):
            return
        category = event.category
        if category == PROCESS_CREATION:
            self._exec(pid, f, ts)
            return
        if category == PROCESS_FORK:
            ppid = f.get(_PARENT_PROCESS_ID)
            if isinstance(ppid, int):
                procs.fork(ppid, pid, ts)
            return
        info = procs.get(pid)
        if info is not None:
            if info.image:
                f.setdefault(_IMAGE, info.image)
            if _USER not in f and info.user:
                f[_USER] = info.user
            if info.ppid:
                f.setdefault(_PARENT_PROCESS_ID, info.ppid)
            if info.container_id:
                f.setdefault(_CONTAINER_ID, info.container_id)
        if category == PROCESS_TERMINATION:
            if info is not None and info.command_line:
                f.setdefault(_COMMAND_LINE, info.command_line)
            procs.exit(pid, ts)
        elif category == NETWORK_CONNECTION:
            if F.DESTINATION_HOSTNAME not in f:
                dst = f.get(F.DESTINATION_IP)
                if isinstance(dst, str):
                    name = self.dns.lookup(dst, ts)
                    if name:
                        f[F.DESTINATION_HOSTNAME] = name
        elif category == DNS_QUERY:
            self._dns_answer(event, f, ts)

    def _exec(self, pid: int, f: dict[str, Any], ts: float) -> None:
        procs = self.processes
        ppid = f.get(_PARENT_PROCESS_ID)
        if not isinstance(ppid, int) or ppid <= 0:
            known = procs.get(pid)
            ppid = known.ppid if known is not None else 0
        if ppid:
            f[_PARENT_PROCESS_ID] = ppid
            parent = procs.get(ppid)
            if parent is not None:
                if parent.image:
                    f.setdefault(_PARENT_IMAGE, parent.image)
                if parent.command_line:
                    f.setdefault(_PARENT_COMMAND_LINE, parent.command_line)
                if parent.user:
                    f.setdefault(_PARENT_USER, parent.user)
        uid = f.get(_UID)
        cgid = f.get(_CGROUP_ID)
        image = f.get(_IMAGE, "")
        command_line = f.get(_COMMAND_LINE, "")
        procs.exec_record(
            pid, ppid,
            image if type(image) is str else str(image),  # str() of a str is a call for nothing
            command_line if type(command_line) is str else str(command_line),
            uid if isinstance(uid, int) else None,
            f.get(_USER),
            f.get(_CURRENT_DIRECTORY),
            ts,
            cgid if isinstance(cgid, int) else None,
            f.get(_CGROUP_PATH),
            f.get(_CONTAINER_ID),
        )

    def _dns_answer(self, event: Event, f: dict[str, Any], ts: float) -> None:
        results = f.get(F.QUERY_RESULTS)
        name = f.get(F.QUERY_NAME)
        if not results or not isinstance(results, str) or not isinstance(name, str):
            return
        ttl = DEFAULT_DNS_TTL
        if event.origin is not None:
            t = event.origin.get(DNS_TTL_ORIGIN_KEY)
            if isinstance(t, (int, float)) and not isinstance(t, bool):
                ttl = float(t)
        for address in addresses_from_query_results(results):
            self.dns.add(address, name, ttl, ts)

    def statistics(self) -> dict[str, int]:
        """Cache sizes (process cache: records and estimated bytes), evictions, events seen, errors."""
        return {
            "events": self._events,
            "errors": self._errors,
            "process_cache_size": len(self.processes),
            "process_cache_bytes": self.processes.bytes,
            "process_cache_evictions": self.processes.evictions,
            "process_cache_byte_evictions": self.processes.byte_evictions,
            "user_cache_size": len(self.users),
            "dns_cache_size": len(self.dns),
            "dns_cache_evictions": self.dns.evictions,
            "dns_cache_expired": self.dns.expired,
        }
