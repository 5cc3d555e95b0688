"""Writer actors: the ECS alert file (never drops) and the optional event stream.

Both write through :class:`DailyFile` in a worker thread, once per batch.
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
from collections.abc import Sequence
from typing import Any, ClassVar

import trio

from edr.alerts.daily_file import DailyFile
from edr.alerts.ecs import HostInfo, alert_line
from edr.alerts.ndjson import dumps_line
from edr.detect.alert import Alert
from edr.event import event_to_record
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import InPort

_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0


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


class AlertWriter(ActorBase):
    """Writes every alert as one ECS NDJSON line: to the daily alert file, to standard output, or both.

    ``file`` None writes to standard output only (``edr replay`` without
    ``--output``). When the reader of standard output goes away (``| head``)
    the lines meant for it are dropped and counted in ``stdout_dropped``,
    never in ``unwritten``: nobody is left to read them, and a file, if
    any, still has every alert.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str, file: DailyFile | None, host: HostInfo, *, stdout: bool = False,
                 log: Any = None) -> None:
        super().__init__(name)
        if file is None and not stdout:
            raise ValueError("an alert writer needs a file, standard output, or both")
        self.file = file
        self.host = host
        self.stdout = stdout
        self.log = log
        self.alerts = 0
        self.stdout_dropped = 0
        self.by_rule: dict[str, int] = {}
        self.outbox = Outbox(file, name, log) if file is not None else None
        self._port: InPort | None = None

    async def run(self, ports: Ports) -> None:
        """Write each batch, then take the next; flush and close at end of stream."""
        try:
            inp = ports.input("in")
            self._port = inp
            async for batch in inp:
                lines = []
                rules = []
                for alert in batch:
                    assert isinstance(alert, Alert)
                    lines.append(alert_line(alert, self.host))
                    rules.append(alert.rule_name)
                # The disk write is no work on the graph: a replay source need not wait for it.
                inp.done()
                if self.outbox is not None:
                    # A thread write runs to completion even if cancelled meanwhile;
                    # only the retry sleeps of a failing disk are cancellable.
                    await self.outbox.write(lines)
                delivered = self.outbox is not None
                if self.stdout:
                    delivered = self._echo(lines) or delivered
                if not delivered:
                    self.stdout_dropped += len(lines)
                    continue
                self.alerts += len(lines)
                for rule in rules:
                    self.by_rule[rule] = self.by_rule.get(rule, 0) + 1
        finally:
            if self.file is not None:
                self.file.close()

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
        included) or still on its input edges (queued, or abandoned there by a cancelled sender)."""
        held = self.outbox.unwritten if self.outbox is not None else 0
        return {"alerts": held + _queued(self._port)}

    def statistics(self) -> dict[str, Any]:
        """Alerts written, write errors, alerts not (yet) written, and the file's own counters."""
        stats: dict[str, Any] = {"alerts": self.alerts, "unwritten": self.unwritten()["alerts"]}
        if self.file is not None:
            stats.update(write_errors=self.file.errors, file=self.file.statistics())
        if self.stdout_dropped:
            stats["stdout_dropped"] = self.stdout_dropped
        return stats


class EventWriter(ActorBase):
    """With ``[events] enabled``, writes every event in the replayable NDJSON format."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str, file: DailyFile | None, log: Any = None,
                 categories: frozenset[str] = frozenset()) -> None:
        super().__init__(name)
        self.file = file
        self.log = log
        self.categories = categories
        self.events = 0
        self.outbox = Outbox(file, name, log) if file is not None else None
        self._port: InPort | None = None

    async def run(self, ports: Ports) -> None:
        """Serialize and write each batch (only the configured categories, if any)."""
        try:
            inp = ports.input("in")
            self._port = inp
            async for batch in inp:
                if self.outbox is None:
                    del batch  # freed before the wait for the next: see edr.runtime.flight
                    continue
                if self.categories:
                    batch = [e for e in batch if e.category in self.categories]
                    if not batch:
                        continue
                lines = [dumps_line(event_to_record(e)) for e in batch]
                inp.done()
                await self.outbox.write(lines)
                self.events += len(lines)
        finally:
            if self.file is not None:
                self.file.close()

    def unwritten(self) -> dict[str, int]:
        """Events given to the enabled stream and not on disk (nothing when the stream is off).

        Counted before the category filter, as the edge counts them: an event
        still queued when the writer was cancelled may be one it would have skipped.
        """
        if self.outbox is None:
            return {}
        return {"events": self.outbox.unwritten + _queued(self._port)}

    def statistics(self) -> dict[str, Any]:
        """Events written, and the file's own counters when the stream is on."""
        stats: dict[str, Any] = {"events": self.events}
        if self.file is not None:
            stats["file"] = self.file.statistics()
        return stats
