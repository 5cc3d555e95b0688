"""Windows event log replay: EVTX files, ``evtx_dump -o json`` dumps, and the
record -> :class:`~edr.event.Event` normalizer.

Both readers yield the record in the shape the ``evtx`` package (and the
``evtx_dump`` tool built on the same Rust parser) produces: a dict
``{"Event": {"System": {...}, "EventData": {...} | "UserData": {...}}}``,
with XML attributes under ``"#attributes"`` and element text under
``"#text"``. Each yielded record also carries ``"#record"``, its 1-based
position in the file, which alerts report as ``log.record``.

What a damaged file can hold is handled per record: :func:`evtx_records`
and :func:`evtx_json_records` yield a :class:`~edr.event.RejectedRecord`
with the reason in place of a record the parser refuses, of text that is
no JSON object, and of a record nested deeper than :data:`MAX_RECORD_DEPTH`
(JSON is parsed by orjson, whose depth limit is fixed, never by a parser
that recurses as deep as its input). Only a file that cannot be read at all
(no EVTX header) raises :class:`UnreadableFile`.

:func:`winlog_to_event` turns one such record into an Event the Sigma engine
routes the way SigmaHQ's rules expect: Sysmon event ids become categories
(``process_creation``...), PowerShell 4103/4104/400 become
``ps_module``/``ps_script``/``ps_classic_start``, every other channel becomes
category ``winlog`` with the channel's Sigma service (``security``,
``system``...), except the Security events Sysmon has a counterpart for
(4688 process creations...), which keep service ``security`` and get the
Sysmon category and field names too (:mod:`.winlog_audit`). Field names are
the ``EventData``/``UserData`` element names, which is what SigmaHQ's Windows
rules are written against, plus ``EventID``, ``Channel``, ``Provider_Name``,
``Computer``, ``Level``, ``Keywords`` and ``Task`` from the System block.

A name with spaces (Defender's ``Threat Name``, ``New Value``...) is also
given without them (``ThreatName``: SigmaHQ's rules, and THOR's mapping of
them, write Defender's fields so) and with underscores for them
(``Feature_Name``: one SigmaHQ rule and Hayabusa's field aliases write them
so). The recorded name stays, so a rule written against the record still
matches; a recorded name the forms would collide with keeps its own value.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from edr import event as ev
from edr.event import Event, RecordError, RejectedRecord, nesting_depth_exceeds, timestamp_in_range
from edr.sources.replay.evtx_chunks import without_link_loops
from edr.sources.replay.winlog_audit import SECURITY_SERVICE, route_security
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
#: How deeply a record may nest JSON objects and arrays. Windows event records
#: are 5 levels deep (``Event.EventData.Data[].#attributes``); a deeper one
#: is no event log record, and is rejected before anything walks it.
MAX_RECORD_DEPTH: Final = 32

#: What a reader yields per record: its number (EVTX) or first line (evtx
#: JSON), and the record or why it could not be read.
Item = tuple[int, "dict[str, Any] | RejectedRecord"]


class UnreadableFile(Exception):
    """A recorded file none of which can be read (an EVTX file whose header the parser refuses)."""


def _checked(record: Any, position: int, text: str) -> dict[str, Any] | RejectedRecord:
    """``record`` (parsed from ``text``) numbered, or why it is not a usable record."""
    if not isinstance(record, dict):
        return RejectedRecord("record is not a JSON object")
    # fewer brackets than the limit cannot nest deeper: most records are not walked
    if text.count("{") + text.count("[") > MAX_RECORD_DEPTH and nesting_depth_exceeds(record, MAX_RECORD_DEPTH):
        return RejectedRecord(f"record is nested deeper than {MAX_RECORD_DEPTH} levels")
    record[RECORD_KEY] = position
    return record


def evtx_records(source: str | Path | BinaryIO, name: str = "") -> Iterator[Item]:
    """(record number, record or :class:`~edr.event.RejectedRecord`) for each record of an EVTX file.

    ``source`` is a path or a file opened for reading in binary mode
    (``name`` names it in log messages). The file is read in a single thread
    so that replay stays deterministic. A chunk whose tables would make the
    parser loop for ever is repaired first (:mod:`.evtx_chunks`; logged).
    Raises :class:`UnreadableFile` when the parser refuses the file itself,
    and when it panics (the rest of the file is then not read: its state is
    unknown).
    """
    import evtx  # local import: the Rust extension is only needed for EVTX replay

    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            yield from evtx_records(fh, name or str(source))
        return
    readable, repairs = without_link_loops(source)
    for repair in repairs:
        log.warning("%s: %s", name or "EVTX file", repair)
    try:
        parser = evtx.PyEvtxParser(readable, number_of_threads=1)
        records = parser.records_json()
    except Exception as exc:  # the Rust parser raises RuntimeError subclasses
        raise UnreadableFile(f"not a readable EVTX file: {exc}") from None
    except BaseException as exc:
        _raise_if_not_a_panic(exc)
        raise UnreadableFile(f"EVTX parser failed: {exc}") from None
    position = 0
    errors = 0
    while True:
        try:
            raw = next(records)
        except StopIteration:
            return
        except BaseException as exc:
            if not isinstance(exc, Exception):
                _raise_if_not_a_panic(exc)
                raise UnreadableFile(f"EVTX parser failed at record {position + 1}: {exc}") from None
            position += 1
            errors += 1
            if errors >= _MAX_CONSECUTIVE_ERRORS:
                raise UnreadableFile(f"{errors} unreadable records in a row from record "
                                     f"{position - errors + 1}: the rest of the file is not read") from None
            yield position, RejectedRecord(f"unreadable: {exc}")
            continue
        errors = 0
        position += 1
        try:
            text = raw["data"]
            record = orjson.loads(text)
        except (KeyError, TypeError, ValueError) as exc:
            yield position, RejectedRecord(f"not JSON: {exc}")
            continue
        yield position, _checked(record, position, text)


def _raise_if_not_a_panic(exc: BaseException) -> None:
    """Re-raise ``exc`` unless it is a Rust panic of the parser.

    pyo3 raises a panic as ``pyo3_runtime.PanicException``, a BaseException
    (so that ``except Exception`` does not swallow it) that no module exports.
    """
    if type(exc).__name__ != "PanicException":
        raise exc


#: Where a record of an evtx JSON dump may start: a line opening with "{"
#: (``evtx_dump`` writes each record's braces at the start of a line and
#: indents what is inside), or the ``Record N`` line it may print before one.
_RECORD_START = re.compile(r"^(?:\{|Record \d+[ \t\r]*(?:\n|\Z))", re.M)


def evtx_json_records(data: bytes) -> Iterator[Item]:
    """(first line, record or :class:`~edr.event.RejectedRecord`) for each record of an ``evtx_dump -o json`` dump.

    That format is a sequence of (pretty-printed) JSON objects written one
    after another, not a JSON array; NDJSON is a special case of it. A
    record starts with a line that opens with ``{`` and ends where the next
    one starts, so a broken or truncated record is rejected alone and the
    next is read. ``Record 12`` lines between records are skipped; any other
    text outside a record is rejected. Bytes that are not UTF-8 become U+FFFD.
    """
    text = data.decode("utf-8", "replace")
    starts = [m.start() for m in _RECORD_START.finditer(text)]
    starts.append(len(text))
    if starts[0] > 0 and text[:starts[0]].strip():
        yield 1, RejectedRecord("text before the first record is no JSON object")
    position = 0
    line = 1 + text.count("\n", 0, starts[0])
    for begin, end in itertools.pairwise(starts):
        if text.startswith("{", begin):
            position += 1
            part = text[begin:end]
            try:
                record = orjson.loads(part)
            except orjson.JSONDecodeError as exc:
                yield line, RejectedRecord(f"invalid JSON: {exc}")
            else:
                yield line, _checked(record, position, part)
        else:  # a "Record N" line: nothing may follow it but the next record
            newline = text.find("\n", begin, end)
            if newline >= 0 and text[newline:end].strip():
                yield line + 1, RejectedRecord("text between records is no JSON object")
        line += text.count("\n", begin, end)


def _records(items: Iterator[Item], path: str | Path) -> Iterator[dict[str, Any]]:
    for number, item in items:
        if isinstance(item, RejectedRecord):
            log.warning("%s: record at %d skipped: %s", path, number, item.reason)
        else:
            yield item


def iter_evtx(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield every readable record of an EVTX file as a dict; unreadable ones are logged and skipped.

    Raises :class:`UnreadableFile` when the file is no EVTX file the parser accepts.
    """
    return _records(evtx_records(path), path)


def iter_evtx_json(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of an ``evtx_dump -o json`` file (see :func:`evtx_json_records`); bad ones are logged."""
    return _records(evtx_json_records(Path(path).read_bytes()), path)


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


def _data_fields(section: Any, out: dict[str, Any], depth: int = 0) -> None:
    """Copy EventData/UserData elements into ``out`` under their element names.

    Unnamed ``<Data>`` elements (classic providers such as "Windows PowerShell"
    or Application) stay together as the list field ``Data``, which is how
    SigmaHQ's rules address them. UserData wraps its fields in one more element
    (``<LogFileCleared>``...), which is unwrapped.
    """
    if depth > MAX_RECORD_DEPTH:
        raise RecordError(f"event data nested deeper than {MAX_RECORD_DEPTH} levels")
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
            _data_fields(value, out, depth + 1)  # UserData's wrapper element
            continue
        cleaned = _clean(value)
        if cleaned is None or cleaned == []:
            continue
        out["Data" if key == "#text" else key] = cleaned
        if " " in key:
            _add_spaceless_names(key, cleaned, out)


def _add_spaceless_names(key: str, value: Any, out: dict[str, Any]) -> None:
    """``value`` also under ``key`` without its spaces and with underscores for them.

    A recorded name of either form, set before or after, keeps its own value.
    """
    out.setdefault(key.replace(" ", ""), value)
    out.setdefault(key.replace(" ", "_"), value)


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
    """(category, service) of a record, the way SigmaHQ's logsources expect.

    A Security event routed to a Sysmon category gets that category's fields
    added (:func:`~.winlog_audit.route_security`).
    """
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
    if service == SECURITY_SERVICE:
        return route_security(event_id, fields) or ev.WINLOG, service
    return ev.WINLOG, service


def winlog_to_event(record: dict[str, Any], path: str, seq: int = 0) -> Event | None:
    """Normalize one Windows event record into an Event, or None if malformed.

    ``record`` is what :func:`iter_evtx` or :func:`iter_evtx_json` yields (a
    bare ``{"System": ..., "EventData": ...}`` is accepted too). A malformed
    record (see :func:`winlog_record_to_event`) is logged at debug level and
    None is returned, never an exception.
    """
    try:
        return winlog_record_to_event(record, path, seq)
    except RecordError as exc:
        log.debug("%s: record %s malformed: %s", path, record.get(RECORD_KEY, "?")
                  if isinstance(record, dict) else "?", exc)
        return None


#: What the normalization of a record of any shape can raise: it becomes a RecordError.
_MALFORMED = (AttributeError, KeyError, TypeError, ValueError, OverflowError)


def winlog_record_to_event(record: Any, path: str, seq: int = 0) -> Event:
    """Normalize one Windows event record into an Event; raise :class:`~edr.event.RecordError` saying why not.

    Records without a System block, an event id or a creation time are
    malformed, as is one created outside the times an event can carry
    (:data:`edr.event.MIN_TIMESTAMP`..:data:`~edr.event.MAX_TIMESTAMP`)
    or one whose event data is nested deeper than :data:`MAX_RECORD_DEPTH`.
    """
    try:
        return _winlog_to_event(record, path, seq)
    except RecordError:
        raise
    except _MALFORMED as exc:
        raise RecordError(f"malformed Windows event: {type(exc).__name__}: {exc}") from None


def _winlog_to_event(record: Any, path: str, seq: int) -> Event:
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    body = record.get("Event", record)
    if not isinstance(body, dict):
        raise RecordError("'Event' is not an object")
    system = body.get("System")
    if not isinstance(system, dict):
        raise RecordError("no System block")
    event_id = _int(system.get("EventID"))
    if event_id is None:
        raise RecordError("no EventID")
    time_created = _attr(system.get("TimeCreated"), "SystemTime")
    if not isinstance(time_created, str):
        raise RecordError("no TimeCreated SystemTime")
    try:
        timestamp = parse_system_time(time_created)
    except (ValueError, OverflowError) as exc:
        raise RecordError(f"SystemTime {time_created[:40]!r}: {exc}") from None
    if not timestamp_in_range(timestamp):
        raise RecordError(f"SystemTime {time_created[:40]!r} is outside the representable times")
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
