"""The normalizer's rules, one provider at a time, on records built in pywintrace's shape."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from edr.event import Event
from edr.sources.etw.host import DeviceMap, LiveProcess, SidResolver
from edr.sources.etw.normalize import EtwNormalizer, NormalizerLimits
from edr.sources.etw.process_events import integrity_level
from tests.sources.etw.conftest import LAB_ACCOUNTS, LAB_DEVICES
from tests.sources.etw.records import T0, record

VOL = "\\Device\\HarddiskVolume3"
SECOND = 10_000_000


def net_u32(ip: str) -> int:
    """An IPv4 address as Kernel-Network's u32: the bytes in network order read little-endian."""
    return struct.unpack("<I", bytes(int(x) for x in ip.split(".")))[0]


def net_u16(port: int) -> int:
    return struct.unpack("<H", port.to_bytes(2, "big"))[0]


def one(events: list[Event] | None) -> Event:
    assert events is not None and len(events) == 1, events
    return events[0]


class Facts:
    """Live-process facts from a table."""

    def __init__(self, table: dict[int, LiveProcess]) -> None:
        self.table = table
        self.asked: list[int] = []

    def describe(self, pid: int) -> LiveProcess | None:
        self.asked.append(pid)
        return self.table.get(pid)


def make(facts: Facts | None = None, **kw: Any) -> EtwNormalizer:
    return EtwNormalizer(devices=DeviceMap(LAB_DEVICES), sids=SidResolver(LAB_ACCOUNTS.get), facts=facts, **kw)


# --- process ---------------------------------------------------------------------------------
def start(pid: int, ppid: int, image: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    props = {"ProcessID": pid, "CreateTime": extra.pop("create", T0), "ParentProcessID": ppid,
             "MandatoryLabel": extra.pop("label", "S-1-16-8192"), "ImageName": VOL + image}
    return record("process", 1, props, kinds={"CreateTime": "u64"}, opcode=1, version=4, pid=ppid, **extra)


def test_process_start_takes_command_line_directory_and_user_from_the_live_process() -> None:
    facts = Facts({
        500: LiveProcess(image="C:\\Windows\\explorer.exe", command_line="C:\\Windows\\Explorer.EXE",
                         user="lab-windows\\theo-rdp"),
        7004: LiveProcess(command_line="cmd.exe /c whoami", current_directory="C:\\Users\\theo-rdp\\",
                          user="lab-windows\\theo-rdp", create_time=(T0 - 116444736000000000) / SECOND),
    })
    n = make(facts)
    ev = one(n.normalize(start(7004, 500, "\\Windows\\System32\\cmd.exe")))
    assert ev.fields == {
        "ProcessId": 7004, "Image": "C:\\Windows\\System32\\cmd.exe", "IntegrityLevel": "Medium",
        "CommandLine": "cmd.exe /c whoami", "CurrentDirectory": "C:\\Users\\theo-rdp\\",
        "User": "lab-windows\\theo-rdp", "ParentProcessId": 500, "ParentImage": "C:\\Windows\\explorer.exe",
        "ParentCommandLine": "C:\\Windows\\Explorer.EXE", "ParentUser": "lab-windows\\theo-rdp",
    }
    # the child is now known: its own child names it as parent without asking the host
    grandchild = one(n.normalize(start(7100, 7004, "\\Windows\\System32\\whoami.exe")))
    assert grandchild.fields["ParentCommandLine"] == "cmd.exe /c whoami"
    assert facts.asked.count(7004) == 1


def test_a_reused_pid_is_not_described_with_the_new_process_facts() -> None:
    facts = Facts({7004: LiveProcess(command_line="notepad.exe", create_time=0.0)})
    n = make(facts)
    ev = one(n.normalize(start(7004, 0, "\\Windows\\System32\\cmd.exe")))
    assert "CommandLine" not in ev.fields
    assert n.counts["describe_pid_reused"] == 1


def test_process_user_falls_back_to_the_event_sid() -> None:
    n = make()
    ev = one(n.normalize(start(7004, 6340, "\\Windows\\System32\\cmd.exe",
                               extended={"SID": "S-1-5-21-1-2-3-1001"})))
    assert ev.fields["User"] == "lab-windows\\theo-rdp"
    one(n.normalize(start(7005, 6340, "\\Windows\\System32\\cmd.exe", extended={"SID": "S-1-5-21-1-2-3-1001"})))
    assert n.sids.statistics()["lookups"] == 1  # cached


@pytest.mark.parametrize(("label", "level"), [
    ("S-1-16-0", "Untrusted"), ("S-1-16-4096", "Low"), ("S-1-16-8192", "Medium"), ("S-1-16-8448", "Medium"),
    ("S-1-16-12288", "High"), ("S-1-16-16384", "System"), ("Mandatory Label\\High Mandatory Level", "High"),
    ("Mandatory Label\\Medium Plus Mandatory Level", "Medium"), ("", None), ("S-1-16-x", None),
])
def test_integrity_levels(label: str, level: str | None) -> None:
    assert integrity_level(label) == level


def test_image_load_with_the_classic_opcode_10() -> None:
    n = make()
    props = {"ProcessID": 900, "ImageName": VOL + "\\Windows\\System32\\ntdll.dll"}
    ev = one(n.normalize(record("process", 5, props, opcode=10, pid=900)))
    assert ev.category == "image_load" and ev.fields["ImageLoaded"] == "C:\\Windows\\System32\\ntdll.dll"
    # an id-10 record without an image name is not an image load (IoPriorityChange)
    assert n.normalize(record("process", 10, {"ProcessID": 900, "ThreadID": 1}, opcode=0)) is None


def test_stop_of_an_unknown_process_keeps_the_short_name() -> None:
    n = make()
    ev = one(n.normalize(record("process", 2, {"ProcessID": 77, "ImageName": "cmd.exe"}, opcode=2, version=2)))
    assert ev.fields == {"ProcessId": 77, "Image": "cmd.exe"}


def test_the_agents_own_events_are_dropped() -> None:
    n = make(ignore_pids={6340})
    assert n.normalize(start(7004, 6340, "\\Windows\\System32\\cmd.exe")) is None


# --- network ---------------------------------------------------------------------------------
def tcp(event_id: int, src: tuple[str, int], dst: tuple[str, int], pid: int = 1234, **kw: Any) -> Any:
    props = {"PID": pid, "daddr": net_u32(dst[0]), "saddr": net_u32(src[0]), "dport": net_u16(dst[1]),
             "sport": net_u16(src[1])}
    return record("network", event_id, props, kinds={"dport": "u16", "sport": "u16"}, pid=4, opcode=event_id, **kw)


def test_accept_is_not_initiated_and_names_its_remote_source() -> None:
    n = make()
    n.dns.add("198.51.100.7", "peer.example", 300, (T0 - 116444736000000000) / SECOND)
    ev = one(n.normalize(tcp(15, ("198.51.100.7", 50000), ("10.0.0.5", 3389))))
    assert ev.fields["Initiated"] == "false"
    assert (ev.fields["SourceIp"], ev.fields["SourcePort"]) == ("198.51.100.7", 50000)
    assert (ev.fields["DestinationIp"], ev.fields["DestinationPort"]) == ("10.0.0.5", 3389)
    assert ev.fields["SourceHostname"] == "peer.example"
    assert ev.fields["ProcessId"] == 1234  # the PID property, not the header's System


def test_ipv6_connect_from_binary_addresses() -> None:
    n = make()
    dst = bytes.fromhex("20010db8000000000000000000000001")
    src = bytes.fromhex("fe800000000000000000000000000002")
    props = {"PID": 55, "daddr": dst, "saddr": src, "dport": net_u16(443), "sport": net_u16(50123)}
    ev = one(n.normalize(record("network", 28, props, kinds={"dport": "u16", "sport": "u16"}, opcode=12)))
    assert ev.fields["DestinationIp"] == "2001:db8::1" and ev.fields["DestinationIsIpv6"] == "true"
    assert ev.fields["SourceIp"] == "fe80::2" and ev.fields["DestinationPort"] == 443


def test_addresses_tdh_already_formatted_keep_their_ports() -> None:
    n = make()
    ev_id, data = tcp(12, ("10.0.0.5", 50000), ("203.0.113.9", 4444))
    data.update(daddr="203.0.113.9", saddr="10.0.0.5", dport="4444", sport="50000")
    ev = one(n.normalize((ev_id, data)))
    assert (ev.fields["DestinationIp"], ev.fields["DestinationPort"], ev.fields["SourcePort"]) == \
        ("203.0.113.9", 4444, 50000)


def test_udp_and_unknown_network_events() -> None:
    n = make()
    props = {"PID": 9, "daddr": net_u32("8.8.8.8"), "saddr": net_u32("10.0.0.5"), "dport": net_u16(53),
             "sport": net_u16(60000)}
    ev = one(n.normalize(record("network", 42, props, kinds={"dport": "u16", "sport": "u16"}, opcode=42)))
    assert (ev.fields["Protocol"], ev.fields["Initiated"], ev.fields["DestinationPort"]) == ("udp", "true", 53)
    assert n.normalize(record("network", 10, props, kinds={"dport": "u16", "sport": "u16"})) is None  # data sent
    bad = dict(props, daddr="not an address")
    assert n.normalize(record("network", 12, bad, kinds={"dport": "u16", "sport": "u16"})) is None
    assert n.counts["network_malformed"] == 1


# --- file ------------------------------------------------------------------------------------
def create(fo: int, path: str, disposition: int, options: int = 0x60, event_id: int = 12) -> Any:
    props = {"FileObject": fo, "CreateOptions": (disposition << 24) | options, "FileName": VOL + path}
    return record("file", event_id, props, kinds={"FileObject": "u64"}, version=1)


def test_file_created_new_is_reported_once_per_open() -> None:
    n = make()
    first = one(n.normalize(create(0xA0, "\\Temp\\new.exe", 2)))
    assert first.category == "file_event" and first.fields["TargetFilename"] == "C:\\Temp\\new.exe"
    # CreateNewFile for the same open adds nothing
    assert n.normalize(create(0xA0, "\\Temp\\new.exe", 2, event_id=30)) is None
    # an open of an existing file, then a write: no file_event (Sysmon reports creations, not writes)
    assert n.normalize(create(0xB0, "\\Temp\\old.txt", 1)) is None
    write = record("file", 16, {"FileObject": 0xB0}, kinds={"FileObject": "u64"}, version=1)
    assert n.normalize(write) is None


def test_directory_opens_make_no_file_event() -> None:
    n = make()
    assert n.normalize(create(0xC0, "\\Temp\\dir", 2, options=0x1)) is None


def test_set_information_without_the_open_is_named_by_the_file_key() -> None:
    n = make()
    name = record("file", 10, {"FileKey": 0xF00, "FileName": VOL + "\\Temp\\a.txt"}, kinds={"FileKey": "u64"})
    assert n.normalize(name) is None
    info = record("file", 17, {"FileObject": 0xDEAD, "FileKey": 0xF00, "InfoClass": 4},
                  kinds={"FileObject": "u64", "FileKey": "u64"}, version=1)
    assert one(n.normalize(info)).fields["TargetFilename"] == "C:\\Temp\\a.txt"
    gone = record("file", 11, {"FileKey": 0xF00, "FileName": VOL + "\\Temp\\a.txt"}, kinds={"FileKey": "u64"})
    n.normalize(gone)
    assert n.normalize(info) is None and n.counts["file_unnamed"] == 1


def test_rename_of_a_file_opened_before_the_session_has_no_source() -> None:
    n = make()
    rename = record("file", 27, {"FileObject": 0x1, "FileKey": 0x2, "FilePath": VOL + "\\Temp\\b.txt"},
                    kinds={"FileObject": "u64", "FileKey": "u64"}, version=1)
    ev = one(n.normalize(rename))
    assert ev.category == "file_rename" and ev.fields["TargetFilename"] == "C:\\Temp\\b.txt"
    assert "SourceFilename" not in ev.fields


def test_pointer_caches_are_bounded_and_count_evictions() -> None:
    n = make(limits=NormalizerLimits(file_objects=3))
    for fo in range(10):
        n.normalize(create(fo + 1, f"\\Temp\\{fo}.txt", 1))
    assert n.statistics()["file_objects"] == {"size": 3, "evictions": 7}


# --- registry --------------------------------------------------------------------------------
def open_key(event_id: int, ko: int, relative: str, base: int = 0, disposition: int | None = None,
             status: int | None = None) -> Any:
    props: dict[str, Any] = {"BaseObject": base, "KeyObject": ko, "BaseName": "", "RelativeName": relative}
    if disposition is not None:
        props["Disposition"] = disposition
    if status is not None:
        props["Status"] = status
    return record("registry", event_id, props, kinds={"BaseObject": "u64", "KeyObject": "u64"}, opcode=32)


def set_value(ko: int, name: str, value_type: int, data: bytes) -> Any:
    props = {"KeyObject": ko, "KeyName": "", "ValueName": name, "Type": value_type, "CapturedData": data}
    return record("registry", 5, props, kinds={"KeyObject": "u64"}, opcode=36)


@pytest.mark.parametrize(("value_type", "data", "details"), [
    (4, (1).to_bytes(4, "little"), "DWORD (0x00000001)"),
    (4, (0xDEADBEEF).to_bytes(4, "little"), "DWORD (0xdeadbeef)"),
    (11, (0x100000002).to_bytes(8, "little"), "QWORD (0x00000001-0x00000002)"),
    (1, "C:\\x.exe\0".encode("utf-16-le"), "C:\\x.exe"),
    (2, "%SystemRoot%\\y.dll\0".encode("utf-16-le"), "%SystemRoot%\\y.dll"),
    (7, "a\0b\0\0".encode("utf-16-le"), "a b"),
    (3, b"\x00\x01", "Binary Data"),
])
def test_values_are_rendered_as_sysmon_does(value_type: int, data: bytes, details: str) -> None:
    n = make()
    n.normalize(open_key(2, 0x10, "\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"))
    ev = one(n.normalize(set_value(0x10, "evil", value_type, data)))
    assert ev.fields["TargetObject"] == "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\evil"
    assert ev.fields["Details"] == details


def test_keys_join_their_base_and_the_default_value_is_named() -> None:
    n = make()
    n.normalize(open_key(2, 0x20, "\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001"))
    created = one(n.normalize(open_key(1, 0x21, "Software\\Classes\\ms-settings", base=0x20, disposition=1)))
    assert created.category == "registry_add"
    assert created.fields["TargetObject"] == "HKU\\S-1-5-21-1-2-3-1001\\Software\\Classes\\ms-settings"
    default = one(n.normalize(set_value(0x21, "", 1, "x\0".encode("utf-16-le"))))
    assert default.fields["TargetObject"].endswith("\\ms-settings\\(Default)")


def test_opening_an_existing_key_or_a_failed_operation_reports_nothing() -> None:
    n = make()
    assert n.normalize(open_key(1, 0x30, "\\REGISTRY\\MACHINE\\SOFTWARE\\X", disposition=2)) is None
    assert n.normalize(open_key(1, 0x31, "\\REGISTRY\\MACHINE\\SOFTWARE\\Y", disposition=1, status=5)) is None
    assert 0x31 not in n.keys


# --- dns, powershell -------------------------------------------------------------------------
def test_dns_answers_name_ipv6_and_cname_chains() -> None:
    n = make()
    results = "type: 5 edge.example.net;2001:db8::5;::ffff:192.0.2.10;"
    ev = one(n.normalize(record("dns", 3008, {"QueryName": "www.example.com", "QueryType": 28, "QueryStatus": 0,
                                              "QueryResults": results}, pid=2000)))
    assert ev.fields["QueryType"] == 28
    assert n.dns.lookup("2001:db8::5", ev.timestamp) == "www.example.com"
    assert n.dns.lookup("192.0.2.10", ev.timestamp) == "www.example.com"


def block(number: int, total: int, text: str, block_id: str = "b-1", ts: int = T0) -> Any:
    return record("powershell", 4104, {"MessageNumber": number, "MessageTotal": total, "ScriptBlockText": text,
                                       "ScriptBlockId": block_id, "Path": "C:\\s.ps1"}, opcode=15, version=1, ts=ts)


def test_script_blocks_are_reassembled_in_message_order() -> None:
    n = make()
    assert n.normalize(block(2, 3, "B")) == []
    assert n.normalize(block(1, 3, "A")) == []
    ev = one(n.normalize(block(3, 3, "C")))
    assert ev.category == "ps_script" and ev.fields["ScriptBlockText"] == "ABC"
    assert ev.fields["MessageTotal"] == 3 and "ScriptBlockIncomplete" not in ev.fields
    assert n.script_blocks.statistics() == {"pending": 0, "reassembled": 1, "incomplete": 0}


def test_script_blocks_whose_parts_stop_coming_are_emitted_incomplete() -> None:
    n = make(limits=NormalizerLimits(script_blocks=2, script_block_timeout=30.0))
    n.normalize(block(1, 2, "one", "x1"))
    n.normalize(block(1, 2, "two", "x2"))
    pushed = one(n.normalize(block(1, 2, "three", "x3")))  # over capacity: the oldest goes out as it is
    assert pushed.fields["ScriptBlockText"] == "one" and pushed.fields["ScriptBlockIncomplete"] == "true"
    start_ts = one(n.normalize(block(1, 1, "z", "x9"))).timestamp
    assert n.flush(start_ts + 10) == []
    late = n.flush(start_ts + 31)
    assert sorted(e.fields["ScriptBlockText"] for e in late) == ["three", "two"]
    assert n.flush(None) == []


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("item", [
    None, (1,), (1, "not a dict"), (1, {}), (1, {"EventHeader": {}}),
    (1, {"EventHeader": {"ProviderId": "{X}", "EventDescriptor": {"Id": "1"}, "TimeStamp": 1}}),
])
def test_malformed_records_are_counted_and_skipped(item: Any) -> None:
    n = make()
    assert n.normalize(item) is None
    assert n.rejected == 1


def test_properties_of_the_wrong_type_are_read_defensively() -> None:
    n = make()
    eid, data = start(7004, 6340, "\\Windows\\System32\\cmd.exe")
    data["ImageName"] = 12345  # a manifest version with another type
    data["CreateTime"] = object()
    assert one(n.normalize((eid, data))).fields["Image"] == ""
    eid, data = record("registry", 5, {"KeyObject": 1, "ValueName": "v", "Type": 4}, kinds={"KeyObject": "u64"})
    data["CapturedData"] = "0xZZ"
    assert one(n.normalize((eid, data))).fields["Details"] == "Binary Data"
    assert n.errors == 0


def test_a_handler_that_raises_is_counted_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    n = make()

    def broken(*_: Any) -> None:
        raise KeyError("a field this code did not expect")

    n._handlers["22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"] = broken
    assert n.normalize(start(7004, 6340, "\\Windows\\System32\\cmd.exe")) is None
    assert n.errors == 1
    assert "Microsoft-Windows-Kernel-Process event 1 (version 4) could not be normalized" in caplog.text
    # the next record of another provider is fine
    assert n.normalize(record("dns", 3006, {"QueryName": "x"})) is None and n.errors == 1


def test_unknown_providers_are_ignored() -> None:
    n = make()
    eid, data = record("process", 1, {"ProcessID": 1})
    data["EventHeader"] = dict(data["EventHeader"], ProviderId="{11111111-2222-3333-4444-555555555555}")
    assert n.normalize((eid, data)) is None and n.ignored == 1


@pytest.mark.parametrize(("kernel_name", "sysmon_name"), [
    ("\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\evil\\ImagePath",
     "HKLM\\System\\CurrentControlSet\\Services\\evil\\ImagePath"),
    ("\\REGISTRY\\MACHINE\\SOFTWARE\\Classes\\exefile\\shell\\open\\command\\(Default)",
     "HKCR\\exefile\\shell\\open\\command\\(Default)"),
    ("\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet002\\Services\\x\\Start",
     "HKLM\\SYSTEM\\ControlSet002\\Services\\x\\Start"),  # not the current set: as the kernel names it
    ("\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001_Classes\\ms-settings\\x",
     "HKU\\S-1-5-21-1-2-3-1001_Classes\\ms-settings\\x"),
])
def test_target_objects_use_sysmons_names_for_the_current_control_set_and_classes(
        kernel_name: str, sysmon_name: str) -> None:
    n = make()
    key, _, value = kernel_name.rpartition("\\")
    n.normalize(open_key(2, 0x40, key))
    ev = one(n.normalize(set_value(0x40, "" if value == "(Default)" else value, 4, b"\x01\0\0\0")))
    assert ev.fields["TargetObject"] == sysmon_name


@pytest.mark.parametrize(("user", "sid", "logon_id"), [
    ("NT AUTHORITY\\SYSTEM", None, "0x3e7"),
    ("NT AUTHORITY\\LOCAL SERVICE", None, "0x3e5"),
    ("NT AUTHORITY\\NETWORK SERVICE", None, "0x3e4"),
    (None, "S-1-5-18", "0x3e7"),  # a localized name (AUTORITE NT\Système): the SID says it
    ("lab-windows\\theo-rdp", None, None),  # an interactive logon's id is not known to ETW
])
def test_the_logon_id_of_the_well_known_service_accounts(user: str | None, sid: str | None,
                                                         logon_id: str | None) -> None:
    facts = Facts({7004: LiveProcess(user=user)}) if user else None
    n = EtwNormalizer(devices=DeviceMap(LAB_DEVICES), sids=SidResolver({"S-1-5-18": "AUTORITE NT\\Système"}.get),
                      facts=facts)
    extended = {"SID": sid} if sid else None
    ev = one(n.normalize(start(7004, 600, "\\Windows\\System32\\cmd.exe", extended=extended)))
    assert ev.fields.get("LogonId") == logon_id
