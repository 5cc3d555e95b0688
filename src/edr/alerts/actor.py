"""Writer actors: the ECS alert file (never drops) and the optional event stream.

Both write through :class:`DailyFile` in a worker thread: the alert writer
once per batch, the event stream once per EVENTS_WRITE_DELAY at most.
On a write error the alert writer logs it, keeps the unwritten lines and
retries with backoff before it takes the next batch; its input edge blocks,
so upstream backpressure holds alerts rather than losing them.

Shutdown: a writer drains its input and ends once everything is on disk.
When the disk does not come back, only cancellation (the supervisor's stop
timeout, a second signal) ends it; ``unwritten()`` then says exactly how
many lines never reached the file, for the exit report (see
:mod:`edr.runtime.supervisor`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from math import inf
from typing import Any, ClassVar

import trio

from edr.alerts.alert_lines import AlertLines, Lines
from edr.alerts.chain import ChainState
from edr.alerts.chain_recovery import AnchorSchedule, anchor_for, save_anchor
from edr.alerts.daily_file import DailyFile
from edr.alerts.ndjson import dumps_line
from edr.event import event_to_record
from edr.platform.private_files import PrivateDir
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import InPort, OutPort

_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0
#: The event stream writes what it gathered at most this many seconds after the first of it arrived...
EVENTS_WRITE_DELAY = 0.1
#: ...or as soon as it holds this many lines (~0.5 KB each)
EVENTS_WRITE_LINES = 4096


class Outbox:
    """One batch of lines on its way into a :class:`DailyFile`, and how many of them are not on disk yet.

    :meth:`write` hands the lines to the file in a worker thread and retries
    until all of them are written; only then does the writer take its next
    batch, so at most one batch is ever unwritten here. Until the file has
    accepted the batch every line of it counts as unwritten; afterwards the
    file's pending bytes are the unwritten tail of the batch (a line is
    written whole or retried from where it stopped, see
    :meth:`DailyFile.write`), and a line counts until its last byte is written.
    """

    def __init__(self, file: DailyFile, what: str, log: Any) -> None:
        self.file = file
        self.what = what
        self.log = log
        self._held = 0  # lines not yet accepted by the file
        self._accepted: list[int] = []  # byte lengths of the accepted lines not all confirmed written

    @property
    def unwritten(self) -> int:
        """Lines given to :meth:`write` and not entirely on disk.

        Exact whenever no write thread is running (always, once the writer has
        ended); while one runs, it may count a line that is being written.
        """
        if self._held:
            return self._held
        pending = self.file.pending
        n = 0
        for length in reversed(self._accepted):
            if pending <= 0:
                break
            n += 1
            pending -= length
        return n

    async def write(self, lines: Sequence[bytes]) -> None:
        """Write ``lines``; on error log and retry with backoff until it succeeds.

        Cancellation: the thread write in progress runs to its end (a line is
        never cut by us); the retry waits are cancellable, and what was not
        written then stays counted in :attr:`unwritten`.
        """
        self._held = len(lines)
        self._accepted = []
        delay = _RETRY_FIRST
        first = True
        while True:
            try:
                if first:
                    await trio.to_thread.run_sync(self.file.write, lines)
                else:
                    await trio.to_thread.run_sync(self.file.flush)
                break
            except OSError as exc:
                if first:
                    # DailyFile.write keeps every accepted line pending when it raises
                    self._accepted = [len(line) for line in lines]
                    self._held = 0
                    first = False
                self.log.error("%s: writing %s failed (%s); %d line(s), %d bytes kept, retrying in %.1fs",
                               self.what, self.file.current_path, exc, self.unwritten, self.file.pending, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
        self._held = 0
        self._accepted = []


def _queued(port: InPort | None) -> int:
    """Items on ``port``'s edges that never reached its actor: still queued, or abandoned by a cancelled sender."""
    if port is None:
        return 0
    return sum(edge.statistics().depth + edge.abandoned for edge in port.edges)


class ChainAnchor:
    """Where the alert chain's last link is kept between runs, and when to save it (live agents only).

    Saved at most once per second while alerts are written, and at close, in
    a worker thread, through ``PrivateDir.write_atomic`` (a write, an fsync
    and a rename: milliseconds, more on a busy disk); a failure is logged and
    retried at the next save, never fatal (the alert files themselves carry
    the chain; the anchor only shows lines cut from the end while stopped).

    :meth:`keep` is the task that saves while the writer runs: the writer
    only tells it (:meth:`written`) how far the file goes, and never waits
    for a save, so an alert is never held behind the anchor's fsync.
    """

    def __init__(self, state: PrivateDir, family: str, key: bytes | None, log: Any) -> None:
        self.state = state
        self.family = family
        self.key = key
        self.log = log
        self.schedule = AnchorSchedule(1.0)
        #: the chain's state as far as the alert file has it (never ahead of the file)
        self._written: ChainState | None = None
        self._moved = trio.Event()
        #: saves done (for the statistics and tests)
        self.saves = 0

    def written(self, state: ChainState) -> None:
        """The alert file now holds every line up to ``state``: the next save records it. Never waits."""
        self._written = state
        self._moved.set()

    async def keep(self) -> None:
        """Save what :meth:`written` reported, at most once per ``schedule.interval``, until cancelled.

        Cancellation: taken while waiting; a save under way in its thread
        finishes first (a rename is never left half done by us).
        """
        while True:
            await self._moved.wait()
            self._moved = trio.Event()
            delay = self.schedule.due_in(time.monotonic())
            if delay > 0:
                await trio.sleep(delay)
            await self.save()

    async def save(self, state: ChainState | None = None, *, force: bool = False) -> None:
        """Save ``state`` (default: the written state) if due (or, with ``force``, if not saved yet)."""
        state, now = state if state is not None else self._written, time.monotonic()
        if state is None or not (self.schedule.pending(state) if force else self.schedule.due(now, state)):
            return
        try:
            await trio.to_thread.run_sync(save_anchor, self.state, anchor_for(state, family=self.family,
                                                                                key=self.key))
        except OSError as exc:
            self.log.error("alerts: cannot save the chain anchor in %s: %s", self.state.path, exc)
            return
        self.schedule.saved(now, state)
        self.saves += 1


class AlertWriter(ActorBase):
    """Writes every alert as one chained ECS NDJSON line: to the daily alert file, standard output, or both.

    The lines come from :class:`~edr.alerts.alert_lines.AlertLines`: identical
    alerts are folded (the first written at once, a rollup with
    ``edr.alert.count`` when its window closes), every line carries
    ``edr.chain.seq``/``edr.chain.hash``. ``clock`` (live agents) lets a quiet
    writer close due dedup windows on the wall clock; a replay has none: its
    windows close on the alerts' own times.

    ``file`` None writes to standard output only (``edr replay`` without
    ``--output``). When the reader of standard output goes away (``| head``)
    the lines meant for it are dropped and counted in ``stdout_dropped``,
    never in ``unwritten``: nobody is left to read them, and a file, if
    any, still has every alert.
    """

    inputs: ClassVar = ("in",)
    #: the documents written (after dedup, with ``event.id`` and the chain's fields), for the sinks;
    #: sent after the file write, so the file stays the source of truth
    outputs: ClassVar = ("out",)
    optional_outputs: ClassVar = ("out",)

    def __init__(self, name: str, file: DailyFile | None, core: AlertLines, *, stdout: bool = False,
                 log: Any = None, anchor: ChainAnchor | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(name)
        if file is None and not stdout:
            raise ValueError("an alert writer needs a file, standard output, or both")
        self.file = file
        self.core = core
        self.stdout = stdout
        self.log = log
        self.anchor = anchor
        self.clock = clock
        self.alerts = 0
        self.stdout_dropped = 0
        self.by_rule: dict[str, int] = {}
        self.outbox = Outbox(file, name, log) if file is not None else None
        self._out: OutPort | None = None
        self._port: InPort | None = None

    async def run(self, ports: Ports) -> None:
        """Write each batch's lines (and due rollups), then take the next; flush, finish and close at the end."""
        try:
            inp = ports.input("in")
            self._port = inp
            out = ports.outputs.get("out")
            self._out = out if out is not None and out.edges else None
            core = self.core
            if self.clock is None:
                # replay: dedup windows close on the alerts' own times; no timer, no cancel scope per batch
                async for batch in inp:
                    await self._write(core.accept(batch), inp)
                    del batch  # freed before the wait for the next: see edr.runtime.flight
            elif self.anchor is None:
                await self._run_live(inp, self.clock)
            else:
                # the anchor is saved beside the writes, by its own task: see ChainAnchor
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.anchor.keep)
                    await self._run_live(inp, self.clock)
                    nursery.cancel_scope.cancel()
            await self._write(core.finish(), inp)
            if self.anchor is not None:
                # at close, as before: the chain as this run leaves it, even when it wrote nothing
                await self.anchor.save(core.chain.state, force=True)
        finally:
            if self.file is not None:
                self.file.close()

    async def _run_live(self, inp: InPort, clock: Callable[[], float]) -> None:
        """Batches as they come; on a quiet host, the rollups of dedup windows that closed meanwhile."""
        core = self.core
        while True:
            due = core.due()
            batch: Any = None
            with trio.move_on_after(inf if due is None else max(0.0, due - clock())):
                batch = await inp.receive()
                if batch is None:
                    return
            if batch is None:
                await self._write(core.tick(clock()), inp)
            else:
                await self._write(core.accept(batch), inp)
                del batch

    async def _write(self, lines: Lines, inp: InPort) -> None:
        # The disk write is no work on the graph: a replay source need not wait for it.
        inp.done()
        if not lines:
            return
        delivered = self.outbox is not None
        if self.outbox is not None:
            # A thread write runs to completion even if cancelled meanwhile;
            # only the retry sleeps of a failing disk are cancellable.
            await self.outbox.write(lines)
        if self.stdout:
            delivered = self._echo(lines) or delivered
        if self._out is not None:  # the sinks: after the file, whatever became of standard output
            await self._out.send(lines.docs)
        if not delivered:
            self.stdout_dropped += len(lines)
            return
        self.alerts += len(lines)
        for rule in lines.rules:
            self.by_rule[rule] = self.by_rule.get(rule, 0) + 1
        if self.anchor is not None:
            # the lines are on disk: the anchor may record them (its task saves, this never waits)
            self.anchor.written(self.core.chain.state)

    def _echo(self, lines: list[bytes]) -> bool:
        """Write ``lines`` to standard output; False once its reader has gone away (``| head``)."""
        try:
            sys.stdout.buffer.write(b"".join(lines))
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            self.stdout = False  # say nothing more to it
            return False
        return True

    def unwritten(self) -> dict[str, int]:
        """Alerts given to this writer and not delivered: in its hands (the file's pending lines
        included, and the repeats its open dedup windows count, whose rollup is not written yet) or still
        on its input edges (queued, or abandoned there by a cancelled sender)."""
        held = self.outbox.unwritten if self.outbox is not None else 0
        return {"alerts": held + self.core.held + _queued(self._port)}

    def statistics(self) -> dict[str, Any]:
        """Lines written, alerts not (yet) written, the core's dedup and chain counters, the file's own."""
        stats: dict[str, Any] = {"alerts": self.alerts, "unwritten": self.unwritten()["alerts"],
                                 **{k: v for k, v in self.core.statistics().items() if k != "alerts"}}
        if self.file is not None:
            stats.update(write_errors=self.file.errors, file=self.file.statistics())
        if self.stdout_dropped:
            stats["stdout_dropped"] = self.stdout_dropped
        return stats


class EventWriter(ActorBase):
    """With ``[events] enabled``, writes every event in the replayable NDJSON format.

    Lines are gathered for up to ``write_delay`` seconds (or until
    ``write_lines`` of them) and written in one worker-thread round trip:
    one round trip per batch cost the event loop more than serializing the
    batch. The stream is a record, not an alert, so its lines may reach the
    file that much later; those gathered and not yet written count in
    :meth:`unwritten`. Backpressure: while a write is under way (or retried
    after an error) the writer takes no batch, so its input edge fills and
    blocks, as before; the gathered lines are bounded by ``write_lines``.
    At the end of the input everything gathered is written before the actor
    ends.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str, file: DailyFile | None, log: Any = None,
                 categories: frozenset[str] = frozenset(), *, write_delay: float = EVENTS_WRITE_DELAY,
                 write_lines: int = EVENTS_WRITE_LINES) -> None:
        super().__init__(name)
        self.file = file
        self.log = log
        self.categories = categories
        self.write_delay = write_delay
        self.write_lines = write_lines
        self.events = 0
        #: writes (worker-thread round trips) done
        self.writes = 0
        self.outbox = Outbox(file, name, log) if file is not None else None
        self._port: InPort | None = None
        self._gathered: list[bytes] = []

    async def run(self, ports: Ports) -> None:
        """Serialize each batch (only the configured categories, if any); write what was gathered."""
        try:
            inp = ports.input("in")
            self._port = inp
            if self.outbox is None:
                async for batch in inp:
                    del batch  # freed before the wait for the next: see edr.runtime.flight
                return
            await self._gather_and_write(inp, self.outbox)
        finally:
            if self.file is not None:
                self.file.close()

    async def _gather_and_write(self, inp: InPort, outbox: Outbox) -> None:
        categories = self.categories
        ended = False
        while not ended:
            # The deadline is set by the first line gathered. It cancels only the wait for a batch
            # (the one checkpoint in here): a batch taken is always serialized.
            with trio.CancelScope() as gathering:
                while len(self._gathered) < self.write_lines:
                    batch = await inp.receive()
                    if batch is None:
                        ended = True
                        break
                    if categories:
                        batch = [e for e in batch if e.category in categories]
                    if batch:
                        if not self._gathered:
                            gathering.deadline = trio.current_time() + self.write_delay
                        self._gathered += [dumps_line(event_to_record(e)) for e in batch]
                    inp.done()
                    del batch
            if self._gathered:
                # handed over whole: the outbox counts them as unwritten from its first statement on
                lines, self._gathered = self._gathered, []
                await outbox.write(lines)
                self.events += len(lines)
                self.writes += 1

    def unwritten(self) -> dict[str, int]:
        """Events given to the enabled stream and not on disk (nothing when the stream is off): gathered,
        being written, or still on the input edge.

        Counted before the category filter, as the edge counts them: an event
        still queued when the writer was cancelled may be one it would have skipped.
        """
        if self.outbox is None:
            return {}
        return {"events": len(self._gathered) + self.outbox.unwritten + _queued(self._port)}

    def statistics(self) -> dict[str, Any]:
        """Events written, writes (worker-thread round trips), and the file's own counters when the stream is on."""
        stats: dict[str, Any] = {"events": self.events, "writes": self.writes}
        if self.file is not None:
            stats["file"] = self.file.statistics()
        return stats
