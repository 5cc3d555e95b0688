"""Pull subscriptions to Event Log channels through pywin32, read from a worker thread.

One ``win32evtlog.EvtSubscribe`` per channel, each with a manual-reset
``win32event`` event that Windows signals when records arrive (a *pull*
subscription). :meth:`EventLogReader.read` waits on those events at most
``wait_ms``, then takes at most ``limit`` records with ``EvtNext``, renders
each to XML (``EvtRender(EvtRenderEventXml)``) and parses it
(:mod:`edr.sources.etw.eventlog_xml`) into the record ``edr replay`` decodes.

Pull rather than push on purpose. An Event Log channel keeps its records:
a reader that falls behind loses nothing as long as it reads them later, so
the natural backpressure is to stop pulling. The source only calls
:meth:`~EventLogReader.read` when the pipeline took the last batch, so this
path never drops a record and holds at most one batch (a push callback runs
on Windows' thread pool and would have to buffer or drop).

The modules are passed in (``win32evtlog`` and ``win32event`` on Windows,
stand-ins in tests), so nothing here imports pywin32. A channel that
cannot be subscribed to (absent, access denied) or whose subscription fails
later (the log was cleared under it) is logged and tried again after
``retry_secs``, resuming after the last record read; the other channels go
on. Not thread-safe: one thread at a time (the source's worker thread).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from edr.event import RejectedRecord
from edr.sources.etw.eventlog_bookmarks import bookmark_xml
from edr.sources.etw.eventlog_xml import EventXmlError, parse_event_xml

log = logging.getLogger("edr.eventlog")

#: EvtNext found nothing (pywin32 turns it into an empty tuple; kept for other callers' errors).
ERROR_NO_MORE_ITEMS: Final = 259
#: EvtNext waited its timeout out.
ERROR_TIMEOUT: Final = 1460
#: How long one EvtNext may wait for records a signal announced (milliseconds); it returns at once when
#: there are none.
NEXT_TIMEOUT_MS: Final = 500
_RECORD_ID: Final = re.compile(r"<EventRecordID>\s*(\d+)\s*</EventRecordID>")


class LiveRecord(NamedTuple):
    """One record read from ``channel``: the parsed record (or why it could not be), and its ``EventRecordID``."""

    channel: str
    record: dict[str, Any] | RejectedRecord
    record_id: int | None


class _Channel:
    """One channel's subscription and counters."""

    __slots__ = ("failures", "last_read", "name", "pending", "problem", "read", "rejected", "repaired",
                 "retry_at", "signal", "subscription")

    def __init__(self, name: str, start_after: int | None) -> None:
        self.name = name
        self.subscription: Any = None
        self.signal: Any = None
        #: records may be waiting without a signal (the last EvtNext filled its batch)
        self.pending = False
        self.retry_at = 0.0
        self.problem: str | None = None
        self.failures = 0
        self.read = 0
        self.rejected = 0
        self.repaired = 0
        #: the last record read (where a new subscription resumes), at first the bookmark's
        self.last_read = start_after


def describe(exc: BaseException) -> str:
    """A Win32 error as ``funcname: message (error N)``, whatever its class (pywintypes.error or OSError)."""
    code = getattr(exc, "winerror", None)
    text = getattr(exc, "strerror", None) or str(exc)
    func = getattr(exc, "funcname", None)
    where = f"{func}: " if func else ""
    return f"{where}{text} (error {code})" if code is not None else f"{where}{text}"


def record_id_of(record: Any, xml: str) -> int | None:
    """The record's ``System/EventRecordID``, from the parsed record or else the XML text."""
    try:
        value = record["Event"]["System"]["EventRecordID"]
        return int(value if isinstance(value, (str, int)) else value["#text"])
    except (KeyError, TypeError, ValueError):
        match = _RECORD_ID.search(xml)
        return int(match.group(1)) if match else None


class EventLogReader:
    """Reads ``channels`` through pull subscriptions (see the module docstring).

    ``start_after`` gives, per channel, the record to resume after (the
    saved bookmark); a channel without one starts with the records logged
    from now on.
    """

    def __init__(self, evtlog: Any, events: Any, channels: Sequence[str], *,
                 start_after: Mapping[str, int] | None = None, retry_secs: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.evtlog = evtlog
        self.events = events
        self.retry_secs = retry_secs
        self.clock = clock
        after = start_after or {}
        self.channels = [_Channel(name, after.get(name)) for name in channels]
        self._turn = 0
        self.waits = 0
        self.timeouts = 0

    # --- subscriptions ---------------------------------------------------------
    def open(self) -> None:
        """Subscribe to every channel (blocking); one that fails is logged and retried later."""
        for channel in self.channels:
            self._subscribe(channel)

    def _subscribe(self, channel: _Channel) -> None:
        evtlog = self.evtlog
        try:
            if channel.signal is None:
                # manual reset, set at first: the first read looks for records already waiting
                channel.signal = self.events.CreateEvent(None, True, True, None)
            if channel.last_read is None:
                flags, bookmark = evtlog.EvtSubscribeToFutureEvents, None
            else:
                flags = evtlog.EvtSubscribeStartAfterBookmark
                bookmark = evtlog.EvtCreateBookmark(bookmark_xml(channel.name, channel.last_read))
            channel.subscription = evtlog.EvtSubscribe(channel.name, flags, SignalEvent=channel.signal,
                                                       Query="*", Bookmark=bookmark)
        except Exception as exc:
            self._failed(channel, f"cannot subscribe: {describe(exc)}")
            return
        self.events.SetEvent(channel.signal)
        channel.pending = True
        if channel.problem is not None:
            log.info("eventlog: channel %r is read again", channel.name)
        channel.problem = None
        where = f"after record {channel.last_read}" if channel.last_read is not None else "with new records"
        log.info("eventlog: subscribed to channel %r, starting %s", channel.name, where)

    def _failed(self, channel: _Channel, problem: str) -> None:
        if problem != channel.problem:  # said once per distinct problem, not every retry
            log.warning("eventlog: channel %r: %s; trying again every %gs", channel.name, problem, self.retry_secs)
        channel.problem = problem
        channel.failures += 1
        _close(channel.subscription)
        channel.subscription = None
        channel.pending = False
        channel.retry_at = self.clock() + self.retry_secs

    def _retry_due(self) -> None:
        now = self.clock()
        for channel in self.channels:
            if channel.subscription is None and now >= channel.retry_at:
                self._subscribe(channel)

    # --- reading ---------------------------------------------------------------
    def read(self, limit: int, wait_ms: int) -> list[LiveRecord]:
        """At most ``limit`` records, waiting at most ``wait_ms`` for the first (blocking)."""
        self._retry_due()
        live = [c for c in self.channels if c.subscription is not None]
        if not live:
            time.sleep(wait_ms / 1000)  # every channel is waiting for its retry
            return []
        ready = [c for c in live if c.pending]
        if not ready:
            self.waits += 1
            events = self.events
            result = events.WaitForMultipleObjects([c.signal for c in live], False, wait_ms)
            index = result - events.WAIT_OBJECT_0
            if not 0 <= index < len(live):  # WAIT_TIMEOUT (or WAIT_FAILED: the next read waits again)
                self.timeouts += 1
                return []
            # the lowest signalled index is reported; the others may be signalled as well
            for n, channel in enumerate(live):
                channel.pending = n == index or events.WaitForSingleObject(channel.signal, 0) == events.WAIT_OBJECT_0
            ready = [c for c in live if c.pending]
        out: list[LiveRecord] = []
        # channels take turns at being first, so a busy one cannot keep the others waiting
        self._turn = (self._turn + 1) % len(ready)
        for channel in itertools.islice(itertools.cycle(ready), self._turn, self._turn + len(ready)):
            if len(out) >= limit:
                break
            self._pull(channel, limit - len(out), out)
        return out

    def _pull(self, channel: _Channel, count: int, out: list[LiveRecord]) -> None:
        evtlog = self.evtlog
        # reset before reading: a record logged from now on sets it again, so none waits unseen
        self.events.ResetEvent(channel.signal)
        try:
            handles = evtlog.EvtNext(channel.subscription, count, NEXT_TIMEOUT_MS)
        except Exception as exc:
            if getattr(exc, "winerror", None) in (ERROR_NO_MORE_ITEMS, ERROR_TIMEOUT):
                handles = ()
            else:
                self._failed(channel, f"reading failed: {describe(exc)}")
                return
        channel.pending = len(handles) >= count  # a full batch: more may be waiting
        for handle in handles:
            try:
                xml = evtlog.EvtRender(handle, evtlog.EvtRenderEventXml)
            except Exception as exc:
                channel.rejected += 1
                out.append(LiveRecord(channel.name, RejectedRecord(f"cannot be rendered: {describe(exc)}"), None))
                continue
            finally:
                _close(handle)
            out.append(self._record(channel, xml))

    def _record(self, channel: _Channel, xml: Any) -> LiveRecord:
        channel.read += 1
        try:
            parsed = parse_event_xml(xml)
        except EventXmlError as exc:
            channel.rejected += 1
            record_id = record_id_of(None, xml if isinstance(xml, str) else "")
            if record_id is not None:
                channel.last_read = record_id
            return LiveRecord(channel.name, RejectedRecord(f"event XML {exc}"), record_id)
        if parsed.repaired:
            channel.repaired += 1
        record_id = record_id_of(parsed.record, xml)
        if record_id is not None:
            channel.last_read = record_id
        return LiveRecord(channel.name, parsed.record, record_id)

    def close(self) -> None:
        """Close every subscription and signal (blocking); reading ends."""
        for channel in self.channels:
            _close(channel.subscription)
            _close(channel.signal)
            channel.subscription = channel.signal = None
            channel.pending = False

    def statistics(self) -> dict[str, Any]:
        """Per channel: records read, rejected (unrenderable or unparseable), repaired, last read, state."""
        return {
            "channels": {
                c.name: {"read": c.read, "rejected": c.rejected, "repaired": c.repaired, "last_read": c.last_read,
                         "subscribed": c.subscription is not None, "failures": c.failures,
                         **({"problem": c.problem} if c.problem else {})}
                for c in self.channels
            },
            "waits": self.waits, "timeouts": self.timeouts,
        }


def _close(handle: Any) -> None:
    """Close a pywin32 handle now rather than when it is collected; a failure to close changes nothing."""
    close = getattr(handle, "Close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.debug("eventlog: closing a handle failed", exc_info=True)
