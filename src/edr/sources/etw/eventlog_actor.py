"""Actors of the Event Log channels: the source (pull subscriptions, bookmarks) and its normalizer.

The source reads in a worker thread (:class:`~edr.sources.etw.eventlog_reader.EventLogReader`:
waiting, ``EvtNext``, ``EvtRender`` and the XML parse are all blocking or
CPU work) and asks for the next batch only once the last one was sent: the
channels keep what is not read yet, so backpressure reaches Windows'
own log and nothing is dropped on the way. A channel's bookmark advances
when a record has been sent on, and is written every
``eventlog.bookmark_interval_secs`` and when the source stops, after what
it still held was sent down the draining pipeline; the next start resumes
after it. After an orderly stop nothing is read twice or lost; after a
crash, what was sent since the last write is read again (at least once).

The normalizer turns each record into the Event ``edr replay`` makes of the
same record (:func:`~edr.sources.replay.winlog.winlog_record_to_event`), so
SigmaHQ's ``service:`` rules match live exactly as on recorded logs; its
provenance names the channel and record, not a file.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import trio

from edr.event import Event, RecordError, RejectedRecord
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.errlog import ErrorLog
from edr.runtime.transform import transform
from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.etw.eventlog_bookmarks import BookmarkFile, Bookmarks
from edr.sources.etw.eventlog_reader import EventLogReader, LiveRecord
from edr.sources.replay.winlog import winlog_record_to_event

log = logging.getLogger("edr.eventlog")

#: How long one read waits for a record before it returns empty: bounds how long a stop waits for it.
WAIT_MS: Final = 250
#: Longest the source spends sending what it still held at shutdown.
DRAIN_SECS: Final = 2.0
#: Provenance keys of a recorded file, which a live record has none of.
_FILE_KEYS: Final = ("log.file.path", "log.record")
MAX_REPORTED: Final = 20


class EventLogUnavailable(SensorUnavailable):
    """The Event Log cannot be read here; the message says why and what to do."""


def import_pywin32() -> tuple[Any, Any]:
    """pywin32's ``win32evtlog`` and ``win32event``; raises :class:`EventLogUnavailable` when they cannot load."""
    try:
        return importlib.import_module("win32evtlog"), importlib.import_module("win32event")
    except Exception as exc:  # ImportError off Windows; a broken pywin32 install raises others
        raise EventLogUnavailable(
            f"pywin32 (win32evtlog, win32event) cannot be loaded: {exc}. The Event Log source runs on Windows only; "
            "install edr there with its Windows dependencies (pip install edr installs pywin32)") from exc


class EventLogSource(ActorBase):
    """Subscribes to the channels when it runs; sends what they log until cancelled (see the module docstring)."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str, reader: EventLogReader, bookmarks: Bookmarks, store: BookmarkFile | None,
                 batch_size: int, *, save_interval: float = 5.0) -> None:
        super().__init__(name)
        self.reader = reader
        self.bookmarks = bookmarks
        self.store = store
        self.batch_size = batch_size
        self.save_interval = save_interval
        self.sent = 0
        self.saves = 0
        self.save_failures = 0
        self._unsent: list[LiveRecord] = []
        self._last_save = 0.0

    async def run(self, ports: Ports) -> None:
        """Subscribe, send batches, write bookmarks; on cancellation send what was held and write them once more.

        Reads run in a worker thread that a cancellation waits for (at most
        :data:`WAIT_MS` plus the rendering of one batch): a batch it read is
        never dropped by a cancellation. The last send, and the last write
        of the bookmarks, are shielded and bounded by :data:`DRAIN_SECS`.
        """
        out = ports.output("out")
        self._last_save = time.monotonic()
        try:
            await trio.to_thread.run_sync(self.reader.open)
            while True:
                self._unsent = await trio.to_thread.run_sync(self.reader.read, self.batch_size, WAIT_MS)
                await self._send(out)
                if self.bookmarks.dirty and time.monotonic() - self._last_save >= self.save_interval:
                    await self._save()
        finally:
            with trio.move_on_after(DRAIN_SECS) as scope:
                scope.shield = True
                await self._send(out)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.reader.close)
                await self._save()

    async def _send(self, out: Any) -> None:
        """Send ``_unsent`` in batches; each record sent advances its channel's bookmark."""
        size = self.batch_size
        while self._unsent:
            chunk = self._unsent[:size]
            await out.send(chunk)  # raises Cancelled before it queues, never after
            del self._unsent[:size]
            self.sent += len(chunk)
            for item in chunk:
                if item.record_id is not None:
                    self.bookmarks.advance(item.channel, item.record_id)

    async def _save(self) -> None:
        """Write the bookmarks (in a worker thread) if they changed; a failure is logged and retried later."""
        self._last_save = time.monotonic()
        if self.store is None or not self.bookmarks.dirty:
            return
        # the task that advances the bookmarks is this one: nothing changes them during the write
        try:
            await trio.to_thread.run_sync(self.store.write, self.bookmarks.to_bytes())
        except OSError as exc:
            self.save_failures += 1
            log.error("eventlog: cannot write the bookmarks to %s: %s (a restart would read those records again)",
                      self.store.path, exc)
            return
        self.bookmarks.dirty = False
        self.saves += 1

    def statistics(self) -> dict[str, Any]:
        """Records sent, per channel what was read and where each bookmark is, bookmark writes."""
        stats = self.reader.statistics()
        positions = self.bookmarks.positions()
        for name, channel in stats["channels"].items():
            channel["bookmark"] = positions.get(name)
        return {"sent": self.sent, **stats, "bookmark_writes": self.saves,
                "bookmark_write_failures": self.save_failures}


def live_event(item: LiveRecord, seq: int) -> Event:
    """The Event of one live record, as replay would make it, with the channel's provenance; raises RecordError."""
    record = item.record
    if isinstance(record, RejectedRecord):
        raise RecordError(record.reason)
    event = winlog_record_to_event(record, "", seq)
    origin = event.origin
    if origin is not None:
        event.origin = {k: v for k, v in origin.items() if k not in _FILE_KEYS and v is not None}
    return event


class EventLogNormalizer(ActorBase):
    """Event Log records -> Events; a record that cannot be one is logged (channel, record, why) and skipped."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, log: logging.Logger = log) -> None:
        super().__init__(name)
        self.decoded = 0
        self.seq = 0
        self._bad = ErrorLog(log, "unreadable Event Log records", MAX_REPORTED)

    @property
    def rejected(self) -> int:
        """Records skipped."""
        return self._bad.total

    def decode(self, batch: Sequence[LiveRecord]) -> list[Event]:
        """Sans-IO core: one batch of records to events."""
        out: list[Event] = []
        for item in batch:
            self.seq += 1
            try:
                out.append(live_event(item, self.seq))
            except RecordError as exc:
                self._bad.report("eventlog: channel %r record %s skipped: %s", item.channel,
                                 item.record_id if item.record_id is not None else "?", exc, key=item.channel,
                                 level=logging.WARNING)
        self.decoded += len(out)
        return out

    async def run(self, ports: Ports) -> None:
        """Decode each batch and pass it on."""
        await transform(ports, self.decode)

    def statistics(self) -> dict[str, Any]:
        """Decoded and rejected records."""
        return {"decoded": self.decoded, "rejected": self.rejected}
