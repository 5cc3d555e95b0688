"""Alert -> ECS document (flat dotted keys), sans-IO.

Only ECS fields appear at the top level, plus ``rule.severity`` and
``rule.engine`` which Rustinel's alert format carries and SIEM content built
for it expects; everything else lives under ``edr.``. Event fields with no
ECS home are kept as ``edr.event.<SysmonName>`` so nothing seen is lost.
"""

from __future__ import annotations

import ntpath
import posixpath
import socket
from datetime import UTC, datetime
from typing import Any, Final

from edr import __version__
from edr.detect.alert import Alert, severity_rank
from edr.event import Event, F

ECS_VERSION: Final = "8.17.0"

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


def iso_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, as ``@timestamp`` wants."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _basename(path: str) -> str:
    return ntpath.basename(path) if ("\\" in path and "/" not in path) else posixpath.basename(path)


def _dirname(path: str) -> str:
    return ntpath.dirname(path) if ("\\" in path and "/" not in path) else posixpath.dirname(path)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def _hashes(value: Any, prefix: str, doc: dict[str, Any]) -> None:
    # Sysmon writes "SHA256=AB..,MD5=CD.."
    for part in str(value).split(","):
        algo, sep, digest = part.partition("=")
        if sep and digest:
            doc[f"{prefix}.hash.{algo.strip().lower()}"] = digest.strip().lower()


class HostInfo:
    """Facts about this host stamped on every alert."""

    def __init__(self, name: str | None = None, os_type: str | None = None) -> None:
        import sys

        self.name = name or socket.gethostname()
        self.os_type = os_type or ("windows" if sys.platform == "win32" else "linux")


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
    if initiated is not None:
        doc["network.direction"] = "egress" if str(initiated).lower() == "true" else "ingress"
    if f.get(F.HASHES):
        _hashes(f[F.HASHES], "process", doc)
    results = f.get(F.QUERY_RESULTS)
    if results:
        items = results if isinstance(results, list) else str(results).replace(";", " ").split()
        ips = [x.removeprefix("::ffff:") for x in items if x and not x.startswith("type:")]
        if ips:
            doc["dns.resolved_ip"] = ips
    for key, value in f.items():
        if key not in _CONSUMED and value is not None:
            doc[f"edr.event.{key}"] = value


def to_ecs(alert: Alert, host: HostInfo) -> dict[str, Any]:
    """The ECS document of ``alert`` (flat dotted keys, JSON-ready)."""
    event = alert.event
    doc: dict[str, Any] = {
        "@timestamp": iso_time(alert.time),
        "ecs.version": ECS_VERSION,
        "event.kind": "alert",
    }
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
        doc["event.created"] = iso_time(event.timestamp)
        doc["event.sequence"] = event.seq
        if event.count != 1:
            doc["event.count"] = event.count
        event_fields_to_ecs(event, doc)
        if event.service:
            doc["edr.event.service"] = event.service
        doc["edr.event.product"] = event.product
        if event.origin:
            doc.update(event.origin)
        if event.line:
            doc["edr.log.line"] = event.line
    doc.update(alert.ecs)
    if alert.debug is not None:
        doc["edr.match"] = alert.debug
    return doc


def severity_at_least(severity: str, floor: str) -> bool:
    """True when ``severity`` is ``floor`` or higher."""
    return severity_rank(severity) >= severity_rank(floor)
