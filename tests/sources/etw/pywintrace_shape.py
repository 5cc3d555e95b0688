"""Test support: records of ../shared/etw-recordings in exactly the shape pywintrace delivers.

pywintrace 0.2.0, ``etw/etw.py``, ``EventConsumer._processEvent`` (lines 715-843)
calls the user's callback with ``(event_id, out)`` (line 839), where:

- ``event_id`` is ``EventHeader.EventDescriptor.Id`` (line 736).
- ``out["EventHeader"]`` (lines 744-763) copies the EVENT_HEADER: ``Size``,
  ``HeaderType``, ``Flags``, ``EventProperty``, ``ThreadId``, ``ProcessId``,
  ``TimeStamp`` (a ``LARGE_INTEGER``, i.e. ``int``: for a real-time session
  ProcessTrace hands over FILETIME ticks, which is what the recordings hold),
  ``ProviderId`` (``str(GUID)`` = ``StringFromCLSID``: upper case in braces,
  line 740 and GUID.py ``__str__``), ``EventDescriptor`` {``Id``, ``Version``,
  ``Channel``, ``Level``, ``Opcode``, ``Task``, ``Keyword``} (all ints, the
  ctypes fields of EVENT_DESCRIPTOR), ``KernelTime``, ``UserTime`` and
  ``ActivityId`` (``str(GUID)``).
- ``out["Task Name"]``: first the provider GUID (line 764), then replaced by
  the parsed one (line 817): the manifest's task name, or the provider name
  when the event has no task (lines 772-775), stripped and upper-cased
  (line 777).
- ``out["Description"]``: the event's message template, unformatted (``%1``
  placeholders), or ``''`` when it has none (lines 780-783).
- The properties, each at the top level under its manifest name (lines
  799-813, ``parsed_data.update(field)`` then ``out.update(parsed_data)`` at
  835), in template order. Each value is what ``TdhFormatProperty`` printed
  (line 589, ``formatted_data.value``, a ``str``), converted only when the
  property's out type is in ``tdh.TDH_CONVERTER_LOOKUP`` (lines 591-592;
  ``tdh.py`` lines 179-187: INT, UNSIGNEDINT, LONG, UNSIGNEDLONG -> ``int``,
  FLOAT, DOUBLE -> ``float``, BOOLEAN -> ``bool``).
- ``out["EventExtendedData"]`` only when the header has
  EVENT_HEADER_FLAG_EXTENDED_INFO (lines 819-820), e.g. ``{"SID": "S-1-5-..."}``
  (line 618) when the session enabled the SID property.

Rendering choices per manifest in-type (default out types as ``mc.exe``
records them; the manifests are those the providers register, as dumped in
repnz/etw-providers-docs, ``Manifests-Win10-18990``):

==================  ========================  =========================================
in-type             default out-type          value in the callback (etw.py line)
==================  ========================  =========================================
UnicodeString,      xs:string                 ``str`` (589)
AnsiString
UInt32, Int32       xs:unsignedInt / xs:int   ``int`` (591-592)
UInt64              xs:unsignedLong           ``int`` (591-592)
UInt16              xs:unsignedShort          decimal ``str``: UNSIGNEDSHORT is not in the
                                              converter table (589)
Pointer             win:HexInt64              ``"0xFFFFD60F5C9A1F30"`` (589)
HexInt32            win:HexInt32              ``"0x0"`` (589)
Binary              xs:hexBinary              ``"0x4300..."`` (589)
SID                 xs:string                 ``"S-1-16-12288"`` (589)
FILETIME            xs:dateTime               ISO-8601 text ``2026-10-09T07:58:20.1409291Z`` (589)
Boolean             xs:boolean                ``bool`` (591-592, ``convert_bool_str``)
==================  ========================  =========================================

Two facts the recordings do not carry are filled the same way every time:
``ThreadId``, ``Size``, ``KernelTime``, ``UserTime`` are 0 and ``ActivityId`` is
the null GUID; ``Channel`` and ``Level`` come from the manifest. The
recordings hold only the properties Rustinel read, so the others are absent
here, where pywintrace would deliver them too.

``ints_as_text=True`` renders every integer property as TDH's decimal text,
the shape pywintrace gives if a manifest recorded no out type (the
normalizer must read both).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Final

from tests.conftest import shared_path

RECORDINGS: Final = (
    "image_load.json", "process_lifecycle.json", "dns_query.json", "network_connect.json",
    "file_lifecycle.json", "registry_lifecycle.json", "powershell_module_logging.json",
    "powershell_script_block.json", "task_registered.json", "wmi_activity.json",
)

PROVIDER_NAMES: Final = {
    "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716": "Microsoft-Windows-Kernel-Process",
    "edd08927-9cc4-4e65-b970-c2560fb5c289": "Microsoft-Windows-Kernel-File",
    "7dd42a49-5329-4832-8dfd-43d979153a88": "Microsoft-Windows-Kernel-Network",
    "70eb4f03-c1de-4f73-a051-33d13d5413bd": "Microsoft-Windows-Kernel-Registry",
    "1c95126e-7eea-49a9-a3fe-a378b03ddb4d": "Microsoft-Windows-DNS-Client",
    "a0c1853b-5c40-4b15-8766-3cf1c58f985a": "Microsoft-Windows-PowerShell",
    "de7b24ea-73c8-4a09-985d-5bdadcfa9017": "Microsoft-Windows-TaskScheduler",
    "1418ef04-b0b4-4623-bf7e-d74ab47bbdaa": "Microsoft-Windows-WMI-Activity",
}
KP, KF, KN, KR, DNS, PS, TS, WMI = PROVIDER_NAMES.values()

_S, _A, _U16, _U32, _I32, _U64, _PTR, _HEX32, _BIN, _SID, _FT, _BOOL, _GUID = (
    "UnicodeString", "AnsiString", "UInt16", "UInt32", "Int32", "UInt64", "Pointer", "HexInt32", "Binary",
    "SID", "FILETIME", "Boolean", "GUID")

_PROCESS_START = [("ProcessID", _U32), ("ProcessSequenceNumber", _U64), ("CreateTime", _FT),
                  ("ParentProcessID", _U32), ("ParentProcessSequenceNumber", _U64), ("SessionID", _U32),
                  ("Flags", _U32), ("ProcessTokenElevationType", _U32), ("ProcessTokenIsElevated", _U32),
                  ("MandatoryLabel", _SID), ("ImageName", _S), ("ImageChecksum", _U32), ("TimeDateStamp", _U32),
                  ("PackageFullName", _S), ("PackageRelativeAppId", _S)]
_PROCESS_STOP = [("ProcessID", _U32), ("ProcessSequenceNumber", _U64), ("CreateTime", _FT), ("ExitTime", _FT),
                 ("ExitCode", _U32), ("TokenElevationType", _U32), ("HandleCount", _U32),
                 ("CommitCharge", _U64), ("CommitPeak", _U64), ("CPUCycleCount", _U64),
                 ("ReadOperationCount", _U32), ("WriteOperationCount", _U32), ("ReadTransferKiloBytes", _U32),
                 ("WriteTransferKiloBytes", _U32), ("HardFaultCount", _U32), ("ImageName", _A)]
_IMAGE_LOAD = [("ImageBase", _PTR), ("ImageSize", _PTR), ("ProcessID", _U32), ("ImageCheckSum", _U32),
               ("TimeDateStamp", _U32), ("DefaultBase", _PTR), ("ImageName", _S)]
_NAME = [("FileKey", _PTR), ("FileName", _S)]
_CREATE = [("Irp", _PTR), ("FileObject", _PTR), ("IssuingThreadId", _U32), ("CreateOptions", _U32),
           ("CreateAttributes", _U32), ("ShareAccess", _U32), ("FileName", _S)]
_CLOSE = [("Irp", _PTR), ("FileObject", _PTR), ("FileKey", _PTR), ("IssuingThreadId", _U32)]
_RW = [("ByteOffset", _U64), ("Irp", _PTR), ("FileObject", _PTR), ("FileKey", _PTR), ("IssuingThreadId", _U32),
       ("IOSize", _U32), ("IOFlags", _U32), ("ExtraFlags", _U32)]
_SETINFO = [("Irp", _PTR), ("FileObject", _PTR), ("FileKey", _PTR), ("ExtraInformation", _PTR),
            ("IssuingThreadId", _U32), ("InfoClass", _U32)]
_PATH = [("Irp", _PTR), ("FileObject", _PTR), ("FileKey", _PTR), ("ExtraInformation", _PTR),
         ("IssuingThreadId", _U32), ("InfoClass", _U32), ("FilePath", _S)]
_TCP4 = [("PID", _U32), ("size", _U32), ("daddr", _U32), ("saddr", _U32), ("dport", _U16), ("sport", _U16),
         ("mss", _U16), ("sackopt", _U16), ("tsopt", _U16), ("wsopt", _U16), ("rcvwin", _U32),
         ("rcvwinscale", _U16), ("sndwinscale", _U16), ("seqnum", _U32), ("connid", _U32)]
_TCP6 = [(name, _BIN if name in ("daddr", "saddr") else kind) for name, kind in _TCP4]
_UDP4 = [("PID", _U32), ("size", _U32), ("daddr", _U32), ("saddr", _U32), ("dport", _U16), ("sport", _U16),
         ("seqnum", _U32), ("connid", _U32)]
_UDP6 = [(name, _BIN if name in ("daddr", "saddr") else kind) for name, kind in _UDP4]
_KEY_OPEN = [("BaseObject", _PTR), ("KeyObject", _PTR), ("Status", _U32), ("Disposition", _U32),
             ("BaseName", _S), ("RelativeName", _S)]
_KEY_DELETE = [("KeyObject", _PTR), ("Status", _U32), ("KeyName", _S)]
_SET_VALUE = [("KeyObject", _PTR), ("Status", _U32), ("Type", _U32), ("DataSize", _U32), ("KeyName", _S),
              ("ValueName", _S), ("CapturedDataSize", _U16), ("CapturedData", _BIN), ("PreviousDataType", _U32),
              ("PreviousDataSize", _U32), ("PreviousDataCapturedSize", _U16), ("PreviousData", _BIN)]
_DELETE_VALUE = [("KeyObject", _PTR), ("Status", _U32), ("KeyName", _S), ("ValueName", _S)]

#: provider name -> event id -> (task name as pywintrace reports it, task value, keyword, template, message)
EVENTS: Final[dict[str, dict[int, tuple[str, int, int, list[tuple[str, str]], str]]]] = {
    KP: {
        1: ("ProcessStart", 1, 0x10, _PROCESS_START,
            "Process %1 started at time %3 by parent %4 running in session %6 with name %11."),
        2: ("ProcessStop", 2, 0x10, _PROCESS_STOP, "Process %1 (which started at time %3) stopped at time %4 "
            "with exit code %5."),
        5: ("ImageLoad", 5, 0x40, _IMAGE_LOAD, "Process %3 had an image loaded with name %7."),
        10: ("IoPriorityChange", 10, 0x100, [("ProcessID", _U32), ("ThreadID", _U32), ("OldPriority", "UInt8"),
                                            ("NewPriority", "UInt8")], ""),
    },
    KF: {
        10: ("NameCreate", 10, 0x10, _NAME, ""), 11: ("NameDelete", 11, 0x10, _NAME, ""),
        12: ("Create", 12, 0xA0, _CREATE, ""), 14: ("Close", 14, 0x20, _CLOSE, ""),
        16: ("Write", 16, 0x220, _RW, ""), 17: ("SetInformation", 17, 0x20, _SETINFO, ""),
        26: ("DeletePath", 26, 0x400, _PATH, ""), 27: ("RenamePath", 27, 0x800, _PATH, ""),
        30: ("CreateNewFile", 30, 0x1000, _CREATE, ""),
    },
    KN: {
        10: ("KERNEL_NETWORK_TASK_TCPIP", 10, 0x10, [*_UDP4[:6], ("startime", _U32), ("endtime", _U32), *_UDP4[6:]],
             "TCPv4: %2 bytes transmitted from %4:%6 to %3:%5."),
        12: ("KERNEL_NETWORK_TASK_TCPIP", 10, 0x10, _TCP4, "TCPv4: Connection attempted between %4:%6 and %3:%5."),
        15: ("KERNEL_NETWORK_TASK_TCPIP", 10, 0x10, _TCP4, "TCPv4: Connection established between %4:%6 and %3:%5."),
        28: ("KERNEL_NETWORK_TASK_TCPIP", 10, 0x20, _TCP6, "TCPv6: Connection attempted between %4:%6 and %3:%5."),
        31: ("KERNEL_NETWORK_TASK_TCPIP", 10, 0x20, _TCP6, "TCPv6: Connection established between %4:%6 and %3:%5."),
        42: ("KERNEL_NETWORK_TASK_UDPIP", 11, 0x10, _UDP4, "UDPv4: %2 bytes transmitted from %4:%6 to %3:%5."),
        43: ("KERNEL_NETWORK_TASK_UDPIP", 11, 0x10, _UDP4, "UDPv4: %2 bytes received from %4:%6 to %3:%5."),
        58: ("KERNEL_NETWORK_TASK_UDPIP", 11, 0x20, _UDP6, "UDPv6: %2 bytes transmitted from %4:%6 to %3:%5."),
        59: ("KERNEL_NETWORK_TASK_UDPIP", 11, 0x20, _UDP6, "UDPv6: %2 bytes received from %4:%6 to %3:%5."),
    },
    KR: {
        1: ("", 0, 0x1000, _KEY_OPEN, ""), 2: ("", 0, 0x2000, _KEY_OPEN, ""),
        3: ("", 0, 0x4000, _KEY_DELETE, ""), 5: ("", 0, 0x100, _SET_VALUE, ""),
        6: ("", 0, 0x200, _DELETE_VALUE, ""),
    },
    DNS: {
        3006: ("", 0, 0x8000000000000000, [("QueryName", _S), ("QueryType", _U32), ("QueryOptions", _U64),
                                           ("ServerList", _S), ("IsNetworkQuery", _U32),
                                           ("NetworkQueryIndex", _U32), ("InterfaceIndex", _U32),
                                           ("IsAsyncQuery", _U32)], "DNS query is called for the name %1, "
               "type %2, query options %3, Server List %4, isNetwork query %5, network index %6, "
               "interface index %7, is asynchronous query %8"),
        3008: ("", 0, 0x8000000000000000, [("QueryName", _S), ("QueryType", _U32), ("QueryOptions", _U64),
                                           ("QueryStatus", _U32), ("QueryResults", _S)],
               "DNS query is completed for the name %1, type %2, query options %3 with status %4 Results %5"),
    },
    PS: {
        4103: ("None", 0, 0x20, [("ContextInfo", _S), ("UserData", _S), ("Payload", _S)], "%3\r\n\r\nContext:\r\n%1"),
        4104: ("StartingCommand", 2, 0x1, [("MessageNumber", _I32), ("MessageTotal", _I32),
                                           ("ScriptBlockText", _S), ("ScriptBlockId", _S), ("Path", _S)],
               "Creating Scriptblock text (%1 of %2):\r\n%3\r\n\r\nScriptBlock ID: %4\r\nPath: %5"),
    },
    TS: {
        106: ("Taskregistered", 106, 0, [("TaskName", _S), ("UserContext", _S)],
              "User \"%2\"  registered Task Scheduler task \"%1\""),
        140: ("Taskregistrationupdated", 140, 0, [("TaskName", _S), ("UserName", _S)],
              "User \"%2\"  updated Task Scheduler task \"%1\""),
        141: ("Taskregistrationdeleted", 141, 0, [("TaskName", _S), ("UserName", _S)],
              "User \"%2\"  deleted Task Scheduler task \"%1\""),
    },
    WMI: {
        11: ("", 0, 0, [("CorrelationId", _S), ("GroupOperationId", _U32), ("OperationId", _U32),
                        ("Operation", _S), ("ClientMachine", _S), ("ClientMachineFQDN", _S), ("User", _S),
                        ("ClientProcessId", _U32), ("ClientProcessCreationTime", _U64), ("NamespaceName", _S),
                        ("IsLocal", _BOOL)], ""),
        12: ("", 0, 0, [("GroupOperationId", _U32), ("Operation", _S), ("HostId", _U32), ("ProviderName", _S),
                        ("ProviderGuid", _S), ("Path", _S)], ""),
        17: ("", 0, 0, [("CorrelationId", _S), ("ProcessId", _U32), ("Protocol", _S), ("Operation", _S),
                        ("User", _S), ("Namespace", _S)], ""),
        5857: ("", 0, 0, [("ProviderName", _S), ("Code", _HEX32), ("HostProcess", _S), ("ProcessID", _U32),
                          ("ProviderPath", _S)], "%1 provider started with result code %2. HostProcess = %3; "
               "ProcessID = %4; ProviderPath = %5"),
        5861: ("", 0, 0, [("Namespace", _S), ("ESS", _S), ("CONSUMER", _S), ("PossibleCause", _S)],
               "Namespace = %1; Eventfilter = %2 (refer to its activate eventid:5859); Consumer = %3; "
               "PossibleCause = %4"),
    },
}

NULL_GUID: Final = "{00000000-0000-0000-0000-000000000000}"
EVENT_HEADER_FLAG_EXTENDED_INFO: Final = 0x0001
EVENT_HEADER_FLAG_64_BIT_HEADER: Final = 0x0040


def load_recording(name: str) -> dict[str, Any]:
    """One recording file (``json`` keeps the u64 kernel pointers above 2**63 exact)."""
    return json.loads(shared_path("etw-recordings", name).read_text(encoding="utf-8"))


def filetime_iso(ticks: int) -> str:
    """A FILETIME as TDH prints an xs:dateTime (7 fraction digits, UTC)."""
    seconds, rest = divmod(ticks - 116_444_736_000_000_000, 10_000_000)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:07d}Z"


def render(in_type: str | None, typed: dict[str, Any], ints_as_text: bool) -> Any:
    """One property value as pywintrace delivers it (see the module table)."""
    (kind, value), = typed.items()
    if kind == "bytes":
        return "0x" + value.upper()
    if kind == "string":
        return value
    number = int(value)
    if in_type in (_PTR, _HEX32):
        return f"0x{number:X}"
    if in_type == _FT:
        return filetime_iso(number)
    if in_type == _BOOL:
        return bool(number)
    if in_type == _U16 or (in_type is None and kind == "u16") or ints_as_text:
        return str(number)
    return number


def to_pywintrace(record: dict[str, Any], *, ints_as_text: bool = False,
                  extended: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One record of the recording format as pywintrace's callback argument."""
    head = record["header"]
    provider = PROVIDER_NAMES[head["provider"]]
    event_id = head["event_id"]
    task_name, task, keyword, template, message = EVENTS[provider][event_id]
    types = dict(template)
    props = record["properties"]
    out: dict[str, Any] = {
        "EventHeader": {
            "Size": 0, "HeaderType": 0,
            "Flags": EVENT_HEADER_FLAG_64_BIT_HEADER | (EVENT_HEADER_FLAG_EXTENDED_INFO if extended else 0),
            "EventProperty": 0, "ThreadId": 0, "ProcessId": head["process_id"], "TimeStamp": head["timestamp"],
            "ProviderId": "{" + head["provider"].upper() + "}",
            "EventDescriptor": {"Id": event_id, "Version": head["version"], "Channel": 0, "Level": 4,
                                "Opcode": head["opcode"], "Task": task, "Keyword": keyword},
            "KernelTime": 0, "UserTime": 0, "ActivityId": NULL_GUID,
        },
        "Task Name": "{" + head["provider"].upper() + "}",
    }
    # template order first (pywintrace walks the template), then anything the manifest does not list
    for name in [n for n, _ in template if n in props] + [n for n in props if n not in types]:
        out[name] = render(types.get(name), props[name], ints_as_text)
    out["Description"] = message
    out["Task Name"] = (task_name or provider).strip().upper()
    if extended:
        out["EventExtendedData"] = dict(extended)
    return event_id, out


def recorded(name: str, *, ints_as_text: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """Every record of one recording, converted."""
    return [to_pywintrace(r, ints_as_text=ints_as_text) for r in load_recording(name)["records"]]


def all_recorded(*, ints_as_text: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """Every recording, in :data:`RECORDINGS` order (image load and DNS before what they name)."""
    return [rec for name in RECORDINGS for rec in recorded(name, ints_as_text=ints_as_text)]


def recordings_dir() -> Path:
    """../shared/etw-recordings (skips when absent)."""
    return shared_path("etw-recordings")
