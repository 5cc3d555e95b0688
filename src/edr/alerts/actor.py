"""Writer actors: the ECS alert file (never drops) and the optional event stream.

Both write through :class:`DailyFile` in a worker thread, once per batch.
On a write error the alert writer logs it, keeps the unwritten lines and
retries with backoff before it takes the next batch; its input edge blocks,
so upstream backpressure holds alerts rather than losing them.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import trio

from edr.alerts.daily_file import DailyFile
from edr.alerts.ecs import HostInfo, to_ecs
from edr.alerts.ndjson import dumps_line
from edr.detect.alert import Alert
from edr.event import event_to_record
from edr.runtime.actor import ActorBase, ActorContext, Ports

_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0


async def write_with_retry(file: DailyFile, lines: list[bytes], what: str, log: Any) -> None:
    """Write ``lines``; on error log and retry with backoff until it succeeds (or cancellation)."""
    delay = _RETRY_FIRST
    first = True
    while True:
        try:
            if first:
                await trio.to_thread.run_sync(file.write, lines)
            else:
                await trio.to_thread.run_sync(file.flush)
            return
        except OSError as exc:
            log.error("%s: writing %s failed (%s); %d bytes kept, retrying in %.1fs",
                      what, file.current_path, exc, file.pending, delay)
            first = False
            await trio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)


class AlertWriter(ActorBase):
    """Writes every alert as one ECS NDJSON line; optionally echoes to stdout."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str, file: DailyFile, host: HostInfo, *, stdout: bool = False,
                 log: Any = None) -> None:
        super().__init__(name)
        self.file = file
        self.host = host
        self.stdout = stdout
        self.log = log
        self.alerts = 0
        self.by_rule: dict[str, int] = {}

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> AlertWriter:
        """From ``[alerts]``; ``ctx.options['stdout']`` echoes alerts to standard output."""
        cfg = ctx.config.alerts
        file = ctx.options.get("alert_file") or DailyFile(cfg.directory, cfg.filename)
        return cls(name, file, HostInfo(), stdout=bool(ctx.options.get("stdout")), log=ctx.log)

    async def run(self, ports: Ports) -> None:
        """Write each batch, then take the next; flush and close at end of stream."""
        try:
            inp = ports.input("in")
            async for batch in inp:
                lines = []
                for alert in batch:
                    assert isinstance(alert, Alert)
                    lines.append(dumps_line(to_ecs(alert, self.host)))
                    self.by_rule[alert.rule_name] = self.by_rule.get(alert.rule_name, 0) + 1
                # The disk write is no work on the graph: a replay source need not wait for it.
                inp.done()
                # A thread write runs to completion even if cancelled meanwhile;
                # only the retry sleeps of a failing disk are cancellable.
                await write_with_retry(self.file, lines, self.name, self.log)
                self.alerts += len(lines)
                if self.stdout:
                    try:
                        sys.stdout.buffer.write(b"".join(lines))
                        sys.stdout.flush()
                    except (BrokenPipeError, ValueError):
                        # The reader went away (`| head`); the alert file still has everything.
                        self.stdout = False
        finally:
            self.file.close()

    def statistics(self) -> dict[str, Any]:
        """Alerts written, write errors."""
        return {"alerts": self.alerts, "write_errors": self.file.errors}


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

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> EventWriter:
        """From ``[events]``; disabled means the actor only drains its input."""
        cfg = ctx.config.events
        file = DailyFile(cfg.directory, cfg.filename) if cfg.enabled else None
        return cls(name, file, ctx.log, frozenset(cfg.categories))

    async def run(self, ports: Ports) -> None:
        """Serialize and write each batch (only the configured categories, if any)."""
        try:
            inp = ports.input("in")
            async for batch in inp:
                if self.file is None:
                    del batch  # freed before the wait for the next: see edr.runtime.flight
                    continue
                if self.categories:
                    batch = [e for e in batch if e.category in self.categories]
                    if not batch:
                        continue
                lines = [dumps_line(event_to_record(e)) for e in batch]
                inp.done()
                await write_with_retry(self.file, lines, self.name, self.log)
                self.events += len(lines)
        finally:
            if self.file is not None:
                self.file.close()

    def statistics(self) -> dict[str, Any]:
        """Events written."""
        return {"events": self.events}
