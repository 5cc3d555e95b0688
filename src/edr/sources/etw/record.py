"""Reading what pywintrace hands its callback: the ``(event_id, dict)`` tuple.

pywintrace (``etw/etw.py``, ``EventConsumer._processEvent``) builds, per event::

    {"EventHeader": {"ProviderId": "{22FB2CD6-...}", "ProcessId": 6340, "ThreadId": 812,
                     "TimeStamp": 134360063001409789,          # FILETIME
                     "EventDescriptor": {"Id": 1, "Opcode": 1, "Version": 4, "Level": 4,
                                         "Task": 1, "Keyword": 0x8000000000000010, "Channel": 16},
                     ...},
     "Task Name": "PROCESSSTART", "Description": "...",
     "ProcessID": 7004, "ImageName": "\\Device\\HarddiskVolume3\\...", ...,   # the properties
     "EventExtendedData": {"SID": "S-1-5-21-...", ...}}                     # when enabled

Property values are what ``TdhFormatProperty`` printed, turned into ``int``,
``float`` or ``bool`` only for the integer, floating and boolean *out* types
(``tdh.TDH_CONVERTER_LOOKUP``); everything else stays a string: pointers and
hex integers as ``0x...``, binary as ``0x`` and hex digits, 16-bit integers as
decimal text. Which one a property is depends on how its provider's manifest
was compiled, so the readers here accept an integer in any of those forms.
"""

from __future__ import annotations

import binascii
from typing import Any, Final

#: 100-ns ticks between 1601-01-01 and 1970-01-01.
FILETIME_EPOCH: Final = 116_444_736_000_000_000


class RecordError(ValueError):
    """A callback payload that is not pywintrace's shape; the message says what is wrong."""


class Header:
    """The parts of ``EventHeader`` the normalizer uses (``timestamp`` in epoch seconds).

    A plain slotted class rather than an attrs one: one is built per record,
    on the sensor's hottest path.
    """

    __slots__ = ("event_id", "opcode", "pid", "provider", "tid", "timestamp", "version")

    def __init__(self, provider: str, event_id: int, opcode: int, version: int, pid: int, tid: int,
                 timestamp: float) -> None:
        self.provider = provider
        self.event_id = event_id
        self.opcode = opcode
        self.version = version
        self.pid = pid
        self.tid = tid
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return (f"Header(provider={self.provider!r}, event_id={self.event_id}, opcode={self.opcode}, "
                f"version={self.version}, pid={self.pid}, tid={self.tid}, timestamp={self.timestamp})")


def normalize_guid(text: str) -> str:
    """``{22FB2CD6-0E7B-...}`` (``str(GUID)`` in pywintrace) -> ``22fb2cd6-0e7b-...``."""
    return text.strip().strip("{}").lower()


def filetime_to_epoch(ticks: int) -> float:
    """A FILETIME (100-ns ticks since 1601, UTC) as epoch seconds."""
    return (ticks - FILETIME_EPOCH) / 10_000_000


#: ProviderId text -> normalized GUID (a session has a handful of providers)
_guid_memo: dict[str, str] = {}


def parse_header(event_id: Any, data: Any) -> Header:
    """The header of one callback payload; raises :class:`RecordError` on a malformed one.

    ``event_id`` is the first element of the tuple (pywintrace passes
    ``EventDescriptor.Id`` there too); the descriptor's own id wins.
    """
    try:
        head = data["EventHeader"]
        desc = head["EventDescriptor"]
        raw_guid = head["ProviderId"]
        eid = desc["Id"]
        stamp = head["TimeStamp"]
    except (KeyError, TypeError, IndexError):
        raise RecordError(_what_is_missing(data)) from None
    guid = _guid_memo.get(raw_guid)
    if guid is None:
        if not isinstance(raw_guid, str):
            raise RecordError("EventHeader.ProviderId is not a string")
        guid = normalize_guid(raw_guid)
        if len(_guid_memo) < 1024:
            _guid_memo[raw_guid] = guid
    if type(eid) is not int or type(stamp) is not int:
        raise RecordError("EventDescriptor.Id or EventHeader.TimeStamp is not an integer")
    get = desc.get
    hget = head.get
    return Header(guid, eid, get("Opcode") or 0, get("Version") or 0, hget("ProcessId") or 0,
                  hget("ThreadId") or 0, (stamp - FILETIME_EPOCH) / 10_000_000)


def _what_is_missing(data: Any) -> str:
    if not isinstance(data, dict):
        return f"payload is {type(data).__name__}, not a dict"
    head = data.get("EventHeader")
    if not isinstance(head, dict):
        return "no EventHeader"
    desc = head.get("EventDescriptor")
    if not isinstance(desc, dict):
        return "no EventHeader.EventDescriptor"
    for key in ("ProviderId", "TimeStamp"):
        if key not in head:
            return f"no EventHeader.{key}"
    return "no EventHeader.EventDescriptor.Id"


def as_int(value: Any) -> int | None:
    """An integer property in any form pywintrace delivers (int, ``"123"``, ``"0x7B"``); None otherwise."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 16) if text[:2] in ("0x", "0X") else int(text)
        except ValueError:
            return None
    return None


def as_str(value: Any) -> str:
    """A string property ('' for a missing or non-string one)."""
    return value if isinstance(value, str) else ""


def as_bytes(value: Any) -> bytes | None:
    """A binary property: pywintrace's ``0x``-prefixed hex text (or bytes); None when unreadable."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return None


def extended_sid(data: dict[str, Any]) -> str | None:
    """The SID ETW attached to the event (``EventExtendedData['SID']``), if the session asked for it."""
    ext = data.get("EventExtendedData")
    if isinstance(ext, dict):
        sid = ext.get("SID")
        if isinstance(sid, str) and sid:
            return sid
    return None
