"""One receiver of a sink: its spool, its delivery task, its counters.

A :class:`Destination` is shared by two sides of its sink actor:

- the *intake* (the actor's loop over its input) stores every batch in the
  spool, from a worker thread, with :meth:`Destination.store`: that never
  waits for the network, so a receiver that is down never holds the alert
  stream back; what the spool cannot take (full, or unusable) is counted as
  ``lost`` and logged, rate-limited;
- the *delivery* task (:meth:`Destination.run`, one per destination, under
  the actor's nursery) reads the spool and delivers, each kind in its own
  way (:meth:`Destination.deliver`); records leave the spool once delivered.

**Shutdown.** When the actor's input ends (a stop, or the end of a replay),
:meth:`Destination.close_input` gives the delivery task ``drain_secs`` to
deliver what is spooled; then it is cancelled, and what is left stays in the
spool for the next start (logged with the count). Cancellation from outside
(the supervisor's stop timeout) ends it the same way. The spool is closed
(its ack offset written) in every case, shielded: that is a small, bounded
disk write.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import trio

from edr.alerts.sinks.retry import Backoff, Throttle
from edr.alerts.sinks.spool import Batch, Spool

#: Seconds between two log lines about one ongoing problem (a receiver down, a full spool).
LOG_INTERVAL = 60.0


class Destination:
    """A receiver, its spool and its counters (see the module's notes); subclasses implement :meth:`deliver`.

    ``name`` is what statistics and logs call it (its URL). Counters:
    ``sent`` (records delivered), ``failed`` (failed attempts: connections,
    sends, requests), ``lost`` (records the spool could not take),
    ``resent`` (records sent again after a failure, at least once).
    """

    kind = "sink"

    def __init__(self, name: str, spool: Spool, *, backoff: Backoff, drain_secs: float,
                 log: logging.Logger) -> None:
        self.name = name
        self.spool = spool
        self.backoff = backoff
        self.drain_secs = drain_secs
        self.log = log
        self.sent = 0
        self.failed = 0
        self.lost = 0
        self.resent = 0
        self.last_error = ""
        self.input_closed = False
        self._more = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._loss = Throttle(LOG_INTERVAL)
        self._failures = Throttle(LOG_INTERVAL)

    # -- the intake's side (a worker thread) ----------------------------------------------------------------------

    def store(self, payloads: list[bytes]) -> None:
        """Append ``payloads`` to the spool (opening it first if needed); count and log what it cannot take.

        Blocking: called from a worker thread. Never raises for an I/O problem.
        """
        try:
            if not self.spool.is_open:
                self.spool.open()
            done = self.spool.append(payloads)
        except OSError as exc:
            self._lose(len(payloads), f"cannot be spooled ({exc})")
            return
        if done.full:
            self._lose(done.full, f"do not fit in the spool {self.spool.directory} "
                                  f"({self.spool.max_bytes >> 20} MiB of undelivered alerts: spool_max_mb)")

    def _lose(self, n: int, why: str) -> None:
        self.lost += n
        if self._loss.hit(time.monotonic(), n):
            self.log.error("%s sink %s: %d alert(s) lost: they %s; the alert file has them. Further losses are "
                           "counted (lost) and logged at most every %.0fs", self.kind, self.name,
                           self._loss.logged(), why, LOG_INTERVAL)

    # -- the delivery task ----------------------------------------------------------------------------------------

    def notify(self) -> None:
        """New records were spooled (called on the event loop)."""
        self._more.set()

    def arm(self) -> trio.Event:
        """The event :meth:`notify` sets next: take it *before* looking at the spool, so no record is missed."""
        if self._more.is_set():
            self._more = trio.Event()
        return self._more

    def close_input(self) -> None:
        """No more records will come: deliver what is spooled within ``drain_secs``, then stop."""
        self.input_closed = True
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + self.drain_secs)
        self.notify()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until the input is closed and everything is delivered, or the drain time is up."""
        self.input_closed = False
        self._scope = trio.CancelScope()
        task_status.started()
        try:
            with self._scope:
                await self._open_spool()
                await self.deliver()
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def _open_spool(self) -> None:
        while not self.spool.is_open:
            try:
                await trio.to_thread.run_sync(self.spool.open)
            except OSError as exc:
                await self.failure(f"cannot open its spool: {exc}")
            else:
                self.backoff.reset()

    async def deliver(self) -> None:
        """Deliver spooled records until the input is closed and nothing is left (subclasses)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the delivery holds and close the spool, saying what is left in it (subclasses extend)."""
        if not self.spool.is_open:
            return
        try:
            await trio.to_thread.run_sync(self.spool.close)
        except OSError as exc:
            self.log.error("%s sink %s: closing its spool failed: %s", self.kind, self.name, exc)
        left = self.spool.pending_records
        if left:
            self.log.warning("%s sink %s: %d alert(s) not delivered stay in the spool %s; they are delivered at the "
                             "next start", self.kind, self.name, left, self.spool.directory)

    @property
    def done(self) -> bool:
        """The input is closed and every record was delivered."""
        return self.input_closed and self.spool.pending_records == 0

    # -- helpers for deliver() ------------------------------------------------------------------------------------

    async def read(self, offset: int, max_records: int, max_bytes: int) -> Batch | None:
        """Records from ``offset`` (a worker thread reads them)."""
        return await trio.to_thread.run_sync(self.spool.read, offset, max_records, max_bytes)

    async def ack(self, offset: int, records: int) -> None:
        """``records`` records up to ``offset`` were delivered."""
        await trio.to_thread.run_sync(self.spool.ack, offset, records)
        self.sent += records
        ended = self._failures.clear()
        if ended:
            self.log.warning("%s sink %s: delivering again after %d failed attempt(s); %d alert(s) queued",
                             self.kind, self.name, ended, self.spool.pending_records)
        self.backoff.reset()

    async def failure(self, why: str, wait: float | None = None) -> None:
        """Count a failed attempt, log it (rate-limited), and wait before the next one (backoff, or ``wait``)."""
        self.failed += 1
        self.last_error = why
        delay = self.backoff.next()
        if wait is not None:
            delay = wait
        if self._failures.hit(time.monotonic()):
            self.log.error("%s sink %s: %s; %d failed attempt(s) so far, %d alert(s) queued in the spool, next "
                           "attempt in %.1fs (logged at most every %.0fs)", self.kind, self.name, why,
                           self._failures.total, self.spool.pending_records, delay, LOG_INTERVAL)
            self._failures.logged()
        await trio.sleep(delay)

    async def wait_for_more(self, event: trio.Event, until: float = math.inf) -> None:
        """Wait until ``event`` (from :meth:`arm`) is set or ``until`` (trio time) comes."""
        with trio.move_on_at(until):
            await event.wait()

    def statistics(self) -> dict[str, Any]:
        """Sent, failed, queued, spooled, spool bytes, lost; and what the spool found at start."""
        spool = self.spool.statistics()
        stats: dict[str, Any] = {
            "sent": self.sent,
            "failed": self.failed,
            "queued": spool["queued"],
            "spooled": spool["appended"],
            "spool_bytes": spool["spool_bytes"],
            "lost": self.lost,
            "resent": self.resent,
        }
        for key in ("recovered", "torn_records", "torn_bytes", "corrupt_bytes"):
            if spool[key]:
                stats[key] = spool[key]
        if self.last_error:
            stats["last_error"] = self.last_error
        return stats
