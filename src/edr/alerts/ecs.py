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

import logging
import socket
import time
from typing import Any, Final

from edr import __version__
from edr.alerts.ecs_event import event_fields_to_ecs
from edr.alerts.ecs_schema import ECS_VERSION
from edr.alerts.ecs_values import LONG_END, LONG_MIN, iso_time, place, place_all
from edr.alerts.ndjson import dumps_line
from edr.detect.alert import Alert
from edr.platform import current as current_platform

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


def _raw_time(ts: Any) -> str:
    """A time that :func:`iso_time` refused, as text."""
    try:
        return repr(ts)
    except ValueError:  # an integer beyond Python's digit limit
        return hex(ts) if isinstance(ts, int) else type(ts).__name__


class HostInfo:
    """Facts about this host stamped on every alert; with ``replay``, the recording's host instead.

    A replayed alert describes a host that was recorded, not this one: its
    ``host.name`` is the record's computer (``winlog.computer_name``, or a
    ``Computer`` field), absent when the record names none, its
    ``host.os.type`` the event's product (windows, linux), and it carries
    ``edr.replay: true``, so that a SIEM never takes it for a live incident here.
    """

    def __init__(self, name: str | None = None, os_type: str | None = None, *, replay: bool = False) -> None:
        self.name = name or socket.gethostname()
        self.os_type = os_type or current_platform().name
        self.replay = replay


#: ``host.os.type`` values (ECS) an event's product may stand for
_OS_TYPES: Final = frozenset({"linux", "windows", "macos"})


def _recorded_host(doc: dict[str, Any], event: Any) -> None:
    """Replace this host's name and OS in ``doc`` by the recording's (see :class:`HostInfo`); mark it replayed."""
    doc["edr.replay"] = True
    name = doc.get("winlog.computer_name")
    if not isinstance(name, str) and event is not None:
        name = event.fields.get("Computer")
    if isinstance(name, str) and name:
        doc["host.name"] = name
    else:
        doc.pop("host.name", None)
    product = getattr(event, "product", None)
    if product in _OS_TYPES:
        doc["host.os.type"] = product
    else:
        doc.pop("host.os.type", None)


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
    if category == "file_event" and event is not None and event.fields.get("Operation") == "file_write":
        types = ["change"]  # an existing file written to, not created (the eBPF sensor tells them apart)
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
        if type(seq) is int and LONG_MIN <= seq < LONG_END:
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
            place_all(doc, event.origin)
        if event.line:
            place(doc, "edr.log.line", event.line)
    if alert.ecs:
        place_all(doc, alert.ecs)
    if alert.debug is not None:
        place(doc, "edr.match", alert.debug if isinstance(alert.debug, dict) else {"detail": alert.debug})
    if host.replay:
        _recorded_host(doc, event)
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
    if host.replay:
        _recorded_host(doc, None)
    for key, value in (("rule.id", alert.rule_id), ("rule.name", alert.rule_name),
                       ("rule.severity", alert.severity), ("rule.engine", alert.engine)):
        if type(value) is str:
            doc[key] = value
    return doc
