"""Actors of the live Linux sensor: the eBPF source and its normalizer.

The source polls the kernel's ring buffers in its own thread (see
:mod:`edr.sources.ebpf.pollthread`) and forwards raw records in batches;
the normalizer decodes them into Events on the event loop, in arrival
order, with the decoder's state (pending argv, boot-time offset, directory
fds) kept in one place.

The agent's own process is filtered out so that writing alerts and logs does
not feed back into the sensor.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import trio

from edr.runtime.actor import ActorBase, Ports
from edr.runtime.errlog import ErrorLog
from edr.sources.ebpf.pollthread import PollThread

#: records the start-up drain holds at most (a count, not bytes: most records are a few hundred bytes)
STARTUP_RECORDS = 200_000
#: the start-up drain's poll timeout: how long handing over to the actor may wait
STARTUP_POLL_MS = 50


class StartupDrain:
    """Polls an opened sensor in a thread until the pipeline runs, so that start-up loses nothing.

    Between the programs being attached and the source actor's first poll
    the agent still builds the other actors (seeding the process cache,
    opening files) and starts the graph: seconds during which nobody would
    empty the kernel's rings, which then overflow and drop records. This
    thread empties them into a list bounded by ``limit`` records; when the
    list is full it stops polling and leaves the rest in the rings (whatever
    they cannot hold is then counted by the kernel as ``lost``, and
    ``full`` says so). :meth:`stop` hands the records over in kernel order.
    """

    def __init__(self, sensor: Any, limit: int) -> None:
        self.sensor = sensor
        self.limit = limit
        self.records: list[Any] = []
        self.polls = 0
        self.full = False
        #: per family, the records the kernel lost from the attach until :meth:`stop`
        self.lost: dict[str, int] = {}
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edr-ebpf-startup-drain", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        records = self.records
        try:
            while not self._stop.is_set():
                if len(records) >= self.limit:
                    self.full = True
                    return
                records.extend(self.sensor.poll(STARTUP_POLL_MS))
                self.polls += 1
        except Exception as exc:  # raised again by stop(), in the actor: the supervisor logs it with its name
            self.error = exc

    def stop(self) -> list[Any]:
        """Stop polling (waits for the poll under way, <= STARTUP_POLL_MS) and take the records. Blocking.

        A poll that raised in the thread raises here. Also reads what the
        kernel lost so far (:attr:`lost`, per family): the records lost at start.
        """
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        self.lost = {fam: counts["lost"] for fam, counts in self.sensor.statistics().items()}
        out, self.records = self.records, []
        return out


class EbpfSource(ActorBase):
    """Loads the BPF programs at build time; drains their rings until cancelled.

    ``sensor`` is an opened :class:`~edr.sources.ebpf.sensor.EbpfSensor` (or
    anything with its ``poll``, ``wake``, ``held``, ``statistics``,
    ``close`` and ``udp_hooks_error``).

    :meth:`start_draining`, called by the builder right after the programs
    are attached, keeps the rings empty until :meth:`run` takes over (see
    :class:`StartupDrain`); the health record shows, under ``startup``, what
    it held, whether it filled up, and per family what the kernel lost
    before the graph ran (records lost at start).
    """

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str, sensor: Any, batch_size: int) -> None:
        super().__init__(name)
        self.sensor = sensor
        self.batch_size = batch_size
        self.polls = 0
        # the sensor's counters as it closed: its kernel maps are gone after close
        self._final: dict[str, dict[str, int]] | None = None
        self._drain: StartupDrain | None = None
        self.startup_records = 0
        self.startup_full = False
        self.startup_lost: dict[str, int] = {}

    def start_draining(self, limit: int = STARTUP_RECORDS) -> None:
        """Poll the opened sensor in a thread until :meth:`run` starts (idempotent)."""
        if self._drain is None:
            self._drain = StartupDrain(self.sensor, limit)

    async def _take_startup(self, out: Any) -> None:
        drain, self._drain = self._drain, None
        if drain is None:
            return
        records = await trio.to_thread.run_sync(drain.stop)
        self.polls += drain.polls
        self.startup_records = len(records)
        self.startup_full = drain.full
        self.startup_lost = drain.lost
        for i in range(0, len(records), self.batch_size):
            await out.send(records[i:i + self.batch_size])

    async def run(self, ports: Ports) -> None:
        """Poll in the source's own thread (:class:`PollThread`), forward; until cancelled, then close the sensor.

        What the start-up drain held goes first, then the thread polls on
        from where the drain stopped (the sensor's ordering state included).
        A poll waits for the kernel: an idle agent's source does not wake
        until the kernel wakes it for the first record of a quiet spell (or
        records held back for ordering fall due), or every few seconds
        (:data:`~edr.sources.ebpf.pollthread.LOST_WAKEUP_MS`) without
        involving the event loop. Backpressure: while a
        send waits for room, the thread polls at most one batch ahead and
        then stops polling (the kernel's rings fill meanwhile, as before).
        On cancellation the poll under way is woken (:meth:`EbpfSensor.wake`,
        an eventfd in its epoll) and the thread ends; the sensor then closes
        in a worker thread (a tenth of a second, shielded), only once the
        thread has stopped polling, and the records of its last poll and
        those the sensor still held go down the (draining) pipeline, within
        2 s. A poll that raises in the thread raises here.
        """
        out = ports.output("out")
        size = self.batch_size
        unsent: list[Any] = []
        pump: PollThread | None = None
        try:
            await self._take_startup(out)
            pump = PollThread(self.sensor)
            while True:
                unsent = await pump.receive()
                while unsent:
                    await out.send(unsent[:size])
                    unsent = unsent[size:]
        finally:
            if pump is not None:
                pump.stop()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close, pump)
            if pump is not None:
                self.polls += pump.polls
                unsent += pump.take_rest()
                pump.close()
            # what the last polls returned after the cancellation, and the last milliseconds the sensor held
            # back for ordering, still go down the (draining) pipeline; bounded so a stuck edge cannot hang
            # shutdown
            with trio.move_on_after(2) as scope:
                scope.shield = True
                records = unsent + self.sensor.held()
                if records:
                    await out.send(records)

    def abandon(self) -> None:
        """The graph will not run (the start failed after this source was built): stop the start-up drain's
        thread and close the sensor, so that nothing polls the rings while the interpreter tears them down."""
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.stop()
        self._close(None)

    def _close(self, pump: PollThread | None) -> None:
        if pump is not None:
            pump.join()  # close unmaps the rings: never while a poll runs
        # Read the kernel's lost counters just before the maps are freed, so that the final
        # health record reports them (read after close, they would all be 0). Samples lost
        # while the programs detach, once polling has stopped, are not counted.
        self._final = self.sensor.statistics()
        self.sensor.close()

    def statistics(self) -> dict[str, Any]:
        """Per-family events and kernel-lost samples (the last counters once the sensor is closed); whether UDP
        comes from the cgroup hooks; what the start-up drain held."""
        families = self._final if self._final is not None else self.sensor.statistics()
        return {"polls": self.polls, "families": families, "udp_hooks": self.sensor.udp_hooks_error is None,
                "startup": {"records": self.startup_records, "full": self.startup_full,
                            "lost": self.startup_lost}}


class EbpfNormalizer(ActorBase):
    """Decodes raw perf records into Events (sans-IO Decoder), a batch in one call.

    A decoder without ``decode_batch`` is called record by record, and a
    record it raises on is logged (the first per family) and counted in
    :attr:`errors`; the :class:`~edr.sources.ebpf.decode.Decoder` never
    raises (it counts what it cannot read as ``malformed``). The decoder's
    ``next_flush`` (when the oldest unanswered DNS query times out, None
    when none waits) tells the flush task how long it may sleep.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, decoder: Any, log: Any) -> None:
        super().__init__(name)
        self.decoder = decoder
        self.log = log
        self.decoded = 0
        # per record family: the first failures logged with their traceback, the rest counted
        self._undecodable = ErrorLog(log, "undecodable records")
        # set when a batch leaves a DNS query pending while the flush task waits for one (see _flush_every)
        self._dns_pending = trio.Event()

    @property
    def errors(self) -> int:
        """Records the decoder raised on (skipped)."""
        return self._undecodable.total

    async def run(self, ports: Ports) -> None:
        """Decode each batch; a record the decoder rejects is counted, never fatal.

        A second task turns the DNS queries whose answer never came into
        answerless dns_query events when their timeout passes (it sleeps
        until the oldest one's, and while none is pending until a batch
        leaves one); at the end of the stream every query still pending is
        flushed.
        """
        out = ports.output("out")
        # the Decoder takes a whole batch in one call (it never raises); other decoders record by record
        decode = getattr(self.decoder, "decode_batch", None) or self._decode_each
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_every, out)
            async for batch in ports.input("in"):
                events = decode(batch)
                if not self._dns_pending.is_set() and self.decoder.next_flush() is not None:
                    self._dns_pending.set()
                if events:
                    self.decoded += len(events)
                    await out.send(events)
                del batch, events  # freed before the wait for the next: see edr.runtime.flight
            nursery.cancel_scope.cancel()
        await self._flush(out, float("inf"))

    def _decode_each(self, batch: Any) -> list[Any]:
        decode = self.decoder.decode
        events: list[Any] = []
        for raw in batch:
            try:
                events.extend(decode(raw))
            except Exception:
                family = getattr(raw, "family", "?")
                self._undecodable.report("ebpf: undecodable %s record skipped", family, key=family,
                                         exc_info=True)
        return events

    async def _flush_every(self, out: Any) -> None:
        """Flush the unanswered DNS queries as they time out; no wake-up while none is pending."""
        while True:
            due = self.decoder.next_flush()
            if due is None:
                self._dns_pending = trio.Event()
                await self._dns_pending.wait()
                continue
            # the decoder's deadlines are epoch seconds, as flush(None) reads the clock
            await trio.sleep(max(due - time.time(), 0.0))
            await self._flush(out, None)

    async def _flush(self, out: Any, now: float | None) -> None:
        events = self.decoder.flush(now)
        if events:
            self.decoded += len(events)
            await out.send(events)

    def statistics(self) -> dict[str, Any]:
        """Events decoded, records rejected, and the decoder's own counters."""
        return {"decoded": self.decoded, "errors": self.errors, **self.decoder.statistics()}
