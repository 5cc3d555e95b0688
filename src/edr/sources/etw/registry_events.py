"""Microsoft-Windows-Kernel-Registry: key creation, value set, value and key deletion.

Open and create events (2, 1) name a key relative to a base key object
(``BaseObject`` + ``RelativeName``, or an absolute ``\\REGISTRY\\...`` name) and
give the new ``KeyObject``; set-value, delete-value and delete-key (5, 6, 3)
give only the ``KeyObject`` (their ``KeyName`` is usually empty). So every
successful open/create records ``KeyObject -> name`` in a bounded map, and
names are joined onto their base's name when the base was seen opened.

A base key opened before the session started (typically a process's
``HKEY_CURRENT_USER`` handle, opened at its start) is unknown: the part of
the name above the relative name cannot be known, and the key is written
``?\\<relative name>`` (counted in ``registry_base_unknown``). Rules that
match the end or the middle of ``TargetObject`` still work on it; rules
anchored on ``HKLM\\``/``HKU\\`` do not.

Events, as Sysmon reports them: ``registry_add`` (``EventType`` CreateKey, for
a key created new: ``Disposition`` 1), ``registry_set`` (SetValue, with
``Details``), ``registry_delete`` (DeleteValue, DeleteKey). ``TargetObject`` uses Sysmon's
names (``HKLM``, ``HKU``, ``HKCR``, ``HKLM\\System\\CurrentControlSet``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from edr import event as ev
from edr.event import Event, F
from edr.sources.etw.record import Header, as_bytes, as_int, as_str
from edr.sources.etw.registry_values import UNKNOWN_BASE, join_key, sysmon_key, sysmon_target, value_details

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

CREATE_KEY: Final = 1
OPEN_KEY: Final = 2
DELETE_KEY: Final = 3
SET_VALUE: Final = 5
DELETE_VALUE: Final = 6
REG_CREATED_NEW_KEY: Final = 1
#: Sysmon's name of a key's unnamed value
DEFAULT_VALUE: Final = "(Default)"


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """Kernel-Registry record -> registry_add / registry_set / registry_delete."""
    status = as_int(d.get("Status"))
    if status:  # a failed operation (access denied, no such key) changed nothing
        return None
    eid = h.event_id
    if eid in (CREATE_KEY, OPEN_KEY):
        return _open(n, h, d, eid == CREATE_KEY)
    if eid == SET_VALUE:
        target = _value_name(n, d)
        fields = {F.EVENT_TYPE: "SetValue", F.TARGET_OBJECT: target,
                  F.DETAILS: value_details(as_int(d.get("Type")), as_bytes(d.get("CapturedData")))}
        return [_event(n, h, d, ev.REGISTRY_SET, fields)]
    if eid == DELETE_VALUE:
        fields = {F.EVENT_TYPE: "DeleteValue", F.TARGET_OBJECT: _value_name(n, d)}
        return [_event(n, h, d, ev.REGISTRY_DELETE, fields)]
    if eid == DELETE_KEY:
        ko = as_int(d.get("KeyObject"))
        name = _key_name(n, ko, d)
        if ko:
            n.keys.pop(ko)
        return [_event(n, h, d, ev.REGISTRY_DELETE, {F.EVENT_TYPE: "DeleteKey", F.TARGET_OBJECT: name})]
    return None


def _event(n: EtwNormalizer, h: Header, d: dict[str, Any], category: str, fields: dict[str, Any]) -> Event:
    fields[F.TARGET_OBJECT] = sysmon_target(fields[F.TARGET_OBJECT])
    n.subject(h.pid, h, d, fields)
    return n.event(category, fields, h)


def _open(n: EtwNormalizer, h: Header, d: dict[str, Any], create: bool) -> list[Event] | None:
    ko = as_int(d.get("KeyObject"))
    relative = as_str(d.get("RelativeName"))
    if relative.lower().startswith("\\registry\\"):
        name = sysmon_key(relative)
    else:
        base = as_int(d.get("BaseObject"))
        base_name = n.keys.get(base) if base else None
        if base_name is None:
            named_base = as_str(d.get("BaseName"))
            if named_base:
                base_name = sysmon_key(named_base)
            else:
                base_name = UNKNOWN_BASE
                n.counts["registry_base_unknown"] += 1
        name = join_key(base_name, relative)
    if not ko:  # KeyObject 0: the open failed (the status is not always recorded)
        return None
    n.keys.set(ko, name)
    if create and as_int(d.get("Disposition")) in (REG_CREATED_NEW_KEY, None):
        return [_event(n, h, d, ev.REGISTRY_ADD, {F.EVENT_TYPE: "CreateKey", F.TARGET_OBJECT: name})]
    return None


def _key_name(n: EtwNormalizer, ko: int | None, d: dict[str, Any]) -> str:
    name = n.keys.get(ko) if ko else None
    if name is not None:
        return name
    key_name = as_str(d.get("KeyName"))
    if key_name:
        return sysmon_key(key_name)
    n.counts["registry_key_unknown"] += 1
    return UNKNOWN_BASE


def _value_name(n: EtwNormalizer, d: dict[str, Any]) -> str:
    key = _key_name(n, as_int(d.get("KeyObject")), d)
    return join_key(key, as_str(d.get("ValueName")) or DEFAULT_VALUE)
