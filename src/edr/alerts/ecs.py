"""Alert -> ECS document (flat dotted keys) -> NDJSON line, sans-IO.

Every key of the document is one of the four kinds :mod:`edr.alerts.ecs_schema` declares, with
its type: an ECS 9 field (``ecs.version`` says which release the mapping is checked against), a
Winlogbeat ``winlog.*`` field (channel, event ID, record ID and computer name of a Windows event,
which ECS has no home for), ``rule.severity`` and ``rule.engine`` (not ECS: the seed's alert format,
Rustinel's, carries them and SIEM content built for it reads them), or an ``edr.*`` key of one type.

Where the values come from:

- ``@timestamp`` is when the activity happened: the alert's own time (a correlation's), else its
  event's. ``event.created`` is when edr produced the alert: the clock of the writer that calls
  :func:`to_ecs` (``created``, injectable for tests).
- Event fields with an ECS home are mapped when their value fits the ECS type (a ``keyword`` takes
  text or an integer, written as text: ``user.id`` is ``"0"``; a ``long`` takes an integer, or
  integer text, within 64 bits; an ``ip`` takes a valid IPv4 or IPv6 address without a zone).
  Every other field, and a field whose value does not fit, is kept under ``edr.event``, one
  ``flattened`` object whose names and values follow the raw-field rule of
  :mod:`edr.alerts.raw_fields` (names without spaces, values strings or lists of strings), so no
  content can bring a mapping conflict and nothing seen is lost. ``QueryResults`` is kept there too
  (its CNAME entries have no ECS home) besides ``dns.resolved_ip``.
- Sysmon's ``Hashes`` go to ``<object>.hash.<algorithm>`` (``IMPHASH`` to ``<object>.pe.imphash``)
  of the object they describe: ``dll`` for image and driver loads, ``file`` for file events,
  ``process`` otherwise; when one of them has no ECS field the text is kept under ``edr.event`` too.
- A recorded Windows event's provenance becomes ``log.file.path``, ``winlog.channel``,
  ``winlog.event_id`` (and ``event.code``), ``winlog.record_id`` (its EventRecordID),
  ``winlog.computer_name``, and ``edr.log.record`` (its position in the file); a replayed NDJSON
  line's number is ``edr.log.line``.
- Keys the engines send (``Alert.ecs``) are checked against the schema and converted to the type it
  declares: ``rule.reference`` (ECS: one keyword) holds the rule's first reference and
  ``edr.rule.references`` all of them; ``rule.author`` is a list, as ECS normalizes it; a
  correlation's ``edr.correlation.group.<field>`` keys become the ``edr.correlation.group`` object.
  A key the schema does not know, or a value that does not fit its type, is kept under
  ``edr.unmapped`` (raw-field rule) and logged once per key.

No event content can stop an alert from being written (:func:`alert_line`). A time no date can hold
(NaN, or outside years 1 to 9999) is kept as text under ``edr.alert.timestamp`` (the alert's) or
``edr.alert.event_timestamp`` (its event's), ``@timestamp`` being then the time the alert was
written, because a SIEM drops a document whose ``@timestamp`` is no date.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import ntpath
import posixpath
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from edr import __version__
from edr.alerts.ecs_schema import ALL_FIELDS, ECS_HASHES, ECS_VERSION, WRITER_KEYS, FieldSpec
from edr.alerts.ndjson import dumps_line
from edr.alerts.raw_fields import NAMES as _RAW_NAMES
from edr.alerts.raw_fields import put_raw, raw_name, raw_object, raw_value
from edr.detect.alert import Alert
from edr.event import Event, F
from edr.platform import current as current_platform
from edr.severity import severity_rank

__all__ = ["ECS_VERSION", "HostInfo", "alert_document", "alert_line", "event_fields_to_ecs", "iso_time", "to_ecs"]

log = logging.getLogger("edr.alerts")

_CATEGORY: Final[dict[str, tuple[list[str], list[str]]]] = {
    "process_creation": (["process"], ["start"]),
    "process_termination": (["process"], ["end"]),
    "network_connection": (["network"], ["connection"]),
    "dns_query": (["network"], ["protocol"]),
    "file_event": (["file"], ["creation"]),
    "file_change": (["file"], ["change"]),
    "file_delete": (["file"], ["deletion"]),
    "file_rename": (["file"], ["change"]),
    "file_access": (["file"], ["access"]),
    "image_load": (["library"], ["start"]),
    "driver_load": (["driver"], ["start"]),
    "registry_add": (["registry"], ["creation"]),
    "registry_set": (["registry"], ["change"]),
    "registry_delete": (["registry"], ["deletion"]),
    "registry_event": (["registry"], ["change"]),
    "process_access": (["process"], ["access"]),
    "create_remote_thread": (["process"], ["change"]),
}

_SEVERITY_SCORE: Final = {"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}

#: The object Sysmon's ``Hashes`` describe, per category (``process`` for the others).
_HASH_OWNER: Final = {
    "image_load": "dll", "driver_load": "dll",
    "file_event": "file", "file_change": "file", "file_delete": "file", "file_rename": "file",
    "create_stream_hash": "file",
}
#: Categories whose ``Operation`` is edr's file operation (``edr.file.operation``).
_FILE_CATEGORIES: Final = frozenset({"file_event", "file_change", "file_delete", "file_rename"})

_LONG_MIN: Final = -(1 << 63)
_LONG_END: Final = 1 << 63
_EPOCH: Final = datetime(1970, 1, 1)


def iso_time(ts: float) -> str | None:
    """RFC 3339 UTC with milliseconds, as ``@timestamp`` wants; None for a time no date can hold.

    Computed from the epoch rather than by ``datetime.fromtimestamp``, which
    refuses times before 1970 on Windows and writes years before 1000 with
    fewer than four digits.
    """
    try:
        moment = _EPOCH + timedelta(seconds=ts)
    except (OverflowError, ValueError, TypeError):  # beyond years 1-9999, NaN, not a number
        return None
    return moment.isoformat(timespec="milliseconds") + "Z"


def _raw_time(ts: Any) -> str:
    """A time that :func:`iso_time` refused, as text."""
    try:
        return repr(ts)
    except ValueError:  # an integer beyond Python's digit limit
        return hex(ts) if isinstance(ts, int) else type(ts).__name__


def _basename(path: str) -> str:
    return ntpath.basename(path) if ("\\" in path and "/" not in path) else posixpath.basename(path)


def _dirname(path: str) -> str:
    return ntpath.dirname(path) if ("\\" in path and "/" not in path) else posixpath.dirname(path)


# --- values that fit an ECS type ---------------------------------------------------------------


def _long(value: Any) -> int | None:
    """``value`` as a 64-bit signed integer (from an int or integer text), or None."""
    kind = type(value)
    if kind is int:
        n = value
    elif kind is str:
        try:
            n = int(value, 0)
        except ValueError:  # not a number, or more digits than Python converts
            return None
    else:
        return None
    return n if _LONG_MIN <= n < _LONG_END else None


def _keyword(value: Any) -> str | None:
    """``value`` as keyword text: non-empty text, or an integer's decimal text; None otherwise."""
    kind = type(value)
    if kind is str:
        return value if value else None  # type: ignore[no-any-return]
    if kind is int:
        return raw_value(value)  # type: ignore[return-value]
    return None


_IP_MEMO_LIMIT: Final = 4096
_ips: dict[str, bool] = {}


def is_ip(value: Any) -> bool:
    """True for text Elasticsearch's ``ip`` type takes: an IPv4 or IPv6 address, without a zone (``%eth0``)."""
    if type(value) is not str:
        return False
    known = _ips.get(value)
    if known is None:
        try:
            ipaddress.ip_address(value)
            known = "%" not in value
        except ValueError:
            known = False
        if len(_ips) < _IP_MEMO_LIMIT:
            _ips[value] = known
    return known


# --- event fields -> ECS -------------------------------------------------------------------------

#: An event field's mapping: it writes the ECS keys it can into the document and says whether the
#: field is consumed (False: the field is also kept under edr.event).
_Mapper = Callable[[dict[str, Any], Any, Event], bool]


def _to_keyword(dst: str) -> _Mapper:
    def put(doc: dict[str, Any], value: Any, event: Event) -> bool:
        text = _keyword(value)
        if text is None:
            return False
        doc[dst] = text
        return True
    return put


def _to_long(dst: str) -> _Mapper:
    def put(doc: dict[str, Any], value: Any, event: Event) -> bool:
        n = _long(value)
        if n is None:
            return False
        doc[dst] = n
        return True
    return put


def _to_ip(dst: str) -> _Mapper:
    def put(doc: dict[str, Any], value: Any, event: Event) -> bool:
        if not is_ip(value):
            return False
        doc[dst] = value
        return True
    return put


def _to_executable(prefix: str) -> _Mapper:
    def put(doc: dict[str, Any], value: Any, event: Event) -> bool:
        if type(value) is not str or not value:
            return False
        doc[f"{prefix}.executable"] = value
        doc[f"{prefix}.name"] = _basename(value)
        return True
    return put


def _user(doc: dict[str, Any], value: Any, event: Event) -> bool:
    if type(value) is not str or not value:
        return False
    domain, sep, name = value.rpartition("\\")
    doc["user.name"] = name if sep else value
    if sep and domain:
        doc["user.domain"] = domain
    return True


def _target(doc: dict[str, Any], value: Any, event: Event) -> bool:
    if type(value) is not str or not value:
        return False
    doc["file.path"] = value
    doc["file.name"] = _basename(value)
    doc["file.directory"] = _dirname(value)
    return True


def _protocol(doc: dict[str, Any], value: Any, event: Event) -> bool:
    if type(value) is not str or not value:
        return False
    doc["network.transport"] = value.lower()
    return True


def _initiated(doc: dict[str, Any], value: Any, event: Event) -> bool:
    # ECS, host-based: the direction from the host's point of view
    text = ("true" if value else "false") if type(value) is bool else value
    if text == "true":
        doc["network.direction"] = "egress"
    elif text == "false":
        doc["network.direction"] = "ingress"
    else:
        return False
    return True


def _hashes(doc: dict[str, Any], value: Any, event: Event) -> bool:
    # Sysmon writes "SHA256=AB..,MD5=CD..,IMPHASH=EF.."
    if type(value) is not str or not value:
        return False
    owner = _HASH_OWNER.get(event.category, "process")
    complete = True
    for part in value.split(","):
        algo, sep, digest = part.partition("=")
        algo, digest = algo.strip().lower(), digest.strip().lower()
        if not (sep and digest):
            complete = complete and not part.strip()
        elif algo in ECS_HASHES:
            doc[f"{owner}.hash.{algo}"] = digest
        elif algo == "imphash":
            doc[f"{owner}.pe.imphash"] = digest
        else:
            complete = False
    return complete


def _query_results(doc: dict[str, Any], value: Any, event: Event) -> bool:
    # Sysmon: "type:  5 cname.example;::ffff:192.0.2.1;": the addresses go to dns.resolved_ip
    if type(value) is str:
        items: list[Any] = value.replace(";", " ").split()
    elif type(value) is list:
        items = value
    else:
        return False
    ips = []
    for item in items:
        if type(item) is str:
            ip = item.removeprefix("::ffff:") if item.startswith("::ffff:") and "." in item else item
            if is_ip(ip):
                ips.append(ip)
    if ips:
        doc["dns.resolved_ip"] = ips
    return False  # the CNAMEs and record types have no ECS home: the text is kept as well


def _operation(doc: dict[str, Any], value: Any, event: Event) -> bool:
    if event.category not in _FILE_CATEGORIES or type(value) is not str or not value:
        return False
    doc["edr.file.operation"] = value
    return True


def _source_filename(doc: dict[str, Any], value: Any, event: Event) -> bool:
    if type(value) is not str or not value:
        return False
    doc["edr.file.source_path"] = value
    return True


def _provider(doc: dict[str, Any], value: Any, event: Event) -> bool:
    if type(value) is str and value:
        doc["event.provider"] = value
    return False  # Sigma rules match Provider_Name: kept as recorded too


#: ``ExitCode`` is the name of a process's exit status in process_termination events.
EXIT_CODE: Final = "ExitCode"

_MAPPERS: Final[dict[str, _Mapper]] = {
    F.IMAGE: _to_executable("process"),
    F.PARENT_IMAGE: _to_executable("process.parent"),
    F.USER: _user,
    F.COMMAND_LINE: _to_keyword("process.command_line"),
    F.CURRENT_DIRECTORY: _to_keyword("process.working_directory"),
    F.PARENT_COMMAND_LINE: _to_keyword("process.parent.command_line"),
    F.PROCESS_GUID: _to_keyword("process.entity_id"),
    F.PARENT_PROCESS_GUID: _to_keyword("process.parent.entity_id"),
    F.SOURCE_HOSTNAME: _to_keyword("source.domain"),
    F.DESTINATION_HOSTNAME: _to_keyword("destination.domain"),
    F.QUERY_NAME: _to_keyword("dns.question.name"),
    F.QUERY_TYPE: _to_keyword("dns.question.type"),
    F.TARGET_OBJECT: _to_keyword("registry.path"),
    F.CONTAINER_ID: _to_keyword("container.id"),
    F.UID: _to_keyword("user.id"),
    F.EUID: _to_keyword("user.effective.id"),
    F.GID: _to_keyword("group.id"),
    F.ORIGINAL_FILE_NAME: _to_keyword("process.pe.original_file_name"),
    F.IMAGE_LOADED: _to_keyword("dll.path"),
    F.PIPE_NAME: _to_keyword("file.path"),
    F.SOURCE_IP: _to_ip("source.ip"),
    F.DESTINATION_IP: _to_ip("destination.ip"),
    F.PROCESS_ID: _to_long("process.pid"),
    F.PARENT_PROCESS_ID: _to_long("process.parent.pid"),
    F.SOURCE_PORT: _to_long("source.port"),
    F.DESTINATION_PORT: _to_long("destination.port"),
    EXIT_CODE: _to_long("process.exit_code"),
    F.TARGET_FILENAME: _target,
    F.SOURCE_FILENAME: _source_filename,
    F.PROTOCOL: _protocol,
    F.INITIATED: _initiated,
    F.HASHES: _hashes,
    F.QUERY_RESULTS: _query_results,
    F.OPERATION: _operation,
    "Provider_Name": _provider,
}


class HostInfo:
    """Facts about this host stamped on every alert."""

    def __init__(self, name: str | None = None, os_type: str | None = None) -> None:
        self.name = name or socket.gethostname()
        self.os_type = os_type or current_platform().name


def event_fields_to_ecs(event: Event, doc: dict[str, Any]) -> None:
    """Map one event's fields onto ECS keys in ``doc``; the rest go to ``doc["edr.event"]``."""
    raw: dict[str, Any] = {}
    mappers, names = _MAPPERS, _RAW_NAMES
    for key, value in event.fields.items():
        if value is None:
            continue
        mapper = mappers.get(key)
        if mapper is not None and mapper(doc, value, event):
            continue
        # the common case inline (a known name, a text value, no collision): this runs for most fields
        name = names.get(key)
        if name is None:
            name = raw_name(key)
        if type(value) is not str:
            value = raw_value(value)
        if name in raw:
            put_raw(raw, name, value)
        else:
            raw[name] = value
    if raw:
        doc["edr.event"] = raw


# --- keys from sources and engines -> the schema's types ------------------------------------------

_NO: Final = object()  # a value that does not fit the type
_TEXT_TYPES: Final = ("keyword", "wildcard", "match_only_text")
#: Keys holding one text value, which take a string as it is.
_TEXT_KEYS: Final = frozenset(k for k, spec in ALL_FIELDS.items()
                              if spec.type in _TEXT_TYPES and not spec.array and k not in WRITER_KEYS)
#: Keys holding a list of text, which take a list of strings as it is.
_TEXT_LIST_KEYS: Final = frozenset(k for k, spec in ALL_FIELDS.items() if spec.type in _TEXT_TYPES and spec.array)
#: Keys holding one 64-bit integer.
_LONG_KEYS: Final = frozenset(k for k, spec in ALL_FIELDS.items()
                              if spec.type == "long" and not spec.array and k not in WRITER_KEYS)


def _fit_scalar(kind: str, value: Any) -> Any:
    if kind in _TEXT_TYPES:
        if type(value) is str:
            return value
        return raw_value(value) if type(value) in (int, float, bool) else _NO
    if kind == "long":
        n = _long(value)
        return _NO if n is None else n
    if kind in ("double", "float"):
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
        return _NO
    if kind == "date":
        if type(value) in (int, float):
            text = iso_time(value)
            return _NO if text is None else text
        if type(value) is str:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return _NO
            return value
        return _NO
    if kind == "ip":
        return value if is_ip(value) else _NO
    if kind == "boolean":
        return value if type(value) is bool else _NO
    if kind == "flattened":
        return raw_object(value) if isinstance(value, dict) else _NO
    return _NO


def fit(spec: FieldSpec, value: Any) -> Any:
    """``value`` converted to ``spec``'s type (a list when ``spec.array``); :data:`_NO` when it does not fit."""
    if not spec.array:
        if type(value) in (list, tuple):
            return _NO
        return _fit_scalar(spec.type, value)
    items = value if type(value) in (list, tuple) else (value,)
    out = []
    for item in items:
        if item is None:
            continue
        fitted = _fit_scalar(spec.type, item)
        if fitted is _NO:
            return _NO
        out.append(fitted)
    return out


_warned: set[str] = set()
_WARN_LIMIT: Final = 256


def _unmapped(doc: dict[str, Any], key: Any, value: Any, why: str) -> None:
    name = raw_name(key)
    put_raw(doc.setdefault("edr.unmapped", {}), name, raw_value(value))
    if name not in _warned and len(_warned) < _WARN_LIMIT:
        _warned.add(name)
        log.warning("alert key %r %s: kept under edr.unmapped.%s", key, why, name)


def place(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``doc[key]`` to ``value`` in the type the schema declares for ``key``, else keep it under edr.unmapped.

    None means absent. Keys the alert chain owns (``edr.chain.*``) are never set here.
    """
    # the common cases first: text for a keyword, an integer for a long, a list of text for a keyword list
    kind = type(value)
    if kind is str:
        if key in _TEXT_KEYS:
            doc[key] = value
            return
    elif kind is int:
        if key in _LONG_KEYS and _LONG_MIN <= value < _LONG_END:
            doc[key] = value
            return
    elif kind is list and key in _TEXT_LIST_KEYS and all(type(v) is str for v in value):
        doc[key] = list(value)
        return
    if value is None:
        return
    spec = ALL_FIELDS.get(key) if type(key) is str else None
    if spec is None or key in WRITER_KEYS:
        _unmapped(doc, key, value, "is not in edr's ECS schema")
        return
    fitted = fit(spec, value)
    if fitted is _NO:
        _unmapped(doc, key, value, f"holds a value that is no {spec.type}{' list' if spec.array else ''}")
    else:
        doc[key] = fitted


_GROUP_PREFIX: Final = "edr.correlation.group."
#: Keys of an origin or of an alert's engine keys written under another name.
_RENAMED: Final = {
    # the record's position in the replayed file (the EVTX record number is winlog.record_id)
    "log.record": "edr.log.record",
}


def _place_all(doc: dict[str, Any], mapping: dict[Any, Any]) -> None:
    """:func:`place` every key of ``mapping`` (an event's origin, an alert's engine keys), with the keys
    that are renamed or split on the way."""
    text_keys, long_keys, list_keys = _TEXT_KEYS, _LONG_KEYS, _TEXT_LIST_KEYS
    for key, value in mapping.items():
        kind = type(value)
        key = _RENAMED.get(key, key)
        if key == "winlog.event_id":
            place(doc, "winlog.event_id", value)
            place(doc, "event.code", value)
            continue
        # the common cases inline; place() does the same, slower
        if kind is str:
            if key in text_keys:
                doc[key] = value
                continue
            if key in list_keys:
                doc[key] = [value]
                continue
        elif kind is int and _LONG_MIN <= value < _LONG_END:
            if key in long_keys:
                doc[key] = value
                continue
            if key in text_keys:
                doc[key] = str(value)
                continue
        elif kind is list and key in list_keys and all(type(v) is str for v in value):
            doc[key] = list(value)
            continue
        if key == "rule.reference" and kind in (list, tuple):
            # ECS: one keyword. The first reference there, all of them (in order) under edr.
            refs = [v for v in value if v is not None]
            if refs:
                place(doc, "rule.reference", refs[0])
                place(doc, "edr.rule.references", refs)
        elif type(key) is str and key.startswith(_GROUP_PREFIX):
            put_raw(doc.setdefault("edr.correlation.group", {}), raw_name(key[len(_GROUP_PREFIX):]),
                    raw_value(value))
        else:
            place(doc, key, value)


def _created(now: float) -> str:
    """``event.created`` for ``now``, or for the wall clock when an injected ``now`` is no date."""
    text = iso_time(now)
    return text if text is not None else iso_time(time.time()) or ""


def to_ecs(alert: Alert, host: HostInfo, created: float | None = None) -> dict[str, Any]:
    """The ECS document of ``alert`` (flat dotted keys, JSON-ready).

    ``created`` is when the alert is produced (``event.created``), the
    writer's clock when None. Whatever its event holds;
    :func:`~edr.alerts.ndjson.dumps_line` writes every value the document may then carry.
    """
    event = alert.event
    made = _created(time.time() if created is None else created)
    stamp = iso_time(alert.time)
    doc: dict[str, Any] = {
        # the time the alert is written: the only date it can carry then
        "@timestamp": stamp if stamp is not None else made,
        "ecs.version": ECS_VERSION,
        "event.kind": "alert",
        "event.created": made,
    }
    if stamp is None and alert.timestamp is not None:
        doc["edr.alert.timestamp"] = _raw_time(alert.timestamp)
    category = event.category if event is not None else "none"
    cats, types = _CATEGORY.get(category, (["host"], ["info"]))
    doc["event.category"] = cats
    doc["event.type"] = types
    doc["event.action"] = category
    doc["event.module"] = "edr"
    doc["event.dataset"] = "edr.alerts"
    score = _SEVERITY_SCORE.get(alert.severity, 47)
    doc["event.severity"] = score
    doc["event.risk_score"] = float(score)
    rule_id, rule_name, severity, engine = alert.rule_id, alert.rule_name, alert.severity, alert.engine
    if type(rule_id) is str and type(rule_name) is str and type(severity) is str and type(engine) is str:
        doc["rule.id"], doc["rule.name"], doc["rule.severity"] = rule_id, rule_name, severity
        doc["rule.engine"] = doc["rule.ruleset"] = engine
    else:
        place(doc, "rule.id", rule_id)
        place(doc, "rule.name", rule_name)
        place(doc, "rule.severity", severity)
        place(doc, "rule.engine", engine)
        place(doc, "rule.ruleset", engine)
    if alert.description:
        place(doc, "rule.description", alert.description)
    doc["message"] = f"{alert.engine}: {alert.rule_name}"
    doc["host.name"] = host.name
    doc["host.os.type"] = host.os_type
    doc["agent.type"] = "edr"
    doc["agent.version"] = __version__
    tags = alert.tags
    if tags:
        if all(type(t) is str for t in tags):
            doc["tags"] = list(tags)
        else:
            place(doc, "tags", list(tags))
    if event is not None:
        # the event's time is no date (without a time of its own, the alert's time is the event's)
        if (stamp is None if alert.timestamp is None else iso_time(event.timestamp) is None):
            doc["edr.alert.event_timestamp"] = _raw_time(event.timestamp)
        seq = event.seq
        if type(seq) is int and _LONG_MIN <= seq < _LONG_END:
            doc["event.sequence"] = seq
        else:
            place(doc, "event.sequence", seq)
        if event.count != 1:
            place(doc, "edr.aggregate.count", event.count)
        event_fields_to_ecs(event, doc)
        place(doc, "edr.logsource.product", event.product)
        place(doc, "edr.logsource.category", event.category)
        if event.service:
            place(doc, "edr.logsource.service", event.service)
        if isinstance(event.origin, dict):
            _place_all(doc, event.origin)
        if event.line:
            place(doc, "edr.log.line", event.line)
    if alert.ecs:
        _place_all(doc, alert.ecs)
    if alert.debug is not None:
        place(doc, "edr.match", alert.debug if isinstance(alert.debug, dict) else {"detail": alert.debug})
    return doc


def alert_document(alert: Alert, host: HostInfo, created: float | None = None) -> dict[str, Any]:
    """:func:`to_ecs`, which never raises: should it all the same (a bug), the error is logged and the
    document holds what identifies the alert (rule, severity, time) and the error under ``edr.error``."""
    try:
        return to_ecs(alert, host, created)
    except Exception as exc:
        log.exception("alert of rule %r written without its event: its document failed", alert.rule_id)
        return _bare_alert(alert, host, exc, created)


def alert_line(alert: Alert, host: HostInfo, created: float | None = None) -> bytes:
    """``alert`` as its line of the alert file (ECS NDJSON); never raises, so no alert is lost.

    :func:`alert_document` maps any event content and :func:`dumps_line` writes any document.
    """
    return dumps_line(alert_document(alert, host, created))


def _bare_alert(alert: Alert, host: HostInfo, exc: Exception, created: float | None) -> dict[str, Any]:
    try:
        error = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails
        error = type(exc).__name__
    made = _created(time.time() if created is None else created)
    doc: dict[str, Any] = {
        "@timestamp": made,
        "ecs.version": ECS_VERSION,
        "event.kind": "alert",
        "event.created": made,
        "agent.type": "edr",
        "host.name": host.name,
        "host.os.type": host.os_type,
        "edr.error": error,
    }
    for key, value in (("rule.id", alert.rule_id), ("rule.name", alert.rule_name),
                       ("rule.severity", alert.severity), ("rule.engine", alert.engine)):
        if type(value) is str:
            doc[key] = value
    return doc
