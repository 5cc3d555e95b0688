"""The ETW normalizer: pywintrace records -> Sysmon-shaped :class:`~edr.event.Event` (sans-IO).

One :class:`EtwNormalizer` holds everything that names a later event from an
earlier one: the process table (image, command line, user per pid), the DNS
cache (address -> queried name), and bounded caches of the kernel pointers
the providers use instead of names (``FileObject`` and ``FileKey`` -> file,
``KeyObject`` -> registry key), plus PowerShell script blocks being
reassembled. Per provider, a handler module turns one record into events:

========================  ==================================================
provider                  module
========================  ==================================================
Kernel-Process            :mod:`edr.sources.etw.process_events`
Kernel-File               :mod:`edr.sources.etw.file_events`
Kernel-Network            :mod:`edr.sources.etw.network_events`
Kernel-Registry           :mod:`edr.sources.etw.registry_events`
DNS-Client                :mod:`edr.sources.etw.dns_events`
PowerShell                :mod:`edr.sources.etw.powershell_events`
TaskScheduler, WMI        :mod:`edr.sources.etw.channel_events`
========================  ==================================================

No trio, no I/O of its own: what it needs from Windows (drive letters,
account names, live process facts, PE files) comes through the injected
:mod:`edr.sources.etw.host` and :mod:`edr.sources.etw.pe_info` objects. A
record it cannot read is counted and skipped, never raised.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import attrs

from edr import event as ev
from edr.enrich.dns_cache import DnsCache
from edr.enrich.process_cache import ProcessCache, ProcessInfo
from edr.event import Event, F
from edr.sources.etw import (
    channel_events,
    dns_events,
    file_events,
    network_events,
    powershell_events,
    process_events,
    providers,
    registry_events,
)
from edr.sources.etw.caches import BoundedMap
from edr.sources.etw.host import DeviceMap, LiveProcess, NoProcessFacts, ProcessFacts, SidResolver
from edr.sources.etw.pe_info import PeInfo
from edr.sources.etw.record import Header, RecordError, extended_sid, parse_header

log = logging.getLogger("edr.etw")

#: How long (event time) a pid the host could not describe is not asked about again.
DESCRIBE_RETRY_SECS: Final = 60.0
MAX_REPORTED: Final = 20

Handler = Callable[["EtwNormalizer", Header, dict[str, Any]], "list[Event] | None"]


class PeLookup(Protocol):
    """What the normalizer needs of :class:`~edr.sources.etw.pe_info.PeInfoCache`."""

    def lookup(self, path: str, wait: float) -> PeInfo | None:
        """PE info of ``path``, waiting at most ``wait`` seconds; never raises."""
        ...


@attrs.frozen
class NormalizerLimits:
    """Cache sizes of the normalizer (entries)."""

    processes: int = 65536
    file_objects: int = 65536
    file_keys: int = 65536
    key_objects: int = 65536
    dns: int = 16384
    script_blocks: int = 256
    script_block_timeout: float = 30.0
    #: seconds of event time an exited process stays known (its late events still get its image)
    exit_linger: float = 5.0


class EtwNormalizer:
    """Turns pywintrace ``(event_id, dict)`` records into Events, in arrival order.

    ``ignore_pids`` (the agent itself) produce no events. ``pe_wait`` bounds,
    per batch, how long new process images' PE info is waited for.
    """

    def __init__(self, *, devices: DeviceMap | None = None, sids: SidResolver | None = None,
                 facts: ProcessFacts | None = None, pe: PeLookup | None = None, pe_wait: float = 0.1,
                 limits: NormalizerLimits | None = None, ignore_pids: Iterable[int] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        limits = limits or NormalizerLimits()
        self.limits = limits
        self.devices = devices or DeviceMap({})
        self.sids = sids or SidResolver(lambda sid: None)
        self.facts: ProcessFacts = facts or NoProcessFacts()
        self.pe = pe
        self.pe_wait = pe_wait
        self.clock = clock
        self.ignore_pids = frozenset(ignore_pids)
        self.processes = ProcessCache(max_entries=limits.processes, exit_linger=limits.exit_linger)
        self.dns = DnsCache(max_entries=limits.dns)
        # keyed by the pointers as delivered (int or "0x..." text: one form per session)
        self.file_objects: BoundedMap[Any, file_events.OpenFile] = BoundedMap(limits.file_objects)
        self.file_keys: BoundedMap[Any, str] = BoundedMap(limits.file_keys)
        self.keys: BoundedMap[int, str] = BoundedMap(limits.key_objects)
        self.script_blocks = powershell_events.ScriptBlocks(limits.script_blocks, limits.script_block_timeout)
        self._described: BoundedMap[int, float] = BoundedMap(4096)
        self._deadline = 0.0
        self.seq = 0
        self.records: dict[str, int] = {}
        self.events = 0
        self.ignored = 0
        self.rejected = 0
        self.errors = 0
        self.counts: Counter[str] = Counter()
        self._handlers: dict[str, Handler] = {
            providers.KERNEL_PROCESS: process_events.handle,
            providers.KERNEL_FILE: file_events.handle,
            providers.KERNEL_NETWORK: network_events.handle,
            providers.KERNEL_REGISTRY: registry_events.handle,
            providers.DNS_CLIENT: dns_events.handle,
            providers.POWERSHELL: powershell_events.handle,
            providers.TASK_SCHEDULER: channel_events.handle,
            providers.WMI_ACTIVITY: channel_events.handle,
        }
        self.records = dict.fromkeys(self._handlers, 0)
        # System (pid 4) and Idle never start during a session; name them as Sysmon does.
        self.processes.put(ProcessInfo(4, 0, "System", "", user="NT AUTHORITY\\SYSTEM"))

    # --- the entry points ------------------------------------------------------
    def normalize_batch(self, records: Iterable[Any]) -> list[Event]:
        """Every record of one batch, in order; PE reads for the batch share one ``pe_wait`` deadline.

        The same as :meth:`normalize` per record, with the loop kept tight:
        this is the sensor's hot path.
        """
        self._deadline = self.clock() + self.pe_wait
        out: list[Event] = []
        extend = out.extend
        handlers = self._handlers
        ignore = self.ignore_pids
        counts = self.records
        for item in records:
            try:
                event_id, data = item
                header = parse_header(event_id, data)
            except (RecordError, TypeError, ValueError) as exc:
                self._reject(exc)
                continue
            provider = header.provider
            handler = handlers.get(provider)
            if handler is None:
                self.ignored += 1
                continue
            counts[provider] += 1
            if header.pid in ignore:
                continue
            try:
                events = handler(self, header, data)
            except Exception:
                self._failed(header)
                continue
            if events:
                extend(events)
        if out:
            self.events += len(out)
            self.processes.expire(out[-1].timestamp)
        return out

    def normalize(self, item: Any) -> list[Event] | None:
        """One record (pywintrace's ``(event_id, dict)`` tuple); None or [] when it yields no event."""
        try:
            event_id, data = item
            header = parse_header(event_id, data)
        except (RecordError, TypeError, ValueError) as exc:
            self._reject(exc)
            return None
        handler = self._handlers.get(header.provider)
        if handler is None:
            self.ignored += 1
            return None
        self.records[header.provider] += 1
        if header.pid in self.ignore_pids:
            return None
        try:
            events = handler(self, header, data)
        except Exception:
            self._failed(header)
            return None
        if events:
            self.events += len(events)
        return events

    def _reject(self, exc: Exception) -> None:
        self.rejected += 1
        if self.rejected <= MAX_REPORTED:
            log.warning("etw: record skipped: %s", exc)

    def _failed(self, header: Header) -> None:
        # a record of an unexpected shape (a manifest version this code does not
        # know) must not stop the sensor: counted, reported a few times, skipped
        self.errors += 1
        if self.errors <= MAX_REPORTED:
            log.exception("etw: %s event %d (version %d) could not be normalized; skipped",
                          providers.provider_name(header.provider), header.event_id, header.version)

    def flush(self, now: float | None) -> list[Event]:
        """Script blocks whose parts stopped coming (all of them when ``now`` is None: end of stream)."""
        events = self.script_blocks.flush(self, now)
        self.events += len(events)
        return events

    # --- helpers for the handler modules --------------------------------------
    def event(self, category: str, fields: dict[str, Any], header: Header, service: str | None = None) -> Event:
        """An Event of this source."""
        self.seq += 1
        self.counts[category] += 1
        return Event(category, ev.WINDOWS, fields, header.timestamp, self.seq, service)

    def process(self, pid: int, ts: float) -> ProcessInfo | None:
        """The table's entry for ``pid``; a pid not seen start is asked of the host once in a while."""
        info = self.processes.get(pid)
        if info is not None:
            return info
        last = self._described.get(pid)
        if last is not None and ts - last < DESCRIBE_RETRY_SECS:
            return None
        self._described.set(pid, ts)
        live = self.describe(pid)
        if live is None or not live.image:
            return None
        info = ProcessInfo(pid, live.ppid or 0, live.image, live.command_line or "", user=live.user,
                           cwd=live.current_directory, start_time=live.create_time)
        self.processes.put(info)
        self.counts["processes_described"] += 1
        return info

    def describe(self, pid: int) -> LiveProcess | None:
        """The host's facts about ``pid`` (never raises)."""
        try:
            return self.facts.describe(pid)
        except Exception:
            self.counts["describe_errors"] += 1
            return None

    def subject(self, pid: int, header: Header, data: dict[str, Any], fields: dict[str, Any]) -> None:
        """``ProcessId``, ``Image`` and ``User`` of the process an event is about."""
        fields[F.PROCESS_ID] = pid
        info = self.process(pid, header.timestamp)
        user = None
        if info is not None:
            if info.image:
                fields[F.IMAGE] = info.image
            user = info.user
        if not user:
            sid = extended_sid(data)
            if sid:
                user = self.sids.name(sid)
        if user:
            fields[F.USER] = user

    def pe_info(self, path: str) -> PeInfo | None:
        """PE info of a new image within what is left of the batch's deadline (never raises)."""
        if self.pe is None or not path:
            return None
        try:
            return self.pe.lookup(path, max(self._deadline - self.clock(), 0.0))
        except Exception:
            self.counts["pe_errors"] += 1
            return None

    def statistics(self) -> dict[str, Any]:
        """Records per provider, events per category, cache sizes and evictions."""
        return {
            "records": {providers.provider_name(k): v for k, v in self.records.items() if v},
            "events": self.events,
            "ignored": self.ignored,
            "rejected": self.rejected,
            "errors": self.errors,
            "counts": dict(self.counts),
            "processes": self.processes.statistics(),
            "dns_cache": {"size": len(self.dns), "evictions": self.dns.evictions},
            "file_objects": self.file_objects.statistics(),
            "file_keys": self.file_keys.statistics(),
            "key_objects": self.keys.statistics(),
            "script_blocks": self.script_blocks.statistics(),
            "sids": self.sids.statistics(),
            "device_misses": self.devices.misses,
        }
