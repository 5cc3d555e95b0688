"""An event's fields -> ECS keys of an alert document, and the rest -> ``edr.event``, sans-IO.

Each field with an ECS home has a mapper (:data:`MAPPERS`) that writes the ECS keys it can when the
value fits their types and says whether the field is consumed; a field without a mapper, or whose
value does not fit, is kept under ``edr.event`` by the raw-field rule (:mod:`edr.alerts.raw_fields`).
See :mod:`edr.alerts.ecs` for what goes where.
"""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Callable
from typing import Any, Final

from edr.alerts.ecs_schema import ECS_HASHES
from edr.alerts.ecs_values import as_keyword, as_long, is_ip
from edr.alerts.raw_fields import NAMES as _RAW_NAMES
from edr.alerts.raw_fields import put_raw, raw_name, raw_value
from edr.event import Event, F

#: The object Sysmon's ``Hashes`` describe, per category (``process`` for the others).
_HASH_OWNER: Final = {
    "image_load": "dll", "driver_load": "dll",
    "file_event": "file", "file_change": "file", "file_delete": "file", "file_rename": "file",
    "create_stream_hash": "file",
}
#: Categories whose ``Operation`` is edr's file operation (``edr.file.operation``).
_FILE_CATEGORIES: Final = frozenset({"file_event", "file_change", "file_delete", "file_rename"})


def _basename(path: str) -> str:
    return ntpath.basename(path) if ("\\" in path and "/" not in path) else posixpath.basename(path)


def _dirname(path: str) -> str:
    return ntpath.dirname(path) if ("\\" in path and "/" not in path) else posixpath.dirname(path)


#: An event field's mapping: it writes the ECS keys it can into the document and says whether the
#: field is consumed (False: the field is also kept under edr.event).
_Mapper = Callable[[dict[str, Any], Any, Event], bool]


def _to_keyword(dst: str) -> _Mapper:
    def put(doc: dict[str, Any], value: Any, event: Event) -> bool:
        text = as_keyword(value)
        if text is None:
            return False
        doc[dst] = text
        return True
    return put


def _to_long(dst: str) -> _Mapper:
    def put(doc: dict[str, Any], value: Any, event: Event) -> bool:
        n = as_long(value)
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


#: ``ExitCode`` is the name of a process's exit status in process_termination events, ``ExitSignal`` the
#: signal that ended it, if one did (both set by the eBPF decoder).
EXIT_CODE: Final = "ExitCode"
EXIT_SIGNAL: Final = "ExitSignal"

MAPPERS: Final[dict[str, _Mapper]] = {
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
    EXIT_SIGNAL: _to_keyword("edr.process.exit_signal"),
    F.TARGET_FILENAME: _target,
    F.SOURCE_FILENAME: _source_filename,
    F.PROTOCOL: _protocol,
    F.INITIATED: _initiated,
    F.HASHES: _hashes,
    F.QUERY_RESULTS: _query_results,
    F.OPERATION: _operation,
    "Provider_Name": _provider,
}


def event_fields_to_ecs(event: Event, doc: dict[str, Any]) -> None:
    """Map one event's fields onto ECS keys in ``doc``; the rest go to ``doc["edr.event"]``."""
    raw: dict[str, Any] = {}
    mappers, names = MAPPERS, _RAW_NAMES
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
