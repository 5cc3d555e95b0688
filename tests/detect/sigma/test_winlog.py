"""Windows record normalization: categories, services, fields, origin, malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edr.detect.sigma.logsources import WINDOWS_EVENTLOG_FED
from edr.sources.replay.winlog import iter_evtx_json, parse_system_time, winlog_to_event
from tests.detect.sigma.conftest import RuleLoader, rule


def record(channel: str, event_id: Any, data: dict[str, Any] | None = None,
           user_data: dict[str, Any] | None = None, provider: str = "P") -> dict[str, Any]:
    body: dict[str, Any] = {
        "System": {
            "Provider": {"#attributes": {"Name": provider}},
            "EventID": event_id,
            "TimeCreated": {"#attributes": {"SystemTime": "2024-01-02T03:04:05.123456Z"}},
            "EventRecordID": 77,
            "Channel": channel,
            "Computer": "host1",
        }
    }
    if data is not None:
        body["EventData"] = data
    if user_data is not None:
        body["UserData"] = user_data
    return {"Event": body, "#record": 5}


SYSMON = "Microsoft-Windows-Sysmon/Operational"


@pytest.mark.parametrize(("event_id", "data", "category"), [
    (1, {"Image": "a"}, "process_creation"),
    (3, {}, "network_connection"),
    (5, {}, "process_termination"),
    (6, {}, "driver_load"),
    (7, {}, "image_load"),
    (8, {}, "create_remote_thread"),
    (9, {}, "raw_access_thread"),
    (10, {}, "process_access"),
    (11, {}, "file_event"),
    (12, {"EventType": "CreateKey"}, "registry_add"),
    (12, {"EventType": "DeleteValue"}, "registry_delete"),
    (13, {"EventType": "SetValue"}, "registry_set"),
    (14, {"EventType": "RenameKey"}, "registry_rename"),
    (15, {}, "create_stream_hash"),
    (17, {}, "pipe_created"),
    (18, {}, "pipe_created"),
    (19, {}, "wmi_event"),
    (21, {}, "wmi_event"),
    (22, {}, "dns_query"),
    (23, {}, "file_delete"),
    (26, {}, "file_delete"),
    (25, {}, "process_tampering"),
    (16, {}, "sysmon_status"),
])
def test_sysmon_categories(event_id: int, data: dict[str, Any], category: str) -> None:
    event = winlog_to_event(record(SYSMON, event_id, data), "f.evtx")
    assert event is not None
    assert (event.category, event.service, event.product) == (category, "sysmon", "windows")


@pytest.mark.parametrize(("channel", "event_id", "category", "service"), [
    ("Security", 4624, "winlog", "security"),
    ("System", 7045, "winlog", "system"),
    ("Application", 1, "winlog", "application"),
    ("Microsoft-Windows-PowerShell/Operational", 4104, "ps_script", "powershell"),
    ("Microsoft-Windows-PowerShell/Operational", 4103, "ps_module", "powershell"),
    ("Microsoft-Windows-PowerShell/Operational", 4100, "winlog", "powershell"),
    ("Windows PowerShell", 400, "ps_classic_start", "powershell-classic"),
    ("Microsoft-Windows-TaskScheduler/Operational", 106, "winlog", "taskscheduler"),
    ("Microsoft-Windows-WMI-Activity/Operational", 5861, "winlog", "wmi"),
    ("Microsoft-Windows-Windows Defender/Operational", 1116, "winlog", "windefend"),
    ("Some-Unknown/Channel", 1, "winlog", None),
])
def test_channel_routing(channel: str, event_id: int, category: str, service: str | None) -> None:
    event = winlog_to_event(record(channel, event_id, {}), "f.evtx")
    assert event is not None and (event.category, event.service) == (category, service)


def test_fields_origin_and_time() -> None:
    event = winlog_to_event(record("Security", {"#text": 4624, "#attributes": {"Qualifiers": 0}},
                                   {"TargetUserName": "bob", "LogonType": 3, "Empty": None}), "s.evtx",
                            seq=9)
    assert event is not None
    assert event.fields["TargetUserName"] == "bob" and event.fields["LogonType"] == 3
    assert "Empty" not in event.fields
    assert event.fields["EventID"] == 4624 and event.fields["Channel"] == "Security"
    assert event.fields["Provider_Name"] == "P" and event.fields["Computer"] == "host1"
    assert event.timestamp == pytest.approx(parse_system_time("2024-01-02T03:04:05.123456Z"))
    assert event.timestamp == pytest.approx(1704164645.123456)
    assert event.seq == 9
    assert event.origin == {"log.file.path": "s.evtx", "log.record": 5, "winlog.channel": "Security",
                            "winlog.event_id": 4624, "winlog.record_id": 77,
                            "winlog.computer_name": "host1"}


def test_unnamed_data_and_user_data() -> None:
    classic = winlog_to_event(record("Windows PowerShell", 400,
                                     {"Data": {"#text": ["Available", "None", "HostName=ConsoleHost"]}}),
                              "p.evtx")
    assert classic is not None and classic.fields["Data"] == ["Available", "None", "HostName=ConsoleHost"]
    cleared = winlog_to_event(record("Security", 1102, user_data={
        "LogFileCleared": {"#attributes": {"xmlns": "x"}, "SubjectUserName": "admin"}}), "s.evtx")
    assert cleared is not None and cleared.fields["SubjectUserName"] == "admin"


@pytest.mark.parametrize("bad", [
    {}, {"Event": None}, {"Event": {"System": "x"}},
    {"Event": {"System": {"EventID": "abc", "TimeCreated": {"#attributes": {"SystemTime": "x"}}}}},
    {"Event": {"System": {"EventID": 1}}},
    {"Event": {"System": {"EventID": 1, "TimeCreated": {"#attributes": {"SystemTime": "not a time"}}}}},
])
def test_malformed_records_return_none(bad: dict[str, Any]) -> None:
    assert winlog_to_event(bad, "bad.evtx") is None


def test_evtx_json_reader_handles_concatenated_objects(tmp_path: Path) -> None:
    a = record(SYSMON, 1, {"Image": "a"})
    b = record(SYSMON, 1, {"Image": "b"})
    for r in (a, b):
        r.pop("#record")
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(a, indent=2) + "\nRecord 2\n" + json.dumps(b) + "\n{broken")
    records = list(iter_evtx_json(path))
    assert [r["Event"]["EventData"]["Image"] for r in records] == ["a", "b"]
    assert [r["#record"] for r in records] == [1, 2]


# --- Security audit events routed as Sysmon events (edr.sources.replay.winlog_audit) ---------------
# The records follow the EventData of Microsoft's documented events; names and values are made up.

def process_creation_v2(**changes: Any) -> dict[str, Any]:
    """EventData of a 4688 version 2 (Windows 10): creator, new process, target account, label."""
    data: dict[str, Any] = {
        "SubjectUserSid": "S-1-5-21-1377283216-344919071-3415362939-1104", "SubjectUserName": "dadmin",
        "SubjectDomainName": "CONTOSO", "SubjectLogonId": "0x4a5af0", "NewProcessId": "0x2bc",
        "NewProcessName": "C:\\Windows\\System32\\rundll32.exe", "TokenElevationType": "%%1938",
        "ProcessId": "0xe74", "CommandLine": "rundll32.exe shell32.dll,Control_RunDLL",
        "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
        "ParentProcessName": "C:\\Windows\\explorer.exe", "MandatoryLabel": "S-1-16-8192",
    }
    data.update(changes)
    return data


def security_event(event_id: int, data: dict[str, Any]) -> Any:
    event = winlog_to_event(record("Security", event_id, data,
                                   provider="Microsoft-Windows-Security-Auditing"), "s.evtx")
    assert event is not None
    return event


def test_4688_is_a_process_creation_with_sysmon_fields() -> None:
    event = security_event(4688, process_creation_v2())
    assert (event.category, event.service, event.product) == ("process_creation", "security", "windows")
    f = event.fields
    assert f["Image"] == "C:\\Windows\\System32\\rundll32.exe"
    assert f["ParentImage"] == "C:\\Windows\\explorer.exe"
    assert f["CommandLine"] == "rundll32.exe shell32.dll,Control_RunDLL"
    # Sysmon's pids are integers; 4688's ProcessId is the creator's
    assert (f["ProcessId"], f["ParentProcessId"]) == (0x2BC, 0xE74)
    assert f["User"] == "CONTOSO\\dadmin" and f["LogonId"] == "0x4a5af0"
    assert f["IntegrityLevel"] == "Medium"
    # the record stays whole for service: security rules
    assert f["NewProcessName"] == "C:\\Windows\\System32\\rundll32.exe" and f["NewProcessId"] == "0x2bc"
    assert f["MandatoryLabel"] == "S-1-16-8192" and f["SubjectUserName"] == "dadmin"
    # what 4688 does not record is absent, never made up
    for absent in ("OriginalFileName", "Hashes", "CurrentDirectory", "ParentCommandLine", "ParentUser",
                   "ProcessGuid", "ParentProcessGuid", "Description", "Company", "Product"):
        assert absent not in f


@pytest.mark.parametrize(("changes", "user", "logon"), [
    # a service started by services.exe: the subject is the machine account, Sysmon says SYSTEM
    ({"SubjectUserSid": "S-1-5-18", "SubjectUserName": "HOST1$", "SubjectDomainName": "CONTOSO",
      "SubjectLogonId": "0x3e7"}, "NT AUTHORITY\\SYSTEM", "0x3e7"),
    ({"SubjectUserSid": "S-1-5-20", "SubjectUserName": "HOST1$", "SubjectDomainName": "CONTOSO",
      "SubjectLogonId": "0x3e4"}, "NT AUTHORITY\\NETWORK SERVICE", "0x3e4"),
    # CreateProcessAsUser: the new process runs as the target account, with its logon session
    ({"SubjectUserSid": "S-1-5-18", "TargetUserSid": "S-1-0-0", "TargetUserName": "alice",
      "TargetDomainName": "CONTOSO", "TargetLogonId": "0x16e3db3"}, "CONTOSO\\alice", "0x16e3db3"),
    ({"TargetUserSid": "S-1-5-19", "TargetUserName": "LOCAL SERVICE", "TargetDomainName": "NT AUTHORITY",
      "TargetLogonId": "0x3e5"}, "NT AUTHORITY\\LOCAL SERVICE", "0x3e5"),
    ({"TargetUserSid": "S-1-5-18", "TargetUserName": "HOST1$", "TargetDomainName": "WORKGROUP",
      "TargetLogonId": "0x3e7"}, "NT AUTHORITY\\SYSTEM", "0x3e7"),
])
def test_4688_user_and_logon_are_the_new_process_account(changes: dict[str, Any], user: str, logon: str) -> None:
    f = security_event(4688, process_creation_v2(**changes)).fields
    assert (f["User"], f["LogonId"]) == (user, logon)


@pytest.mark.parametrize(("label", "elevation", "level"), [
    ("S-1-16-12288", "%%1936", "High"),
    ("S-1-16-16384", "%%1936", "System"),
    ("S-1-16-4096", "%%1938", "Low"),
    ("S-1-16-8448", "%%1938", "S-1-16-8448"),  # no Sysmon text known: the SID, which rules may name
    (None, "%%1937", "High"),  # version 1: an elevated token
    (None, "%%1936", None),    # version 1, default token: SYSTEM, an administrator without UAC, a user...
    (None, "%%1938", None),
])
def test_4688_integrity_level(label: str | None, elevation: str, level: str | None) -> None:
    data = process_creation_v2(TokenElevationType=elevation)
    if label is None:  # version 1 records have no label, target account or parent name
        for name in ("MandatoryLabel", "TargetUserSid", "TargetUserName", "TargetDomainName", "TargetLogonId",
                     "ParentProcessName"):
            del data[name]
    else:
        data["MandatoryLabel"] = label
    f = security_event(4688, data).fields
    assert f.get("IntegrityLevel") == level
    if label is None:
        assert "ParentImage" not in f and f["User"] == "CONTOSO\\dadmin"


def test_4688_paths_on_a_share_are_written_as_sysmon_writes_them() -> None:
    f = security_event(4688, process_creation_v2(
        NewProcessName="\\Device\\Mup\\fileserver\\tools\\x.exe",
        ParentProcessName="\\Device\\Mup\\fileserver\\tools\\launcher.exe")).fields
    assert f["Image"] == "\\\\fileserver\\tools\\x.exe"
    assert f["ParentImage"] == "\\\\fileserver\\tools\\launcher.exe"
    assert f["NewProcessName"] == "\\Device\\Mup\\fileserver\\tools\\x.exe"


def test_4688_with_unreadable_pids_has_no_process_id_of_the_wrong_process() -> None:
    f = security_event(4688, process_creation_v2(NewProcessId="", ProcessId="0xe74")).fields
    assert "ProcessId" not in f and f["ParentProcessId"] == 0xE74


def registry_value(operation: str, **changes: Any) -> dict[str, Any]:
    """EventData of a 4657 as Microsoft documents it."""
    data: dict[str, Any] = {
        "SubjectUserSid": "S-1-5-21-1377283216-344919071-3415362939-1104", "SubjectUserName": "dadmin",
        "SubjectDomainName": "CONTOSO", "SubjectLogonId": "0x364eb",
        "ObjectName": "\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
        "ObjectValueName": "Updater", "HandleId": "0x54", "OperationType": operation,
        "OldValueType": "%%1873", "NewValueType": "%%1873", "NewValue": "C:\\Users\\Public\\u.exe",
        "ProcessId": "0xce4", "ProcessName": "C:\\Windows\\regedit.exe",
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(("operation", "category", "event_type"), [
    ("%%1904", "registry_set", "SetValue"),   # a new value: Sysmon 13 too
    ("%%1905", "registry_set", "SetValue"),
    ("%%1906", "registry_delete", "DeleteValue"),
])
def test_4657_is_a_registry_event_with_sysmon_fields(operation: str, category: str, event_type: str) -> None:
    event = security_event(4657, registry_value(operation))
    assert (event.category, event.service) == (category, "security")
    f = event.fields
    assert f["TargetObject"] == "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater"
    assert f["EventType"] == event_type
    assert f["Image"] == "C:\\Windows\\regedit.exe" and f["ProcessId"] == 0xCE4
    assert f["User"] == "CONTOSO\\dadmin"
    assert f.get("Details") == ("C:\\Users\\Public\\u.exe" if category == "registry_set" else None)
    assert f["ObjectName"] == "\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"


@pytest.mark.parametrize(("key", "value", "target"), [
    ("\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\evil", "ImagePath",
     "HKLM\\System\\CurrentControlSet\\Services\\evil\\ImagePath"),
    ("\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet002\\Services\\evil", "ImagePath",
     "HKLM\\SYSTEM\\ControlSet002\\Services\\evil\\ImagePath"),  # not the current set: as it is
    ("\\REGISTRY\\MACHINE\\SOFTWARE\\Classes\\exefile\\shell\\open\\command", "",
     "HKCR\\exefile\\shell\\open\\command\\(Default)"),
    ("\\REGISTRY\\MACHINE\\SOFTWARE\\ClassesX", "v", "HKLM\\SOFTWARE\\ClassesX\\v"),
    ("\\REGISTRY\\USER\\S-1-5-21-1-2-3-1104\\Software\\Microsoft\\Windows\\CurrentVersion\\Run", "x",
     "HKU\\S-1-5-21-1-2-3-1104\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\x"),
    ("\\REGISTRY\\USER\\S-1-5-21-1-2-3-1104_Classes\\ms-settings\\shell\\open\\command", "DelegateExecute",
     "HKU\\S-1-5-21-1-2-3-1104_Classes\\ms-settings\\shell\\open\\command\\DelegateExecute"),
])
def test_4657_target_object_is_the_key_as_sysmon_names_it_and_the_value(key: str, value: str, target: str) -> None:
    f = security_event(4657, registry_value("%%1905", ObjectName=key, ObjectValueName=value)).fields
    assert f["TargetObject"] == target


def test_4657_without_a_known_operation_stays_a_security_event() -> None:
    event = security_event(4657, registry_value("%%9999"))
    assert (event.category, event.service) == ("winlog", "security")
    assert "TargetObject" not in event.fields and "Image" not in event.fields


def connection(**changes: Any) -> dict[str, Any]:
    """EventData of a 5156 (Windows Filtering Platform permitted a connection), typed as the parser types it."""
    data: dict[str, Any] = {
        "ProcessID": 3324, "Application": "\\device\\harddiskvolume2\\users\\bob\\desktop\\tool.exe",
        "Direction": "%%14593", "SourceAddress": "10.0.0.5", "SourcePort": "49271", "DestAddress": "10.0.0.9",
        "DestPort": "3389", "Protocol": 6, "FilterRTID": 0, "LayerName": "%%14611", "LayerRTID": 48,
        "RemoteUserID": "S-1-0-0", "RemoteMachineID": "S-1-0-0",
    }
    data.update(changes)
    return data


def test_5156_is_a_network_connection_with_sysmon_fields() -> None:
    event = security_event(5156, connection())
    assert (event.category, event.service) == ("network_connection", "security")
    f = event.fields
    assert f["Image"] == "C:\\users\\bob\\desktop\\tool.exe"  # the volume's letter is not recorded: C:
    assert f["Application"] == "\\device\\harddiskvolume2\\users\\bob\\desktop\\tool.exe"
    assert (f["ProcessId"], f["Protocol"], f["Initiated"]) == (3324, "tcp", True)
    assert (f["SourceIp"], f["SourcePort"], f["DestinationIp"], f["DestinationPort"]) == \
        ("10.0.0.5", 49271, "10.0.0.9", 3389)
    assert (f["SourceIsIpv6"], f["DestinationIsIpv6"]) == (False, False)


def test_5156_inbound_keeps_the_local_side_as_source() -> None:
    # as the filtering platform (and Sysmon until 2019) writes it: SourcePort is the record's own name
    f = security_event(5156, connection(
        ProcessID=4, Application="System", Direction="%%14592", SourceAddress="fe80::1", SourcePort="3389",
        DestAddress="10.0.0.7", DestPort="49271", Protocol=17)).fields
    assert (f["Image"], f["Initiated"], f["Protocol"]) == ("System", False, "udp")
    assert (f["SourceIp"], f["SourcePort"], f["DestinationIp"], f["DestinationPort"]) == \
        ("fe80::1", 3389, "10.0.0.7", 49271)
    assert (f["SourceIsIpv6"], f["DestinationIsIpv6"]) == (True, False)


def object_access(object_type: str, name: str) -> dict[str, Any]:
    """EventData of a 4663 (an attempt was made to access an object)."""
    return {
        "SubjectUserSid": "S-1-5-21-1377283216-344919071-3415362939-1000", "SubjectUserName": "bob",
        "SubjectDomainName": "PC7", "SubjectLogonId": "0xffa8", "ObjectServer": "Security",
        "ObjectType": object_type, "ObjectName": name, "HandleId": "0x50", "AccessList": "%%4416\r\n\t\t\t\t",
        "AccessMask": "0x1", "ProcessId": "0x134c", "ProcessName": "C:\\Users\\bob\\x.exe",
    }


def test_4663_on_a_file_is_a_file_access() -> None:
    name = "C:\\Users\\bob\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\Login Data"
    event = security_event(4663, object_access("File", name))
    assert (event.category, event.service) == ("file_access", "security")
    f = event.fields
    assert (f["FileName"], f["Image"], f["ProcessId"], f["User"]) == (name, "C:\\Users\\bob\\x.exe", 0x134C,
                                                                      "PC7\\bob")


@pytest.mark.parametrize("object_type", ["Key", "Process", "SAM_DOMAIN"])
def test_4663_on_other_objects_stays_a_security_event(object_type: str) -> None:
    event = security_event(4663, object_access(object_type, "\\REGISTRY\\MACHINE\\SAM"))
    assert (event.category, event.service) == ("winlog", "security")
    assert "FileName" not in event.fields and event.fields["ProcessId"] == "0x134c"


@pytest.mark.parametrize("event_id", [4624, 4656, 4673, 5145, 5158])
def test_other_security_events_are_not_routed(event_id: int) -> None:
    event = security_event(event_id, process_creation_v2())
    assert (event.category, event.service) == ("winlog", "security")
    assert "Image" not in event.fields and event.fields["ProcessId"] == "0xe74"


def test_sysmon_and_other_channels_with_4688_ids_are_not_routed() -> None:
    for channel in (SYSMON, "System", "Application"):
        event = winlog_to_event(record(channel, 4688, process_creation_v2()), "f.evtx")
        assert event is not None and event.category != "process_creation" and "Image" not in event.fields


def test_names_with_spaces_are_also_given_without_them() -> None:
    event = winlog_to_event(record("Microsoft-Windows-Windows Defender/Operational", 5007, {
        "Product Name": "Microsoft Defender Antivirus", "Product Version": "4.18.23090.2008",
        "Old Value": "", "New Value": "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Exclusions\\Paths\\C:\\x = 0x0",
    }), "d.evtx")
    assert event is not None
    f = event.fields
    value = "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Exclusions\\Paths\\C:\\x = 0x0"
    assert f["NewValue"] == f["New_Value"] == f["New Value"] == value
    assert f["ProductName"] == f["Product_Name"] == "Microsoft Defender Antivirus"
    assert f["OldValue"] == f["Old_Value"] == f["Old Value"] == ""


@pytest.mark.parametrize("order", ["spaced first", "plain first"])
def test_a_recorded_name_keeps_its_value_when_a_spaced_one_would_take_it(order: str) -> None:
    items = [("Product Name", "spaced"), ("ProductName", "plain")]
    if order == "plain first":
        items.reverse()
    event = winlog_to_event(record("Microsoft-Windows-Windows Defender/Operational", 1000, dict(items)), "d.evtx")
    assert event is not None
    assert (event.fields["ProductName"], event.fields["Product Name"], event.fields["Product_Name"]) == \
        ("plain", "spaced", "spaced")


SECURITY_4688_RULE = """
title: Security 4688
status: test
level: high
logsource:
    product: windows
    service: security
detection:
    sel:
        EventID: 4688
        NewProcessName|endswith: '\\rundll32.exe'
    condition: sel
"""
WINDOWS_RULE = """
title: Any Windows
status: test
level: high
logsource:
    product: windows
detection:
    keywords:
        - 'Control_RunDLL'
    condition: keywords
"""


def test_a_routed_record_reaches_each_rule_once(load_rules: RuleLoader) -> None:
    # the record's one route (windows, process_creation, security): the process_creation rules, the
    # security rules and the product-only rules, each evaluated once; never Sysmon's own rules
    process = rule("sel:\n  Image|endswith: '\\rundll32.exe'\ncondition: sel", title="Process Creation")
    sysmon = rule("sel:\n  Image|endswith: '\\rundll32.exe'\ncondition: sel", title="Sysmon Only",
                  extra="").replace("category: process_creation", "category: process_creation\n    service: sysmon")
    engine, report = load_rules(process, sysmon, SECURITY_4688_RULE, WINDOWS_RULE, fed=WINDOWS_EVENTLOG_FED)
    assert report.loaded == 4
    alerts = engine.match(security_event(4688, process_creation_v2()))
    assert sorted(a.rule_name for a in alerts) == ["Any Windows", "Process Creation", "Security 4688"]


def test_file_access_rules_are_fed_by_windows_event_logs(load_rules: RuleLoader) -> None:
    access = rule("sel:\n  FileName|contains: '\\Login Data'\ncondition: sel", title="Browser Credentials",
                  category="file_access")
    engine, report = load_rules(access, fed=WINDOWS_EVENTLOG_FED)
    assert (report.loaded, report.inert) == (1, 0)  # 'edr rules check' counts it loaded
    event = security_event(4663, object_access("File", "C:\\Users\\bob\\AppData\\Local\\Google\\Chrome"
                                                        "\\User Data\\Default\\Login Data"))
    assert [a.rule_name for a in engine.match(event)] == ["Browser Credentials"]
