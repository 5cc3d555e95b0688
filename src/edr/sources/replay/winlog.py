"""Windows event log replay: EVTX files, ``evtx_dump -o json`` dumps, and the
record -> :class:`~edr.event.Event` normalizer.

Both readers yield the record in the shape the ``evtx`` package (and the
``evtx_dump`` tool built on the same Rust parser) produces: a dict
``{"Event": {"System": {...}, "EventData": {...} | "UserData": {...}}}``,
with XML attributes under ``"#attributes"`` and element text under
``"#text"``. Each yielded record also carries ``"#record"``, its 1-based
position in the file, which alerts report as ``log.record``.

:func:`winlog_to_event` turns one such record into an Event the Sigma engine
routes the way SigmaHQ's rules expect: Sysmon event ids become categories
(``process_creation``...), PowerShell 4103/4104/400 become
``ps_module``/``ps_script``/``ps_classic_start``, every other channel becomes
category ``winlog`` with the channel's Sigma service (``security``,
``system``...). Field names are the ``EventData``/``UserData`` element names,
which is what SigmaHQ's Windows rules are written against, plus ``EventID``,
``Channel``, ``Provider_Name``, ``Computer``, ``Level``, ``Keywords`` and
``Task`` from the System block.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edr import event as ev
from edr.event import Event
from edr.sources.replay.winlog_channels import (
    POWERSHELL_CATEGORIES,
    POWERSHELL_CLASSIC_CATEGORIES,
    SYSMON_CATEGORIES,
    SYSMON_SERVICE,
    channel_service,
    sysmon_registry_category,
)

log = logging.getLogger(__name__)

#: Key under which the readers put a record's position in its file.
RECORD_KEY = "#record"
#: After this many consecutive unreadable records the rest of an EVTX file is
#: considered garbage; stopping avoids spinning on a corrupt tail.
_MAX_CONSECUTIVE_ERRORS = 1000


def iter_evtx(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield every readable record of an EVTX file as a dict.

    Records the parser cannot decode are logged and skipped; the file is
    read in a single thread so that replay stays deterministic.
    """
    import evtx  # local import: the Rust extension is only needed for EVTX replay

    parser = evtx.PyEvtxParser(str(path), number_of_threads=1)
    records = parser.records_json()
    position = 0
    errors = 0
    while True:
        try:
            raw = next(records)
        except StopIteration:
            return
        except Exception as exc:  # the Rust parser raises RuntimeError subclasses
            errors += 1
            position += 1
            log.warning("%s: record %d unreadable: %s", path, position, exc)
            if errors >= _MAX_CONSECUTIVE_ERRORS:
                log.error("%s: too many unreadable records, stopping", path)
                return
            continue
        errors = 0
        position += 1
        try:
            record = json.loads(raw["data"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: record %d is not JSON: %s", path, position, exc)
            continue
        if isinstance(record, dict):
            record[RECORD_KEY] = position
            yield record


def iter_evtx_json(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of an ``evtx_dump -o json`` file.

    That format is a sequence of (pretty-printed) JSON objects written one
    after another, not a JSON array; NDJSON is a special case of it. Lines
    ``evtx_dump`` may print between records (``Record 12``) are skipped.
    Reading stops with a logged error at the first text that is not JSON.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    decoder = json.JSONDecoder()
    pos = 0
    position = 0
    end = len(text)
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return
        if text[pos] != "{":
            # skip a non-JSON separator line such as "Record 12"
            newline = text.find("\n", pos)
            if newline < 0:
                return
            pos = newline + 1
            continue
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            log.error("%s: invalid JSON after record %d: %s", path, position, exc)
            return
        position += 1
        if isinstance(record, dict):
            record[RECORD_KEY] = position
            yield record


_FRACTION = re.compile(r"\.(\d+)")


def parse_system_time(value: str) -> float:
    """Epoch seconds of an EVTX ``SystemTime`` such as ``2025-12-15T11:49:00.470910Z``."""
    text = value.strip().replace("Z", "+00:00")
    # fromisoformat takes at most 6 fractional digits; Windows writes up to 7
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _text(value: Any) -> Any:
    """The text of an element that may be wrapped as ``{"#text": ..., "#attributes": ...}``."""
    if isinstance(value, dict):
        return value.get("#text")
    return value


def _attr(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        attrs = node.get("#attributes")
        if isinstance(attrs, dict):
            return attrs.get(name)
    return None


def _clean(value: Any) -> Any:
    """Keep scalars and lists of scalars; drop what Sigma cannot match (None, nested maps)."""
    value = _text(value)
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list):
        items = [_text(v) for v in value]
        return [v for v in items if isinstance(v, (str, int, float, bool))]
    return None


def _data_fields(section: Any, out: dict[str, Any]) -> None:
    """Copy EventData/UserData elements into ``out`` under their element names.

    Unnamed ``<Data>`` elements (classic providers such as "Windows PowerShell"
    or Application) stay together as the list field ``Data``, which is how
    SigmaHQ's rules address them. UserData wraps its fields in one more element
    (``<LogFileCleared>``...), which is unwrapped.
    """
    if not isinstance(section, dict):
        if section is not None:
            cleaned = _clean(section)
            if cleaned is not None:
                out["Data"] = cleaned
        return
    for key, value in section.items():
        if key == "#attributes":
            continue
        if isinstance(value, dict) and "#text" not in value:
            _data_fields(value, out)  # UserData's wrapper element
            continue
        cleaned = _clean(value)
        if cleaned is None or cleaned == []:
            continue
        out["Data" if key == "#text" else key] = cleaned


def _int(value: Any) -> int | None:
    value = _text(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def _route(channel: str, event_id: int, fields: dict[str, Any]) -> tuple[str, str | None]:
    """(category, service) of a record, the way SigmaHQ's logsources expect."""
    service = channel_service(channel) if channel else None
    if service == SYSMON_SERVICE:
        if event_id in (12, 13, 14):
            event_type = fields.get("EventType")
            return sysmon_registry_category(
                event_id, event_type if isinstance(event_type, str) else None
            ), service
        return SYSMON_CATEGORIES.get(event_id, ev.WINLOG), service
    if service == "powershell":
        return POWERSHELL_CATEGORIES.get(event_id, ev.WINLOG), service
    if service == "powershell-classic":
        return POWERSHELL_CLASSIC_CATEGORIES.get(event_id, ev.WINLOG), service
    return ev.WINLOG, service


def winlog_to_event(record: dict[str, Any], path: str, seq: int = 0) -> Event | None:
    """Normalize one Windows event record into an Event, or None if malformed.

    ``record`` is what :func:`iter_evtx` or :func:`iter_evtx_json` yields (a
    bare ``{"System": ..., "EventData": ...}`` is accepted too). Records
    without a System block, an event id or a creation time are malformed:
    they are logged at debug level and None is returned, never an exception.
    """
    try:
        return _winlog_to_event(record, path, seq)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.debug("%s: record %s malformed: %s", path, record.get(RECORD_KEY, "?")
                  if isinstance(record, dict) else "?", exc)
        return None


def _winlog_to_event(record: dict[str, Any], path: str, seq: int) -> Event | None:
    body = record.get("Event", record)
    if not isinstance(body, dict):
        return None
    system = body.get("System")
    if not isinstance(system, dict):
        return None
    event_id = _int(system.get("EventID"))
    if event_id is None:
        return None
    time_created = _attr(system.get("TimeCreated"), "SystemTime")
    if not isinstance(time_created, str):
        return None
    timestamp = parse_system_time(time_created)
    channel = _text(system.get("Channel"))
    channel = channel if isinstance(channel, str) else ""
    provider = _attr(system.get("Provider"), "Name")
    computer = _text(system.get("Computer"))
    record_id = _int(system.get("EventRecordID"))

    fields: dict[str, Any] = {}
    _data_fields(body.get("EventData"), fields)
    _data_fields(body.get("UserData"), fields)
    # System values are set last: they are the authoritative ones
    fields["EventID"] = event_id
    if channel:
        fields["Channel"] = channel
    if isinstance(provider, str):
        fields["Provider_Name"] = provider
    if isinstance(computer, str):
        fields["Computer"] = computer
    for name in ("Level", "Task", "Keywords"):
        value = _clean(system.get(name))
        if value is not None:
            fields[name] = value

    category, service = _route(channel, event_id, fields)
    origin = {
        "log.file.path": path,
        "log.record": record.get(RECORD_KEY),
        "winlog.channel": channel,
        "winlog.event_id": event_id,
        "winlog.record_id": record_id,
        "winlog.computer_name": computer if isinstance(computer, str) else None,
    }
    return ev.Event(
        category=category,
        product=ev.WINDOWS,
        fields=fields,
        timestamp=timestamp,
        seq=seq,
        service=service,
        origin=origin,
    )



def iter_winlog_events(path: str | Path) -> Iterator[Event]:
    """Events of one EVTX (``.evtx``) or evtx JSON dump (any other suffix) file."""
    p = Path(path)
    records = iter_evtx(p) if p.suffix.lower() == ".evtx" else iter_evtx_json(p)
    seq = 0
    for record in records:
        event = winlog_to_event(record, str(p), seq)
        if event is not None:
            seq += 1
            yield event
