"""The scan dispatcher actor: YARA and hashing of new executables, off the event loop.

It receives a fan-out copy of the enriched event stream (its input edge is
``drop_newest``: scanning never slows detection) and queues scan jobs in a
bounded channel whose overflow is counted, never waited on. Worker tasks
run each job in a thread (``trio.to_thread.run_sync`` under a
``CapacityLimiter`` of ``scan.workers``) and send the alerts.

Jobs: the executable of every ``process_creation`` (YARA + one-read
MD5/SHA1/SHA256 for hash IOCs); executables just written (``file_event``,
``file_change``, ``file_rename`` targets that are ELF/PE or a script with an
exec bit) once they have been quiet for ``scan.settle_secs``; and, with
``scan.memory_enabled``, the memory of new processes plus a periodic,
rate-limited sweep of all processes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, ClassVar, Final

import attrs
import trio

from edr.config import Config
from edr.detect.alert import Alert
from edr.detect.yara_rules import YaraRuleSet
from edr.event import FILE_CHANGE, FILE_DELETE, FILE_EVENT, FILE_RENAME, LINUX, PROCESS_CREATION, Event, F
from edr.platform import current as current_platform
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import OutPort
from edr.scan.alerts import HashMatcher, file_alerts, memory_alerts
from edr.scan.allowlist import PrefixAllowlist
from edr.scan.file_scan import MB, FileScanner, FileVerdict, ScanLimits
from edr.scan.identity import IdentityCache
from edr.scan.memory import SweepPlanner
from edr.scan.settle import SettleTracker

log = logging.getLogger("edr.scan")

#: Category of the synthetic event a memory-sweep alert carries (no sensor event caused it).
MEMORY_SCAN: Final = "memory_scan"
_WRITTEN_CATEGORIES: Final = frozenset({FILE_EVENT, FILE_CHANGE, FILE_RENAME})


@attrs.frozen
class ScanJob:
    """One unit of work: ``kind`` is ``exec``, ``written``, ``memory`` or ``sweep``."""

    kind: str
    path: str | None
    pid: int | None
    event: Event | None


def _pid_of(event: Event) -> int | None:
    value = event.get(F.PROCESS_ID)
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def build_scanner(cfg: Config, rules: YaraRuleSet | None, want_hashes: bool) -> FileScanner:
    """The sans-IO file scanner configured from ``[scan]``, ``[scanner]``, ``[ioc]`` and the allowlists."""
    limits = ScanLimits(
        yara_max_bytes=cfg.scan.yara_max_file_size_mb * MB,
        hash_max_bytes=cfg.ioc.max_file_size_mb * MB,
        timeout=cfg.scan.timeout_secs,
        memory_max_bytes=cfg.scan.memory_max_mb * MB,
    )
    return FileScanner(
        rules, want_hashes=want_hashes, limits=limits,
        yara_allowlist=PrefixAllowlist(cfg.trusted_paths(cfg.scanner.yara_allowlist_paths)),
        hash_allowlist=PrefixAllowlist(cfg.trusted_paths(cfg.ioc.hash_allowlist_paths)),
        cache=IdentityCache[FileVerdict](cfg.scan.cache_entries),
        debug=cfg.alerts.match_debug != "off",
    )


class ScanDispatcher(ActorBase):
    """Queues scan jobs from events and runs them in worker threads; YARA and hash-IOC alerts out."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("alerts",)

    def __init__(self, name: str, config: Config, scanner: FileScanner, iocs: HashMatcher | None) -> None:
        super().__init__(name)
        self.config = config
        self.scanner = scanner
        self.iocs = iocs
        self.debug = config.alerts.match_debug != "off"
        scan = config.scan
        self.settle = SettleTracker(scan.settle_secs)
        self.sweep = SweepPlanner(scan.sweep_max_per_minute, exclude=(os.getpid(),))
        self.events = 0
        self.queued = 0
        self.dropped = 0
        self.alerts = 0
        self.completed = 0
        self.worker_errors = 0
        self._send: trio.MemorySendChannel[ScanJob] | None = None
        # The file event that announced each settling path (the alert's event).
        self._pending_events: dict[str, Event] = {}
        # Nothing to scan for: no rules and no hash indicators. Hashing anyway would only burn CPU.
        self.files_enabled = scanner.rules is not None or scanner.want_hashes
        self.memory_enabled = scan.memory_enabled and scanner.rules is not None

    def _enqueue(self, job: ScanJob) -> None:
        assert self._send is not None
        try:
            self._send.send_nowait(job)
            self.queued += 1
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s: scan queue full (%d); %d job(s) dropped so far", self.name,
                            self.config.scan.queue_capacity, self.dropped)

    def _intake(self, event: Event, now: float) -> None:
        category = event.category
        if category == PROCESS_CREATION:
            image = event.get(F.IMAGE)
            # Trusted prefixes are filtered here, not in a worker: most execs are of them.
            if self.files_enabled and isinstance(image, str) and image and not self.scanner.skips(image):
                self._enqueue(ScanJob("exec", image, _pid_of(event), event))
            if self.memory_enabled:
                pid = _pid_of(event)
                if pid is not None and pid > 4:
                    self._enqueue(ScanJob("memory", None, pid, event))
        elif category in _WRITTEN_CATEGORIES:
            source = event.get(F.SOURCE_FILENAME) if category == FILE_RENAME else None
            if isinstance(source, str):
                # Renamed away: the old name no longer holds the bytes; the new one is tracked below.
                self.settle.forget(source)
                self._pending_events.pop(source, None)
            target = event.get(F.TARGET_FILENAME)
            if (self.files_enabled and isinstance(target, str) and target and not self.scanner.skips(target)
                    and self.settle.touch(target, now)):
                self._pending_events[target] = event
        elif category == FILE_DELETE:
            target = event.get(F.TARGET_FILENAME)
            if isinstance(target, str):
                self.settle.forget(target)
                self._pending_events.pop(target, None)

    # --- jobs ------------------------------------------------------------------

    def _run_job(self, job: ScanJob) -> list[Alert]:
        # Runs in a worker thread: plain blocking calls only.
        if job.kind in ("exec", "written"):
            assert job.path is not None
            verdict = self.scanner.scan_file(job.path, require_executable=job.kind == "written")
            return file_alerts(verdict, job.event, self.iocs, debug=self.debug, written=job.kind == "written")
        assert job.pid is not None
        mem = self.scanner.scan_memory(job.pid)
        if not mem.hits:
            return []
        event = job.event if job.event is not None else _sweep_event(job.pid)
        return memory_alerts(mem, event, debug=self.debug)

    async def _worker(self, receive: trio.MemoryReceiveChannel[ScanJob], out: OutPort,
                      limiter: trio.CapacityLimiter) -> None:
        async with receive:
            async for job in receive:
                try:
                    # The thread runs to completion even if we are cancelled
                    # (YARA and hashing bound themselves with the scan timeout).
                    alerts = await trio.to_thread.run_sync(self._run_job, job, limiter=limiter)
                except Exception:
                    self.worker_errors += 1
                    if self.worker_errors <= 20:
                        log.exception("%s: scan job %s %s failed", self.name, job.kind, job.path or job.pid)
                    continue
                self.completed += 1
                if alerts:
                    self.alerts += len(alerts)
                    await out.send(alerts)

    async def _settle_loop(self) -> None:
        tick = max(0.02, min(0.5, self.config.scan.settle_secs / 4))
        while True:
            await trio.sleep(tick)
            for path in self.settle.due(trio.current_time()):
                self._enqueue(ScanJob("written", path, None, self._pending_events.pop(path, None)))

    async def _sweep_loop(self) -> None:
        interval = self.config.scan.sweep_interval_secs
        next_round = trio.current_time()
        while True:
            now = trio.current_time()
            if now >= next_round:
                self.sweep.start(current_platform().running_pids())
                next_round = now + interval
            for pid in self.sweep.take(now):
                self._enqueue(ScanJob("sweep", None, pid, None))
            await trio.sleep(1.0)

    async def run(self, ports: Ports) -> None:
        """Intake events until the input ends; then scan what is pending and finish."""
        out = ports.output("alerts")
        send, receive = trio.open_memory_channel[ScanJob](self.config.scan.queue_capacity)
        self._send = send
        limiter = trio.CapacityLimiter(self.config.scan.workers)
        async with trio.open_nursery() as workers:
            for _ in range(self.config.scan.workers):
                workers.start_soon(self._worker, receive.clone(), out, limiter)
            receive.close()
            async with send, trio.open_nursery() as timers:
                timers.start_soon(self._settle_loop)
                if self.memory_enabled and self.config.scan.sweep_interval_secs > 0:
                    timers.start_soon(self._sweep_loop)
                async for batch in ports.input("in"):
                    now = trio.current_time()
                    for event in batch:
                        self._intake(event, now)
                    self.events += len(batch)
                # End of stream: written files still settling are scanned now.
                for path in self.settle.flush():
                    self._enqueue(ScanJob("written", path, None, self._pending_events.pop(path, None)))
                timers.cancel_scope.cancel()
            # Leaving ``async with send`` closed the queue: workers drain it and end.

    def statistics(self) -> dict[str, Any]:
        """Events seen, jobs queued/dropped/completed, alerts, scanner counters, cache and settle state."""
        cache = self.scanner.cache
        return {
            "events": self.events, "queued": self.queued, "dropped": self.dropped,
            "completed": self.completed, "alerts": self.alerts, "worker_errors": self.worker_errors,
            "settle_pending": len(self.settle), "settle_dropped": self.settle.dropped,
            "cache_entries": len(cache), "cache_hits": cache.hits,
            "sweep_rounds": self.sweep.rounds, **dict(self.scanner.counts),
        }


def _sweep_event(pid: int) -> Event:
    """The event a memory-sweep alert carries, so the responder can identify the process."""
    fields: dict[str, Any] = {F.PROCESS_ID: pid}
    try:
        exe = current_platform().executable(pid)
    except PermissionError:
        exe = None
    if exe:
        fields[F.IMAGE] = exe
    ticks = current_platform().start_ticks(pid)
    if ticks is not None:
        fields[F.PROCESS_START_TIME] = ticks
    return Event(category=MEMORY_SCAN, product=LINUX, fields=fields, timestamp=time.time())
