"""The scan dispatcher actor: YARA and hashing of new executables, off the event loop.

It receives a fan-out copy of the enriched event stream (its input edge is
``drop_newest``: scanning never slows detection). What to scan and when is
the sans-IO :class:`~edr.scan.planner.ScanPlanner`'s (exec images, written
executables once settled, process memory, the periodic memory sweep); the
actor is the loop around it: it feeds it events as they come and the time
on two timers (settled files, sweep rounds), and runs the jobs it gets
back.

Jobs wait in a :class:`~edr.runtime.workqueue.WorkQueue` of
``scan.queue_capacity`` whose overflow drops the newest job, counted and
logged, never waited on; ``scan.workers`` worker tasks run each job in a
thread (``trio.to_thread.run_sync`` under a ``CapacityLimiter``) and send
the alerts. The queue is not a graph edge (a pool of workers shares it, it
counts jobs and the timers feed it too: see :mod:`edr.runtime.workqueue`);
it is reported like one, under ``queue`` in the statistics, so the health
record shows its sent, received, dropped, depth, high-water and capacity.
"""

from __future__ import annotations

import copy
import logging
import operator
import os
import time
from collections.abc import Iterable
from itertools import compress
from typing import Any, ClassVar, Final

import attrs
import trio

from edr.config import Config
from edr.detect.alert import Alert
from edr.detect.reloadable import RuleSetHolder
from edr.detect.yara_rules import YaraRuleSet
from edr.event import LINUX, Event, F
from edr.platform import current as current_platform
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import OutPort
from edr.runtime.errlog import ErrorLog
from edr.runtime.workqueue import WorkQueue
from edr.scan.alerts import HashMatcher, file_alerts, memory_alerts
from edr.scan.allowlist import PrefixAllowlist
from edr.scan.file_scan import MB, FileScanner, FileVerdict, ScanLimits
from edr.scan.identity import IdentityCache
from edr.scan.memory import SweepPlanner
from edr.scan.planner import EXEC, INTAKE_CATEGORIES, SWEEP_TICK, WRITTEN, ScanJob, ScanPlanner

log = logging.getLogger("edr.scan")

_category = operator.attrgetter("category")

#: Category of the synthetic event a memory-sweep alert carries (no sensor event caused it).
MEMORY_SCAN: Final = "memory_scan"


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


def build_planner(cfg: Config, scanner: FileScanner) -> ScanPlanner:
    """The scan job policy configured from ``[scan]``, for what ``scanner`` can find."""
    scan = cfg.scan
    return ScanPlanner(
        # Nothing to scan for: no rules and no hash indicators. Hashing anyway would only burn CPU.
        files=scanner.rules is not None or scanner.want_hashes,
        memory=scan.memory_enabled and scanner.rules is not None,
        skips=scanner.allowlisted, settle_secs=scan.settle_secs,
        sweep=SweepPlanner(scan.sweep_max_per_minute, exclude=(os.getpid(),)),
        sweep_interval=scan.sweep_interval_secs, log=log,
    )


class ScanDispatcher(ActorBase):
    """Feeds events and time to its planner, runs the jobs it returns in worker threads; YARA and IOC alerts out.

    ``workers`` jobs run at once; ``queue_capacity`` more wait, the newest
    beyond that is dropped. ``debug`` adds what matched to the alerts.

    With ``rules``, a hot reload's YARA rules and IOC hashes are taken
    between two input batches: jobs queued from then on scan with them
    (each job reads the scanner once, so a running job finishes with the
    rules it began with), and verdicts cached under the old rules are not
    reused. What the planner scans (files at all, memory) stays as built.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("alerts",)

    def __init__(self, name: str, scanner: FileScanner, planner: ScanPlanner, iocs: HashMatcher | None, *,
                 workers: int, queue_capacity: int, debug: bool = False,
                 rules: RuleSetHolder | None = None) -> None:
        super().__init__(name)
        self.scanner = scanner
        self.planner = planner
        self.iocs = iocs
        self._rules = rules
        self.rules_version = rules.version if rules is not None else 0
        self.workers = workers
        self.debug = debug
        self.events = 0
        self.alerts = 0
        self.completed = 0
        self.jobs: WorkQueue[ScanJob] = WorkQueue(f"{name}.jobs", queue_capacity)
        self._overflow = ErrorLog(log, "scan jobs dropped")
        # set when a batch leaves files settling while the settle loop waits for one (see _settle_loop)
        self._settling = trio.Event()
        self._failures = ErrorLog(log, "failed scan jobs")

    @property
    def queued(self) -> int:
        """Jobs accepted into the queue."""
        stats = self.jobs.statistics()
        return stats.sent - stats.dropped

    @property
    def dropped(self) -> int:
        """Jobs dropped because the queue was full."""
        return self.jobs.statistics().dropped

    @property
    def worker_errors(self) -> int:
        """Jobs that raised in their worker (logged, skipped)."""
        return self._failures.total

    def _enqueue(self, jobs: Iterable[ScanJob]) -> None:
        for job in jobs:
            if not self.jobs.put_nowait(job):
                self._overflow.report("%s: scan queue full (%d); %s job %s dropped (%d so far)", self.name,
                                      self.jobs.capacity, job.kind, job.path or job.pid, self.dropped,
                                      level=logging.WARNING)

    def _refresh(self) -> None:
        """Take the YARA rules and IOC hashes a reload published (between batches, on the event loop)."""
        holder = self._rules
        if holder is None or holder.version == self.rules_version:
            return
        current = holder.current
        # A new scanner object, not the old one changed: jobs running in threads keep theirs,
        # and a verdict they cache goes into the old cache, never into the new rules' one.
        scanner = copy.copy(self.scanner)
        yara = current.yara
        scanner.rules = yara if yara is not None and yara.rules is not None else None
        scanner.cache = IdentityCache[FileVerdict](self.scanner.cache.capacity)
        if self.iocs is not None:
            self.iocs = current.detection.iocs
        self.scanner = scanner
        self.rules_version = current.version

    # --- jobs ------------------------------------------------------------------

    def _run_job(self, job: ScanJob) -> list[Alert]:
        # Runs in a worker thread: plain blocking calls only. The scanner and the
        # IOC set are read once: a reload between two reads must not mix rule sets.
        scanner, iocs = self.scanner, self.iocs
        if job.kind in (EXEC, WRITTEN):
            assert job.path is not None
            verdict = scanner.scan_file(job.path, require_executable=job.kind == WRITTEN)
            return file_alerts(verdict, job.event, iocs, debug=self.debug, written=job.kind == WRITTEN)
        assert job.pid is not None
        mem = scanner.scan_memory(job.pid)
        if not mem.hits:
            return []
        event = job.event if job.event is not None else _sweep_event(job.pid)
        return memory_alerts(mem, event, debug=self.debug)

    async def _worker(self, jobs: WorkQueue[ScanJob], out: OutPort, limiter: trio.CapacityLimiter) -> None:
        async for job in jobs:
            try:
                # The thread runs to completion even if we are cancelled
                # (YARA and hashing bound themselves with the scan timeout).
                alerts = await trio.to_thread.run_sync(self._run_job, job, limiter=limiter)
            except Exception:
                self._failures.report("%s: scan job %s %s failed", self.name, job.kind, job.path or job.pid,
                                      key=job.kind, exc_info=True)
                continue
            self.completed += 1
            if alerts:
                self.alerts += len(alerts)
                await out.send(alerts)

    async def _settle_loop(self) -> None:
        """Queue the written files as they settle: wakes when the oldest is due (at most once per
        ``settle_tick``), and not at all while none is settling."""
        planner = self.planner
        woke = -float("inf")
        while True:
            due = planner.settle.next_due()
            if due is None:
                self._settling = trio.Event()
                await self._settling.wait()
                continue
            # at most one wake-up a tick, however the deadlines of many files are spread
            await trio.sleep_until(max(due, woke + planner.settle_tick))
            woke = trio.current_time()
            self._enqueue(planner.due(woke))

    async def _sweep_loop(self) -> None:
        while True:
            self._enqueue(self.planner.sweep(trio.current_time(), current_platform().running_pids))
            await trio.sleep(SWEEP_TICK)

    async def run(self, ports: Ports) -> None:
        """Intake events until the input ends; then scan what is pending and finish."""
        out = ports.output("alerts")
        if self.jobs.closed:  # run again after a crash: a new queue (its counters start again)
            self.jobs = WorkQueue(self.jobs.name, self.jobs.capacity)
        jobs = self.jobs
        planner = self.planner
        limiter = trio.CapacityLimiter(self.workers)
        async with trio.open_nursery() as workers:
            for _ in range(self.workers):
                workers.start_soon(self._worker, jobs, out, limiter)
            try:
                async with trio.open_nursery() as timers:
                    timers.start_soon(self._settle_loop)
                    if planner.sweeping:
                        timers.start_soon(self._sweep_loop)
                    intake = planner.intake
                    async for batch in ports.input("in"):
                        self._refresh()
                        now = trio.current_time()
                        # most events (forks, exits, connections) are of no interest: passed over at C level
                        for event in compress(batch, map(INTAKE_CATEGORIES.__contains__, map(_category, batch))):
                            wanted = intake(event, now)
                            if wanted:
                                self._enqueue(wanted)
                        self.events += len(batch)
                        del batch  # freed before the wait for the next: see edr.runtime.flight
                        if not self._settling.is_set() and len(planner.settle):
                            self._settling.set()
                    # End of stream: written files still settling are scanned now.
                    self._enqueue(planner.flush())
                    timers.cancel_scope.cancel()
            finally:
                # The workers drain the queue and end.
                jobs.close()

    def statistics(self) -> dict[str, Any]:
        """Events seen; jobs queued/dropped/completed and the queue as an edge; alerts; scanner and planner counters."""
        cache = self.scanner.cache
        queue = self.jobs.statistics()
        counts = dict(self.scanner.counts)
        planned = self.planner.statistics()
        return {
            "events": self.events, "queued": queue.sent - queue.dropped, "dropped": queue.dropped,
            "completed": self.completed, "alerts": self.alerts, "worker_errors": self.worker_errors,
            "queue": attrs.asdict(queue), **planned,
            "cache_entries": len(cache), "cache_hits": cache.hits, **counts,
            # skipped by the planner, and by a job's own look (a path the planner did not ask about)
            "allowlisted": planned["allowlisted"] + counts.get("allowlisted", 0),
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
