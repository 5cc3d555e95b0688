"""Alert -> ECS document (flat dotted keys) -> NDJSON line, sans-IO.

Only ECS fields appear at the top level, plus ``rule.severity`` and
``rule.engine`` which Rustinel's alert format carries and SIEM content built
for it expects; everything else lives under ``edr.``. Event fields with no
ECS home are kept as ``edr.event.<SysmonName>`` so nothing seen is lost.

No event content can stop an alert from being written (:func:`alert_line`):
a field of an unexpected type is copied as it is rather than mapped, and a
time no date can hold (NaN, or outside years 1 to 9999) is kept as text
under ``edr.event.timestamp`` (or ``edr.alert.timestamp``), ``@timestamp``
being then the time the alert was written, because a SIEM drops a document
whose ``@timestamp`` is no date.
"""

from __future__ import annotations

import logging
import ntpath
import posixpath
import socket
import time
from datetime import datetime, timedelta
from typing import Any, Final

from edr import __version__
from edr.alerts.ndjson import dumps_line
from edr.detect.alert import Alert
from edr.event import Event, F
from edr.platform import current as current_platform
from edr.severity import severity_rank

ECS_VERSION: Final = "8.17.0"
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

# Sysmon field -> ECS field, for scalar copies.
_DIRECT: Final[dict[str, str]] = {
    F.COMMAND_LINE: "process.command_line",
    F.CURRENT_DIRECTORY: "process.working_directory",
    F.PARENT_COMMAND_LINE: "process.parent.command_line",
    F.PROCESS_GUID: "process.entity_id",
    F.PARENT_PROCESS_GUID: "process.parent.entity_id",
    F.SOURCE_IP: "source.ip",
    F.DESTINATION_IP: "destination.ip",
    F.SOURCE_HOSTNAME: "source.domain",
    F.DESTINATION_HOSTNAME: "destination.domain",
    F.QUERY_NAME: "dns.question.name",
    F.QUERY_TYPE: "dns.question.type",
    F.TARGET_OBJECT: "registry.path",
    F.CONTAINER_ID: "container.id",
    F.UID: "user.id",
    F.GID: "group.id",
    F.ORIGINAL_FILE_NAME: "process.pe.original_file_name",
    F.IMAGE_LOADED: "dll.path",
    F.PIPE_NAME: "file.path",
}
_INTS: Final[dict[str, str]] = {
    F.PROCESS_ID: "process.pid",
    F.PARENT_PROCESS_ID: "process.parent.pid",
    F.SOURCE_PORT: "source.port",
    F.DESTINATION_PORT: "destination.port",
}
_CONSUMED: Final = frozenset(
    {*_DIRECT, *_INTS, F.IMAGE, F.PARENT_IMAGE, F.USER, F.TARGET_FILENAME, F.PROTOCOL, F.INITIATED,
     F.HASHES, F.QUERY_RESULTS, F.SOURCE_FILENAME}
)


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


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    try:
        return int(value, 0)
    except ValueError:  # not a number, or more digits than Python converts
        return None


def _hashes(value: str, prefix: str, doc: dict[str, Any]) -> None:
    # Sysmon writes "SHA256=AB..,MD5=CD.."
    for part in value.split(","):
        algo, sep, digest = part.partition("=")
        if sep and digest:
            doc[f"{prefix}.hash.{algo.strip().lower()}"] = digest.strip().lower()


class HostInfo:
    """Facts about this host stamped on every alert."""

    def __init__(self, name: str | None = None, os_type: str | None = None) -> None:
        self.name = name or socket.gethostname()
        self.os_type = os_type or current_platform().name


def event_fields_to_ecs(event: Event, doc: dict[str, Any]) -> None:
    """Map one event's Sysmon fields onto ECS keys in ``doc``."""
    f = event.fields
    image = f.get(F.IMAGE)
    if isinstance(image, str) and image:
        doc["process.executable"] = image
        doc["process.name"] = _basename(image)
    parent = f.get(F.PARENT_IMAGE)
    if isinstance(parent, str) and parent:
        doc["process.parent.executable"] = parent
        doc["process.parent.name"] = _basename(parent)
    user = f.get(F.USER)
    if isinstance(user, str) and user:
        domain, sep, name = user.rpartition("\\")
        doc["user.name"] = name if sep else user
        if sep and domain:
            doc["user.domain"] = domain
    for src, dst in _DIRECT.items():
        v = f.get(src)
        if v is not None and v != "":
            doc[dst] = v
    for src, dst in _INTS.items():
        v = f.get(src)
        if v is not None:
            n = _as_int(v)
            if n is not None:
                doc[dst] = n
    target = f.get(F.TARGET_FILENAME)
    if isinstance(target, str) and target:
        doc["file.path"] = target
        doc["file.name"] = _basename(target)
        doc["file.directory"] = _dirname(target)
    if f.get(F.SOURCE_FILENAME):
        doc["edr.file.source_path"] = f[F.SOURCE_FILENAME]
    proto = f.get(F.PROTOCOL)
    if isinstance(proto, str) and proto:
        doc["network.transport"] = proto.lower()
    initiated = f.get(F.INITIATED)
    if isinstance(initiated, (str, bool)):
        doc["network.direction"] = "egress" if str(initiated).lower() == "true" else "ingress"
    hashes = f.get(F.HASHES)
    if isinstance(hashes, str) and hashes:
        _hashes(hashes, "process", doc)
    results = f.get(F.QUERY_RESULTS)
    if results and isinstance(results, (str, list)):
        items = results if isinstance(results, list) else results.replace(";", " ").split()
        ips = [x.removeprefix("::ffff:") for x in items if isinstance(x, str) and x and not x.startswith("type:")]
        if ips:
            doc["dns.resolved_ip"] = ips
    for key, value in f.items():
        if key not in _CONSUMED and value is not None:
            doc[f"edr.event.{key}"] = value


def to_ecs(alert: Alert, host: HostInfo) -> dict[str, Any]:
    """The ECS document of ``alert`` (flat dotted keys, JSON-ready).

    Whatever its event holds; :func:`~edr.alerts.ndjson.dumps_line` writes
    every value the document may then carry.
    """
    event = alert.event
    stamp = iso_time(alert.time)
    doc: dict[str, Any] = {
        # the time the alert is written: the only date it can carry then
        "@timestamp": stamp if stamp is not None else iso_time(time.time()),
        "ecs.version": ECS_VERSION,
        "event.kind": "alert",
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
    doc["event.severity"] = _SEVERITY_SCORE.get(alert.severity, 47)
    doc["event.risk_score"] = float(_SEVERITY_SCORE.get(alert.severity, 47))
    doc["rule.id"] = alert.rule_id
    doc["rule.name"] = alert.rule_name
    doc["rule.severity"] = alert.severity
    doc["rule.engine"] = alert.engine
    doc["rule.ruleset"] = alert.engine
    if alert.description:
        doc["rule.description"] = alert.description
    doc["message"] = f"{alert.engine}: {alert.rule_name}"
    doc["host.name"] = host.name
    doc["host.os.type"] = host.os_type
    doc["agent.type"] = "edr"
    doc["agent.version"] = __version__
    if alert.tags:
        doc["tags"] = list(alert.tags)
    if event is not None:
        created = iso_time(event.timestamp)
        if created is not None:
            doc["event.created"] = created
        else:
            doc["edr.event.timestamp"] = _raw_time(event.timestamp)
        doc["event.sequence"] = event.seq
        if event.count != 1:
            doc["event.count"] = event.count
        event_fields_to_ecs(event, doc)
        if event.service:
            doc["edr.event.service"] = event.service
        doc["edr.event.product"] = event.product
        if isinstance(event.origin, dict):
            doc.update(event.origin)
        if event.line:
            doc["edr.log.line"] = event.line
    doc.update(alert.ecs)
    if alert.debug is not None:
        doc["edr.match"] = alert.debug
    return doc


def alert_line(alert: Alert, host: HostInfo) -> bytes:
    """``alert`` as its line of the alert file (ECS NDJSON); never raises, so no alert is lost.

    :func:`to_ecs` maps any event content and :func:`dumps_line` writes any
    document. Should either raise all the same (a bug), the error is logged
    and the line holds what identifies the alert (rule, severity, time) and
    the error under ``edr.error``, rather than no line at all.
    """
    try:
        return dumps_line(to_ecs(alert, host))
    except Exception as exc:
        log.exception("alert of rule %r written without its event: its document failed", alert.rule_id)
        return dumps_line(_bare_alert(alert, host, exc))


def _bare_alert(alert: Alert, host: HostInfo, exc: Exception) -> dict[str, Any]:
    try:
        error = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails
        error = type(exc).__name__
    return {
        "@timestamp": iso_time(time.time()),
        "ecs.version": ECS_VERSION,
        "event.kind": "alert",
        "rule.id": alert.rule_id,
        "rule.name": alert.rule_name,
        "rule.severity": alert.severity,
        "rule.engine": alert.engine,
        "host.name": host.name,
        "host.os.type": host.os_type,
        "edr.error": error,
    }


def severity_at_least(severity: str, floor: str) -> bool:
    """True when ``severity`` is ``floor`` or higher."""
    return severity_rank(severity) >= severity_rank(floor)
