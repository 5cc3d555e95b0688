"""Test support: the ETW records Windows emits for the activity a Sysmon event records.

For each Sysmon event of the five categories SigmaHQ leans on, build what
the ETW providers would have delivered for the same activity, in
pywintrace's shape, plus what the live host would have answered the
normalizer's :class:`~edr.sources.etw.host.ProcessFacts` (the command line,
directory and user of a process still running; the image of one started
before the session). What needs the image file itself (hashes, version
resource) is *not* supplied: on this machine there is no such file, which is
what the comparison reports.

- process_creation -> Kernel-Process 1 (device path, mandatory label, parent pid,
  creation time) raised by the parent; facts for the child and the parent.
- network_connection -> a DNS-Client 3008 answering ``DestinationHostname`` with the
  destination address (the program resolved the name it connects to), then the
  Kernel-Network connect/accept, TCP/UDP, v4/v6, addresses and ports in network
  byte order, raised by System with the owner in ``PID``.
- file_event -> Kernel-File 12 (overwrite-if) for the target.
- registry_set -> Kernel-Registry opens of the hive root and of the key relative to
  it (kernel names: ``\\REGISTRY\\MACHINE``, ``ControlSet001``), then 5 SetValue with
  the value's type and raw bytes rebuilt from ``Details``.
- dns_query -> DNS-Client 3008.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import struct
from typing import Any, Final

from edr.event import Event
from edr.sources.etw.host import DeviceMap, LiveProcess
from tests.sources.etw.records import record

#: QueryDosDevice of the lab: every drive letter on its own volume.
DEVICES: Final = {f"\\Device\\HarddiskVolume{i}": f"{letter}:" for i, letter in enumerate("CDEFGHIJ", start=3)}
LABELS: Final = {"untrusted": 0, "low": 4096, "medium": 8192, "high": 12288, "system": 16384}
#: Sysmon hive names -> the kernel's
ROOTS: Final = (("HKLM", "\\REGISTRY\\MACHINE"), ("HKU", "\\REGISTRY\\USER"),
                ("HKCR", "\\REGISTRY\\MACHINE\\SOFTWARE\\Classes"))
_DWORD = re.compile(r"^DWORD \(0x([0-9a-fA-F]{1,8})\)$")
_QWORD = re.compile(r"^QWORD \(0x([0-9a-fA-F]{1,8})-0x([0-9a-fA-F]{1,8})\)$")
_pointers = itertools.count(0xFFFF_A000_0000_0000, 0x40)


def filetime(ts: float) -> int:
    return round(ts * 10_000_000) + 116_444_736_000_000_000


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _net_u32(address: ipaddress.IPv4Address) -> int:
    return struct.unpack("<I", address.packed)[0]


def _net_u16(port: int) -> int:
    return struct.unpack("<H", port.to_bytes(2, "big"))[0]


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class SysmonToEtw:
    """Builds ETW records and host facts for Sysmon events."""

    def __init__(self) -> None:
        self.devices = DeviceMap(DEVICES)

    def build(self, event: Event) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, LiveProcess]] | None:
        """``(records, facts)`` for one Sysmon event, or None when it lacks what ETW would report."""
        f = event.fields
        ts = filetime(event.timestamp)
        pid = _int(f.get("ProcessId"))
        if pid is None:
            return None
        facts: dict[int, LiveProcess] = {}
        image = _text(f.get("Image"))
        user = _text(f.get("User")) or None
        if event.category != "process_creation" and image:
            facts[pid] = LiveProcess(image=image, user=user)
        builder = getattr(self, "_" + event.category)
        records = builder(f, pid, ts, facts, event.timestamp)
        return (records, facts) if records else None

    def _process_creation(self, f: dict[str, Any], pid: int, ts: int, facts: dict[int, LiveProcess],
                          epoch: float) -> list[Any]:
        ppid = _int(f.get("ParentProcessId")) or 0
        image = _text(f.get("Image"))
        if not image:
            return []
        props: dict[str, Any] = {"ProcessID": pid, "CreateTime": ts, "ParentProcessID": ppid,
                                 "ImageName": self.devices.to_device(image)}
        rid = LABELS.get(_text(f.get("IntegrityLevel")).lower())
        if rid is not None:
            props["MandatoryLabel"] = f"S-1-16-{rid}"
        facts[pid] = LiveProcess(command_line=_text(f.get("CommandLine")),
                                 current_directory=_text(f.get("CurrentDirectory")) or None,
                                 user=_text(f.get("User")) or None, create_time=epoch)
        if ppid and f.get("ParentImage"):
            facts[ppid] = LiveProcess(image=_text(f.get("ParentImage")),
                                      command_line=_text(f.get("ParentCommandLine")),
                                      user=_text(f.get("ParentUser")) or None)
        return [record("process", 1, props, kinds={"CreateTime": "u64"}, pid=ppid or 4, ts=ts, opcode=1,
                       version=4)]

    def _network_connection(self, f: dict[str, Any], pid: int, ts: int, facts: dict[int, LiveProcess],
                            epoch: float) -> list[Any]:
        try:
            src = ipaddress.ip_address(_text(f.get("SourceIp")) or str(f.get("SourceIp")))
            dst = ipaddress.ip_address(_text(f.get("DestinationIp")) or str(f.get("DestinationIp")))
        except ValueError:
            return []
        sport, dport = _int(f.get("SourcePort")) or 0, _int(f.get("DestinationPort")) or 0
        initiated = _flag(f.get("Initiated"))
        udp = _text(f.get("Protocol")).lower() == "udp"
        v6 = dst.version == 6 or src.version == 6
        if v6:
            src = src if src.version == 6 else ipaddress.IPv6Address(f"::ffff:{src}")
            dst = dst if dst.version == 6 else ipaddress.IPv6Address(f"::ffff:{dst}")
        event_id = {(False, False, True): 12, (False, False, False): 15, (False, True, True): 28,
                    (False, True, False): 31, (True, False, True): 42, (True, False, False): 43,
                    (True, True, True): 58, (True, True, False): 59}[(udp, v6, initiated)]
        out: list[Any] = []
        hostname = _text(f.get("DestinationHostname"))
        if initiated and hostname and hostname != "-":
            mapped = dst.ipv4_mapped if isinstance(dst, ipaddress.IPv6Address) else dst
            answer = f"::ffff:{mapped};" if mapped is not None else f"{dst};"
            out.append(record("dns", 3008, {"QueryName": hostname, "QueryType": 1, "QueryStatus": 0,
                                            "QueryResults": answer}, pid=pid, ts=ts - 1))
        props: dict[str, Any] = {"PID": pid, "size": 0, "dport": _net_u16(dport), "sport": _net_u16(sport)}
        kinds = {"dport": "u16", "sport": "u16"}
        if v6:
            props.update(daddr=dst.packed, saddr=src.packed)
        else:
            props.update(daddr=_net_u32(dst), saddr=_net_u32(src))  # type: ignore[arg-type]
        out.append(record("network", event_id, props, kinds=kinds, pid=4, ts=ts, opcode=event_id))
        return out

    def _file_event(self, f: dict[str, Any], pid: int, ts: int, facts: dict[int, LiveProcess],
                    epoch: float) -> list[Any]:
        target = _text(f.get("TargetFilename"))
        if not target:
            return []
        props = {"FileObject": next(_pointers), "CreateOptions": (5 << 24) | 0x60,
                 "FileName": self.devices.to_device(target)}
        return [record("file", 12, props, kinds={"FileObject": "u64"}, pid=pid, ts=ts, version=1)]

    def _registry_set(self, f: dict[str, Any], pid: int, ts: int, facts: dict[int, LiveProcess],
                      epoch: float) -> list[Any]:
        target = _text(f.get("TargetObject"))
        hive, _, rest = target.partition("\\")
        root = dict(ROOTS).get(hive.upper())
        if root is None or not rest:
            return []
        key, _, value = rest.rpartition("\\")
        if value == "(Default)":
            value = ""
        key = re.sub(r"(?i)^system\\currentcontrolset", "SYSTEM\\\\ControlSet001", key)
        if hive.upper() == "HKU":  # the root handle is the user's hive: \REGISTRY\USER\<SID>
            sid, _, key = key.partition("\\")
            root = f"{root}\\{sid}"
        base, ko = next(_pointers), next(_pointers)
        kinds = {"BaseObject": "u64", "KeyObject": "u64"}
        value_type, data = _value(_text(f.get("Details")))
        return [
            record("registry", 2, {"BaseObject": 0, "KeyObject": base, "BaseName": "", "RelativeName": root},
                   kinds=kinds, pid=pid, ts=ts - 2, opcode=33),
            record("registry", 2, {"BaseObject": base, "KeyObject": ko, "BaseName": "", "RelativeName": key},
                   kinds=kinds, pid=pid, ts=ts - 1, opcode=33),
            record("registry", 5, {"KeyObject": ko, "KeyName": "", "ValueName": value, "Type": value_type,
                                   "CapturedData": data}, kinds={"KeyObject": "u64"}, pid=pid, ts=ts, opcode=36),
        ]

    def _dns_query(self, f: dict[str, Any], pid: int, ts: int, facts: dict[int, LiveProcess],
                   epoch: float) -> list[Any]:
        name = _text(f.get("QueryName"))
        if not name:
            return []
        results = _text(f.get("QueryResults"))
        props = {"QueryName": name, "QueryType": 1, "QueryStatus": _int(f.get("QueryStatus")) or 0,
                 "QueryResults": "" if results == "-" else results}
        return [record("dns", 3008, props, pid=pid, ts=ts)]


def _value(details: str) -> tuple[int, bytes]:
    """Registry type and raw bytes of a Sysmon ``Details``."""
    m = _DWORD.match(details)
    if m:
        return 4, int(m.group(1), 16).to_bytes(4, "little")
    m = _QWORD.match(details)
    if m:
        return 11, ((int(m.group(1), 16) << 32) | int(m.group(2), 16)).to_bytes(8, "little")
    if details == "Binary Data":
        return 3, b"\x01\x02\x03\x04"
    return 1, (details + "\0").encode("utf-16-le")
