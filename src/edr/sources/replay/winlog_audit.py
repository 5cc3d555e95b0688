"""Security audit events as the Sysmon events SigmaHQ's rules are written for.

A host with Windows auditing and no Sysmon still logs process creations
(4688), registry value changes (4657), permitted connections (5156) and
audited object accesses (4663) to the Security channel. SigmaHQ writes its
``process_creation``, ``registry_*``, ``network_connection`` and
``file_access`` rules against Sysmon's (and Kernel-File ETW's) field names.
pySigma's Windows audit pipeline (pySigma-pipeline-windows, ``windows-audit``)
bridges the two by rewriting the *rules*: it adds ``EventID: 4688`` to a
``process_creation`` rule, renames ``Image`` to ``NewProcessName`` and sends it
to ``service: security``. edr does the same on the *event*:
:func:`route_security` gives a Security event the Sigma category it stands for
and adds the Sysmon-named fields, so that one compiled rule set serves Sysmon,
ETW and audit logs alike.

**One event, two kinds of rules.** A routed record keeps ``service:
security`` and every recorded field, and gets a category: its route is
``(windows, process_creation, security)``. A rule's logsource applies when each
of its parts is unset or equal (:func:`edr.detect.sigma.logsources.applies`),
so that one route reaches the ``process_creation`` rules (no service), the
``service: security`` rules (no category) and the product-only rules, each
evaluated once: a rule never alerts twice for one record. Where the two
vocabularies share a name, the Sysmon view rewrites the recorded value:
``ProcessId`` (4688: the new process, where the record names the creator;
4657, 4663: the same process as an integer), and 5156's ``SourcePort`` (an
integer) and ``Protocol`` (``tcp`` for 6). No SigmaHQ ``service: security``
rule reads ``ProcessId`` or ``Protocol``, nor any name added here, and
``SourcePort: 3389`` matches the integer as it matched the text.

**Per event** (the table :data:`ROUTED_EVENTS`):

- **4688 → process_creation** (pySigma maps it):
  ``Image`` = ``NewProcessName``, ``ParentImage`` = ``ParentProcessName``
  (both pySigma's; 4688 version 2 and later only), ``CommandLine`` as recorded
  (empty when the policy "Include command line in process creation events" is
  off), ``ProcessId`` = ``NewProcessId`` and ``ParentProcessId`` = the recorded
  ``ProcessId`` (the creator), both as integers as Sysmon writes them, not
  4688's hexadecimal text. ``User`` and ``LogonId`` are the new process's
  account: the *target* account of version 2 when it names one (``TargetUserName``
  not ``-``), else the *subject* (the creator, whose token the new process
  inherits); pySigma maps ``LogonId`` to ``SubjectLogonId`` only, but the
  samples' pairs of 4688 and Sysmon 1 records of one process show Sysmon
  reporting the target's account and logon. The well-known service SIDs are
  written as Sysmon writes them (``NT AUTHORITY\\SYSTEM`` for S-1-5-18, not the
  machine account ``DOMAIN\\HOST$`` the record names). ``IntegrityLevel`` is
  ``MandatoryLabel``'s SID as Sysmon's text (``High`` for S-1-16-12288...; an
  unknown SID stays as it is); SigmaHQ's integrity rules list both forms. A
  version 1 record has no label: an elevated token (``TokenElevationType``
  %%1937) is ``High``, the other types say nothing certain about the level
  and leave the field absent. *Cannot match*: what 4688 does not record
  (``OriginalFileName``, ``Hashes``, ``Description``, ``Product``,
  ``Company``, ``FileVersion``, ``CurrentDirectory``, ``ParentCommandLine``,
  ``ParentUser``, the GUIDs, ``TerminalSessionId``) is absent, so a rule that
  needs one of them does not fire on 4688, and a rule that only *excludes* by
  one of them cannot exclude (absent fields match no filter). pySigma's
  unreleased pipeline instead refuses every rule that names such a field,
  which on SigmaHQ disables 782 of 1,415 rules that mostly name
  ``OriginalFileName`` as an alternative to ``Image``.
- **4657 → registry_set / registry_delete** (pySigma maps 4657): the
  ``OperationType`` code decides. %%1904 (new value) and %%1905 (value
  modified) are ``registry_set`` with ``EventType`` SetValue, as Sysmon 13
  reports both; pySigma sends %%1904 to ``registry_add``, but SigmaHQ's
  ``registry_add`` rules are Sysmon 12 key creations (``EventType: CreateKey``),
  which 4657 never logs, while the ``registry_set`` rules (Run keys,
  services...) must see new values. %%1906 (value deleted) is
  ``registry_delete`` with ``EventType`` DeleteValue (pySigma's unreleased
  mapping). ``TargetObject`` is ``ObjectName`` in Sysmon's form plus the value
  name (``\\REGISTRY\\MACHINE\\SOFTWARE\\Classes`` → ``HKCR``,
  ``\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001`` →
  ``HKLM\\System\\CurrentControlSet``, ``\\REGISTRY\\MACHINE`` → ``HKLM``,
  ``\\REGISTRY\\USER`` → ``HKU``; an empty value name is ``(Default)``), where
  pySigma renames ``TargetObject`` to ``ObjectName``, the key alone, which
  SigmaHQ's ``...\\ValueName`` tests never match. ``Details`` = ``NewValue``
  (pySigma), ``Image`` = ``ProcessName``. *Cannot match*: ``Details`` tests
  written in Sysmon's ``DWORD (0x00000001)`` form (4657 writes the value
  itself), key creations and renames (not logged). No sample of 4657 exists in
  the reference data: the mapping follows Microsoft's documented event.
- **5156 → network_connection** (not in pySigma; Hayabusa's mapping):
  ``SourceIp``/``SourcePort``/``DestinationIp``/``DestinationPort`` from the
  record's source and destination, ports as integers. The filtering platform
  writes the local side as the source in both directions, as Sysmon did until
  2019; Sysmon since 2020 writes the side that opened the connection (the
  samples' inbound Sysmon 3 records to a service between two addresses: the
  13 of 2019 one way, the 20 of 2020-2021 the other). An inbound record is
  *not* swapped to today's Sysmon: ``SourcePort``
  is the record's own name, which ``service: security`` rules read in the
  platform's sense (SigmaHQ's "RDP over Reverse SSH Tunnel WFP" tests
  ``SourcePort: 3389`` with ``DestAddress``), and SigmaHQ's
  ``network_connection`` rules hardly test inbound ports (one tests
  ``Initiated: 'false'``, and no port). Hayabusa maps them unswapped too.
  ``Initiated`` comes from ``Direction`` (%%14593 outbound),
  ``Protocol`` by IANA number (6 ``tcp``, 17 ``udp``...), ``ProcessId`` =
  ``ProcessID``. ``Image`` is ``Application``, which the filtering platform
  writes as a device path (``\\device\\harddiskvolume1\\windows\\...``); the
  record does not say which drive letter the volume has, and SigmaHQ's rules
  write ``C:\\...``: with the device path as ``Image``, 11 of the 13 alerts
  the samples gave were false, lsass.exe's Kerberos connections that an exact
  ``Image`` filter should have left out. So a ``\\device\\harddiskvolumeN``
  prefix is written ``C:``, as Hayabusa's conversion of SigmaHQ's rules
  assumes; ``Application`` keeps what was recorded. *Cannot match*: ``User``, host names, and a process on another
  drive reads as ``C:``.
- **4663 on a File object → file_access** (no pipeline maps it): SigmaHQ's
  ``file_access`` rules are written for Kernel-File ETW, whose ``FileName``
  and ``Image`` are what 4663 records as ``ObjectName`` and ``ProcessName``:
  an audited access (only objects with an audit entry in their SACL are
  logged) to a browser's credential store reaches the rules written for it.
  Registry keys and processes (4663 on ``Key`` and ``Process`` objects) stay
  Security events only: Sysmon has no event for a key read, and its
  ``process_access`` fields (``GrantedAccess``, ``CallTrace``) have no
  counterpart.

Paths: a process or file on a UNC path is recorded under ``\\Device\\Mup\\``;
Sysmon writes ``\\\\server\\share``, and so do the added fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from edr import event as ev
from edr.event import F

SECURITY_SERVICE: Final = "security"
#: Kernel-File ETW accesses in SigmaHQ's taxonomy (not one of the categories
#: edr's own sensors produce, hence not in :data:`edr.event.CATEGORIES`).
FILE_ACCESS: Final = "file_access"

#: 4657 ``OperationType`` codes (message-table references in the record).
VALUE_CREATED: Final = "%%1904"
VALUE_MODIFIED: Final = "%%1905"
VALUE_DELETED: Final = "%%1906"
#: 5156 ``Direction`` codes.
OUTBOUND: Final = "%%14593"
INBOUND: Final = "%%14592"
#: 4688 version 1 ``TokenElevationType`` of an elevated token (type 2, "full").
ELEVATED_TOKEN: Final = "%%1937"

#: Sigma categories each routed Security event id can take.
ROUTED_EVENTS: Final[dict[int, frozenset[str]]] = {
    4688: frozenset({ev.PROCESS_CREATION}),
    4657: frozenset({ev.REGISTRY_SET, ev.REGISTRY_DELETE}),
    5156: frozenset({ev.NETWORK_CONNECTION}),
    4663: frozenset({FILE_ACCESS}),
}
#: Every category a Security event can be routed to (for the fed routes).
SECURITY_CATEGORIES: Final = frozenset().union(*ROUTED_EVENTS.values())

#: Accounts Sysmon names by their well-known SID rather than as the record does.
WELL_KNOWN_ACCOUNTS: Final[dict[str, str]] = {
    "S-1-5-18": "NT AUTHORITY\\SYSTEM",
    "S-1-5-19": "NT AUTHORITY\\LOCAL SERVICE",
    "S-1-5-20": "NT AUTHORITY\\NETWORK SERVICE",
}
#: Mandatory label SID -> Sysmon's ``IntegrityLevel`` text.
INTEGRITY_LEVELS: Final[dict[str, str]] = {
    "S-1-16-0": "Untrusted",
    "S-1-16-4096": "Low",
    "S-1-16-8192": "Medium",
    "S-1-16-12288": "High",
    "S-1-16-16384": "System",
}
#: IANA protocol number -> the name Sysmon (and ECS) use.
PROTOCOLS: Final[dict[int, str]] = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}

#: Registry roots, NT form -> Sysmon's form; the first prefix that matches wins.
_REGISTRY_ROOTS: Final = (
    ("\\registry\\machine\\software\\classes", "HKCR"),
    ("\\registry\\machine\\system\\controlset001", "HKLM\\System\\CurrentControlSet"),
    ("\\registry\\machine", "HKLM"),
    ("\\registry\\user", "HKU"),
)
_MUP: Final = "\\device\\mup\\"
_VOLUME: Final = re.compile(r"\\device\\harddiskvolume\d+\\", re.IGNORECASE)
_NO_NAME: Final = ("", "-")


def route_security(event_id: int, fields: dict[str, Any]) -> str | None:
    """The Sigma category of a Security event, its Sysmon fields added to ``fields``.

    None, ``fields`` untouched, for an event with no such category (see
    :data:`ROUTED_EVENTS`) and for one whose recorded values do not say
    which (a 4657 without a known ``OperationType``).
    """
    mapper = _MAPPERS.get(event_id)
    return mapper(fields) if mapper is not None else None


def _process_creation(f: dict[str, Any]) -> str:
    image = f.get("NewProcessName")
    if isinstance(image, str):
        f[F.IMAGE] = unc_path(image)
    parent = f.get("ParentProcessName")
    if isinstance(parent, str) and parent:
        f[F.PARENT_IMAGE] = unc_path(parent)
    creator = parse_pid(f.get("ProcessId"))
    pid = parse_pid(f.get("NewProcessId"))
    if pid is not None:
        f[F.PROCESS_ID] = pid
    else:  # the recorded ProcessId is the creator's: never leave it as the new process's
        f.pop(F.PROCESS_ID, None)
    if creator is not None:
        f[F.PARENT_PROCESS_ID] = creator
    user = account(f, "Target")
    logon = f.get("TargetLogonId")
    if user is None:
        user = account(f, "Subject")
        logon = f.get("SubjectLogonId")
    elif logon == "0x0":
        logon = None
    if user is not None:
        f[F.USER] = user
    if isinstance(logon, str) and logon:
        f[F.LOGON_ID] = logon
    level = integrity_level(f.get("MandatoryLabel"), f.get("TokenElevationType"))
    if level is not None:
        f[F.INTEGRITY_LEVEL] = level
    return ev.PROCESS_CREATION


def _registry_value(f: dict[str, Any]) -> str | None:
    operation = f.get("OperationType")
    if operation in (VALUE_CREATED, VALUE_MODIFIED):
        category, event_type = ev.REGISTRY_SET, "SetValue"
    elif operation == VALUE_DELETED:
        category, event_type = ev.REGISTRY_DELETE, "DeleteValue"
    else:
        return None
    key = f.get("ObjectName")
    if isinstance(key, str) and key:
        f[F.TARGET_OBJECT] = registry_path(key, f.get("ObjectValueName"))
    f[F.EVENT_TYPE] = event_type
    if category == ev.REGISTRY_SET and "NewValue" in f:
        f[F.DETAILS] = f["NewValue"]
    _acting_process(f)
    return category


def _connection(f: dict[str, Any]) -> str:
    application = f.get("Application")
    if isinstance(application, str) and application:
        f[F.IMAGE] = _VOLUME.sub("C:\\\\", unc_path(application), count=1)
    pid = parse_pid(f.get("ProcessID"))
    if pid is not None:
        f[F.PROCESS_ID] = pid
    direction = f.get("Direction")
    if direction in (OUTBOUND, INBOUND):
        f[F.INITIATED] = direction == OUTBOUND
    number = _int(f.get("Protocol"), 10)
    if number is not None:
        f[F.PROTOCOL] = PROTOCOLS.get(number, str(number))
    for address, port, ip_name, port_name, ipv6_name in (
        ("SourceAddress", "SourcePort", F.SOURCE_IP, F.SOURCE_PORT, F.SOURCE_IS_IPV6),
        ("DestAddress", "DestPort", F.DESTINATION_IP, F.DESTINATION_PORT, F.DESTINATION_IS_IPV6),
    ):
        ip = f.get(address)
        if isinstance(ip, str) and ip:
            f[ip_name] = ip
            f[ipv6_name] = ":" in ip
        number = _int(f.get(port), 10)
        if number is not None:
            f[port_name] = number
    return ev.NETWORK_CONNECTION


def _object_access(f: dict[str, Any]) -> str | None:
    if f.get("ObjectType") != "File":
        return None
    name = f.get("ObjectName")
    if isinstance(name, str) and name:
        f["FileName"] = unc_path(name)
    _acting_process(f)
    return FILE_ACCESS


def _acting_process(f: dict[str, Any]) -> None:
    """``Image``, ``ProcessId`` and ``User`` of the process a 4657/4663 names as the actor."""
    image = f.get("ProcessName")
    if isinstance(image, str) and image:
        f[F.IMAGE] = unc_path(image)
    pid = parse_pid(f.get("ProcessId"))
    if pid is not None:
        f[F.PROCESS_ID] = pid
    user = account(f, "Subject")
    if user is not None:
        f[F.USER] = user


_MAPPERS: Final[dict[int, Callable[[dict[str, Any]], str | None]]] = {
    4688: _process_creation,
    4657: _registry_value,
    5156: _connection,
    4663: _object_access,
}


def _int(value: Any, base: int) -> int | None:
    if type(value) is int:
        return value
    if not isinstance(value, str):
        return None
    try:
        return int(value, base)
    except ValueError:
        return None


def parse_pid(value: Any) -> int | None:
    """A process id as Sysmon writes it (an integer) from the record's ``0x1fc`` text, or None."""
    number = _int(value, 0)
    return number if number is not None and number >= 0 else None


def account(fields: dict[str, Any], prefix: str) -> str | None:
    """``DOMAIN\\user`` of the ``Subject``/``Target`` account, as Sysmon writes ``User``; None when unnamed."""
    sid = fields.get(prefix + "UserSid")
    known = WELL_KNOWN_ACCOUNTS.get(sid) if isinstance(sid, str) else None
    if known is not None:
        return known
    name = fields.get(prefix + "UserName")
    if not isinstance(name, str) or name in _NO_NAME:
        return None
    domain = fields.get(prefix + "DomainName")
    if isinstance(domain, str) and domain not in _NO_NAME:
        return f"{domain}\\{name}"
    return name


def integrity_level(label: Any, elevation: Any) -> str | None:
    """Sysmon's ``IntegrityLevel`` from a 4688's ``MandatoryLabel``, else its ``TokenElevationType``."""
    if isinstance(label, str) and label:
        return INTEGRITY_LEVELS.get(label.upper(), label)
    if elevation == ELEVATED_TOKEN:
        return "High"
    return None


def unc_path(path: str) -> str:
    """``\\Device\\Mup\\server\\share\\...`` as Sysmon writes it, ``\\\\server\\share\\...``; other paths unchanged."""
    if path[:12].lower() == _MUP:
        return "\\\\" + path[12:]
    return path


def registry_path(key: str, value_name: Any) -> str:
    """Sysmon's ``TargetObject`` of a value: its key in Sysmon's form, then the value's name."""
    lowered = key.lower()
    for prefix, root in _REGISTRY_ROOTS:
        if lowered.startswith(prefix) and (len(key) == len(prefix) or key[len(prefix)] == "\\"):
            key = root + key[len(prefix):]
            break
    name = value_name if isinstance(value_name, str) and value_name not in _NO_NAME else "(Default)"
    return f"{key}\\{name}"
