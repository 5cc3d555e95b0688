"""Windows record normalization: categories, services, fields, origin, malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edr.sources.replay.winlog import iter_evtx_json, parse_system_time, winlog_to_event


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
