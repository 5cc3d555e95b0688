"""Test support: stand-ins for pywin32's ``win32evtlog`` and ``win32event``, over a simulated Event Log service.

Written from pywin32's ``win32/src/win32evtlog.i`` and ``win32event.i`` and
the Windows Event Log API documentation, for what the source uses:

- ``win32event.CreateEvent(sa, bManualReset, bInitialState, name)``,
  ``SetEvent``, ``ResetEvent``, ``WaitForSingleObject(h, ms)``,
  ``WaitForMultipleObjects(handles, bWaitAll, ms)`` (``WAIT_OBJECT_0 + i`` of
  the lowest signalled handle, ``WAIT_TIMEOUT`` = 258), real waits on a
  condition variable, so a thread blocked in them wakes when another thread
  logs a record;
- ``win32evtlog.EvtSubscribe(ChannelPath, Flags, SignalEvent=..., Query=...,
  Bookmark=...)`` (a pull subscription: the signal is set whenever the
  channel gets a record), ``EvtNext(ResultSet, Count, Timeout)`` (a tuple of
  event handles, empty when there are none), ``EvtRender(Event, Flags)``
  (``EvtRenderEventXml``: the event's XML; ``EvtRenderBookmark``),
  ``EvtCreateBookmark(BookmarkXML)``, and the flag constants with their
  Windows values;
- errors as ``pywintypes.error(winerror, funcname, strerror)``.

:class:`EventLogService` stands for the machine's Event Log: channels hold
records in order and number them (``EventRecordID``) as Windows does when a
record is logged, whatever number the XML came with. A test logs records
from its own thread with :meth:`EventLogService.log`.
"""

from __future__ import annotations

import re
import threading
import time
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 258
INFINITE = 0xFFFFFFFF
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_PARAMETER = 87
ERROR_EVT_CHANNEL_NOT_FOUND = 15007
ERROR_EVT_QUERY_RESULT_STALE = 15011

_RECORD_ID = re.compile(r"<EventRecordID>\d+</EventRecordID>")


class error(Exception):
    """pywintypes.error: ``(winerror, funcname, strerror)``."""

    def __init__(self, winerror: int, funcname: str, strerror: str) -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror = winerror
        self.funcname = funcname
        self.strerror = strerror


class Handle:
    """A PyHANDLE: ``Close()`` makes it unusable."""

    def __init__(self) -> None:
        self.closed = False

    def Close(self) -> None:
        self.closed = True

    def check(self, func: str) -> None:
        if self.closed:
            raise error(ERROR_INVALID_HANDLE, func, "The handle is invalid.")


class WaitableEvent(Handle):
    """A Win32 event object."""

    def __init__(self, manual: bool, initial: bool) -> None:
        super().__init__()
        self.manual = manual
        self.signalled = initial


class Events:
    """``win32event``: the events share one condition, as the kernel's dispatcher lock."""

    WAIT_OBJECT_0 = WAIT_OBJECT_0
    WAIT_TIMEOUT = WAIT_TIMEOUT
    INFINITE = INFINITE

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.waits = 0

    def CreateEvent(self, sa: Any, manual: bool, initial: bool, name: str | None) -> WaitableEvent:
        return WaitableEvent(bool(manual), bool(initial))

    def SetEvent(self, event: WaitableEvent) -> None:
        event.check("SetEvent")
        with self.cond:
            event.signalled = True
            self.cond.notify_all()

    def ResetEvent(self, event: WaitableEvent) -> None:
        event.check("ResetEvent")
        with self.cond:
            event.signalled = False

    def WaitForSingleObject(self, event: WaitableEvent, ms: int) -> int:
        return self.WaitForMultipleObjects([event], False, ms)

    def WaitForMultipleObjects(self, handles: list[WaitableEvent], wait_all: bool, ms: int) -> int:
        if wait_all:
            raise NotImplementedError("bWaitAll")
        for h in handles:
            h.check("WaitForMultipleObjects")
        deadline = None if ms == INFINITE else time.monotonic() + ms / 1000
        with self.cond:
            self.waits += 1
            while True:
                for index, h in enumerate(handles):
                    if h.signalled:
                        if not h.manual:
                            h.signalled = False
                        return WAIT_OBJECT_0 + index
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return WAIT_TIMEOUT
                self.cond.wait(left)


class EventHandle(Handle):
    """An event record's handle (what EvtNext returns)."""

    def __init__(self, xml: str) -> None:
        super().__init__()
        self.xml = xml


class Bookmark(Handle):
    def __init__(self, positions: dict[str, int]) -> None:
        super().__init__()
        self.positions = positions


class Subscription(Handle):
    def __init__(self, channel: Channel, position: int, signal: WaitableEvent) -> None:
        super().__init__()
        self.channel = channel
        self.position = position  # the record id last delivered
        self.signal = signal


class Channel:
    """One channel: records in logging order, numbered from 1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[str] = []
        self.denied = False
        self.fail_next: int | None = None  # an error code the next EvtNext on it raises

    @property
    def last_id(self) -> int:
        return len(self.records)


class EventLogService:
    """The machine's channels; :meth:`log` is a program writing to them (from any thread)."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.events = Events()
        self.channels = {name.lower(): Channel(name) for name in channels}
        self.subscriptions: list[Subscription] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Condition(self.lock)
        self.rendered = 0

    def channel(self, name: str) -> Channel:
        return self.channels[name.lower()]

    def log(self, channel: str, xml: str) -> int:
        """Log one record (its XML as EvtRender gives it); returns the EventRecordID the channel gave it."""
        with self.lock:
            target = self.channel(channel)
            record_id = target.last_id + 1
            target.records.append(_RECORD_ID.sub(f"<EventRecordID>{record_id}</EventRecordID>", xml, count=1))
            signals = [s.signal for s in self.subscriptions if s.channel is target and not s.closed]
        for signal in signals:
            if not signal.closed:
                self.events.SetEvent(signal)
        return record_id

    def wait_for_subscribers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` subscriptions are open."""
        with self.subscribed:
            if not self.subscribed.wait_for(lambda: len([s for s in self.subscriptions if not s.closed]) >= count,
                                            timeout):
                raise TimeoutError(f"fewer than {count} subscriptions after {timeout}s")

    # --- win32evtlog -----------------------------------------------------------
    def subscribe(self, path: str, flags: int, signal: WaitableEvent | None, query: str | None,
                  bookmark: Bookmark | None) -> Subscription:
        if signal is None:
            raise NotImplementedError("push subscriptions (Callback=)")
        with self.lock:
            target = self.channels.get(path.lower())
            if target is None:
                raise error(ERROR_EVT_CHANNEL_NOT_FOUND, "EvtSubscribe", "The specified channel could not be found.")
            if target.denied:
                raise error(ERROR_ACCESS_DENIED, "EvtSubscribe", "Access is denied.")
            origin = flags & 0x3
            if origin == 1:
                position = target.last_id
            elif origin == 2:
                position = 0
            elif origin == 3:
                if bookmark is None:
                    raise error(ERROR_INVALID_PARAMETER, "EvtSubscribe", "The parameter is incorrect.")
                bookmark.check("EvtSubscribe")
                found = {k.lower(): v for k, v in bookmark.positions.items()}.get(target.name.lower())
                if found is None:
                    raise error(ERROR_INVALID_PARAMETER, "EvtSubscribe", "The parameter is incorrect.")
                position = found
            else:
                raise error(ERROR_INVALID_PARAMETER, "EvtSubscribe", "The parameter is incorrect.")
            subscription = Subscription(target, position, signal)
            self.subscriptions.append(subscription)
            self.subscribed.notify_all()
            return subscription

    def next(self, subscription: Subscription, count: int, timeout: int) -> tuple[EventHandle, ...]:
        subscription.check("EvtNext")
        with self.lock:
            target = subscription.channel
            if target.fail_next is not None:
                code, target.fail_next = target.fail_next, None
                raise error(code, "EvtNext", "The query result is stale or invalid.")
            records = target.records[subscription.position:subscription.position + count]
            subscription.position += len(records)
        return tuple(EventHandle(xml) for xml in records)

    def render(self, handle: Any, flags: int) -> str:
        handle.check("EvtRender")
        if flags == 1 and isinstance(handle, EventHandle):
            self.rendered += 1
            return handle.xml
        if flags == 2 and isinstance(handle, Bookmark):
            marks = "".join(f"<Bookmark Channel='{c}' RecordId='{r}' IsCurrent='true'/>"
                            for c, r in handle.positions.items())
            return f"<BookmarkList>{marks}</BookmarkList>"
        raise error(ERROR_INVALID_PARAMETER, "EvtRender", "The parameter is incorrect.")

    def create_bookmark(self, xml: str | None) -> Bookmark:
        if xml is None:
            return Bookmark({})
        try:
            root = ET.fromstring(xml)
            positions = {b.attrib["Channel"]: int(b.attrib["RecordId"]) for b in root.iter("Bookmark")}
        except (ET.ParseError, KeyError, ValueError):
            raise error(ERROR_INVALID_PARAMETER, "EvtCreateBookmark", "The parameter is incorrect.") from None
        if root.tag != "BookmarkList" or not positions:
            raise error(ERROR_INVALID_PARAMETER, "EvtCreateBookmark", "The parameter is incorrect.")
        return Bookmark(positions)

    def modules(self) -> tuple[types.ModuleType, types.ModuleType]:
        """(``win32evtlog``, ``win32event``) module objects over this service."""
        evtlog = types.ModuleType("win32evtlog")
        constants = {"EvtSubscribeToFutureEvents": 1, "EvtSubscribeStartAtOldestRecord": 2,
                     "EvtSubscribeStartAfterBookmark": 3, "EvtSubscribeOriginMask": 0x3,
                     "EvtSubscribeTolerateQueryErrors": 0x1000, "EvtSubscribeStrict": 0x10000,
                     "EvtRenderEventValues": 0, "EvtRenderEventXml": 1, "EvtRenderBookmark": 2,
                     "EvtSubscribeActionError": 0, "EvtSubscribeActionDeliver": 1}
        for name, value in constants.items():
            setattr(evtlog, name, value)

        def EvtSubscribe(ChannelPath: str, Flags: int, SignalEvent: Any = None, Callback: Any = None,
                         Context: Any = None, Query: Any = None, Session: Any = None, Bookmark: Any = None) -> Any:
            if Callback is not None:
                raise NotImplementedError("push subscriptions")
            return self.subscribe(ChannelPath, Flags, SignalEvent, Query, Bookmark)

        def EvtNext(ResultSet: Any, Count: int, Timeout: int = -1, Flags: int = 0) -> Any:
            return self.next(ResultSet, Count, Timeout)

        def EvtRender(Event: Any, Flags: int, Context: Any = None) -> str:
            return self.render(Event, Flags)

        def EvtCreateBookmark(BookmarkXML: str | None = None) -> Any:
            return self.create_bookmark(BookmarkXML)

        evtlog.EvtSubscribe = EvtSubscribe  # type: ignore[attr-defined]
        evtlog.EvtNext = EvtNext  # type: ignore[attr-defined]
        evtlog.EvtRender = EvtRender  # type: ignore[attr-defined]
        evtlog.EvtCreateBookmark = EvtCreateBookmark  # type: ignore[attr-defined]

        event = types.ModuleType("win32event")
        api = self.events
        for name in ("WAIT_OBJECT_0", "WAIT_TIMEOUT", "INFINITE"):
            setattr(event, name, getattr(api, name))
        for name in ("CreateEvent", "SetEvent", "ResetEvent", "WaitForSingleObject", "WaitForMultipleObjects"):
            setattr(event, name, getattr(api, name))
        return evtlog, event


def windows_xml(evtx_xml: str) -> str:
    """What EvtRender gives for a record the ``evtx`` package printed as XML: no declaration, no indentation.

    ``PyEvtxParser.records()`` pretty-prints (an XML declaration, a line and
    indentation before each element); EvtRender writes the same elements
    back to back. Values keep their own line breaks (Windows writes CR LF).
    """
    text = re.sub(r"\A<\?xml[^>]*\?>\s*", "", evtx_xml)
    return re.sub(r">\n *<", "><", text)
