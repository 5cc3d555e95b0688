"""The real ETW recordings, in pywintrace's shape, through the sans-IO normalizer: exact fields.

Every record of ../shared/etw-recordings goes through
:func:`tests.sources.etw.pywintrace_shape.to_pywintrace` (pywintrace's callback
argument) and :class:`~edr.sources.etw.normalize.EtwNormalizer`, in the
order the lab produced them.
"""

from __future__ import annotations

from typing import Any

import pytest

from edr.event import Event
from edr.sources.etw.normalize import EtwNormalizer
from tests.sources.etw.pywintrace_shape import RECORDINGS, all_recorded, recorded

pytestmark = pytest.mark.shared

POWERSHELL = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
TEMP = "C:\\Users\\theo-rdp\\AppData\\Local\\Temp\\rustinel-fixture-e78e5e\\"


def run(n: EtwNormalizer, *names: str, ints_as_text: bool = False) -> list[Event]:
    out: list[Event] = []
    for name in names:
        out.extend(n.normalize_batch(recorded(name, ints_as_text=ints_as_text)))
    out.extend(n.flush(None))
    return out


def only(events: list[Event], category: str) -> list[dict[str, Any]]:
    return [e.fields for e in events if e.category == category]


def test_every_record_of_every_recording_is_read(normalizer: EtwNormalizer) -> None:
    records = all_recorded()
    assert len(records) == 84
    normalizer.normalize_batch(records)
    assert normalizer.rejected == 0 and normalizer.errors == 0 and normalizer.ignored == 0
    assert sum(normalizer.records.values()) == 84


@pytest.mark.parametrize("ints_as_text", [False, True])
def test_process_recording(normalizer: EtwNormalizer, ints_as_text: bool) -> None:
    events = run(normalizer, "image_load.json", "process_lifecycle.json", ints_as_text=ints_as_text)
    assert [e.category for e in events] == ["image_load", "process_creation", "process_termination"]
    assert only(events, "process_creation") == [{
        "ProcessId": 7004, "Image": "C:\\Windows\\System32\\cmd.exe", "IntegrityLevel": "High",
        "ParentProcessId": 6340, "ParentImage": POWERSHELL,
    }]
    # the stop event names only cmd.exe: the image comes from the start
    assert only(events, "process_termination") == [{"ProcessId": 7004, "Image": "C:\\Windows\\System32\\cmd.exe"}]
    assert events[1].timestamp == pytest.approx(1791532700.1409789)
    assert all(e.product == "windows" and e.service is None for e in events)


def test_image_load_recording_is_event_5_opcode_0(normalizer: EtwNormalizer) -> None:
    (rec,) = recorded("image_load.json")
    assert rec[0] == 5 and rec[1]["EventHeader"]["EventDescriptor"]["Opcode"] == 0
    events = run(normalizer, "image_load.json")
    assert only(events, "image_load") == [{"ImageLoaded": POWERSHELL, "ProcessId": 6340, "Image": POWERSHELL}]


@pytest.mark.parametrize("ints_as_text", [False, True])
def test_network_recording_named_by_the_dns_recording(normalizer: EtwNormalizer, ints_as_text: bool) -> None:
    events = run(normalizer, "dns_query.json", "network_connect.json", ints_as_text=ints_as_text)
    assert only(events, "network_connection") == [{
        "Protocol": "tcp", "Initiated": "true",
        "SourceIp": "192.168.1.28", "SourceIsIpv6": "false", "SourcePort": 49939,
        "DestinationIp": "20.190.159.23", "DestinationIsIpv6": "false", "DestinationPort": 443,
        "DestinationHostname": "login.live.com",
        "ProcessId": 4, "Image": "System", "User": "NT AUTHORITY\\SYSTEM",
    }]


def test_network_recording_alone_has_no_hostname(normalizer: EtwNormalizer) -> None:
    (fields,) = only(run(normalizer, "network_connect.json"), "network_connection")
    assert "DestinationHostname" not in fields and fields["DestinationIp"] == "20.190.159.23"


def test_dns_recording(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, "dns_query.json")
    assert normalizer.counts["dns_queries_started"] == 2
    first, second = only(events, "dns_query")
    assert first == {"QueryName": "login.live.com", "QueryStatus": "87", "QueryResults": "", "ProcessId": 1640}
    assert second["QueryStatus"] == "0" and second["QueryResults"].startswith("type: 5 login.msa.msidentity.com;")
    # every answered address names the queried host
    for address in ("20.190.159.23", "20.190.159.68", "40.126.31.73", "20.190.159.73", "40.126.31.129",
                    "20.190.159.75", "20.190.159.0", "20.190.159.4"):
        assert normalizer.dns.lookup(address, events[-1].timestamp) == "login.live.com"
    assert len(normalizer.dns) == 8


def test_file_recording(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, "file_lifecycle.json")
    common = {"ProcessId": 6340}
    assert [(e.category, e.fields) for e in events] == [
        # PowerShell's Set-Content opens fixture.txt open-if twice and writes each time
        ("file_event", {"TargetFilename": TEMP + "fixture.txt", **common}),
        ("file_event", {"TargetFilename": TEMP + "fixture.txt", **common}),
        # setting the creation time: SetInformation(FileBasicInformation)
        ("file_change", {"TargetFilename": TEMP + "fixture.txt", **common}),
        ("file_rename", {"TargetFilename": TEMP + "fixture-renamed.txt", "SourceFilename": TEMP + "fixture.txt",
                         **common}),
        ("file_delete", {"TargetFilename": TEMP + "fixture-renamed.txt", **common}),
    ]


def test_file_events_name_the_process_once_it_is_known(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, "image_load.json", "file_lifecycle.json")
    assert {e.fields.get("Image") for e in events} == {POWERSHELL}


def test_registry_recording(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, "image_load.json", "registry_lifecycle.json")[1:]
    # The recording starts after PowerShell opened its HKEY_CURRENT_USER handle (BaseObject ...358432)
    # and, for the last open, its HKCU\Software handle (...572544): those names cannot be known, and
    # the part above the relative name is written "?".
    ps = {"ProcessId": 6340, "Image": POWERSHELL}
    assert [(e.category, e.fields) for e in events] == [
        ("registry_add", {"EventType": "CreateKey", "TargetObject": "?\\Software\\RustinelFixture", **ps}),
        ("registry_set", {"EventType": "SetValue", "TargetObject": "?\\Software\\RustinelFixture\\Run",
                          "Details": "C:\\Windows\\System32\\cmd.exe /c fixture", **ps}),
        ("registry_set", {"EventType": "SetValue", "TargetObject": "?\\Software\\RustinelFixture\\Flag",
                          "Details": "DWORD (0x00000001)", **ps}),
        ("registry_delete", {"EventType": "DeleteValue", "TargetObject": "?\\Software\\RustinelFixture\\Run", **ps}),
        ("registry_delete", {"EventType": "DeleteKey", "TargetObject": "?\\RustinelFixture", **ps}),
    ]
    # the failed first OpenKey (KeyObject 0) left nothing behind; 4 opens + 1 create named, 1 deleted
    assert len(normalizer.keys) == 4
    assert normalizer.counts["registry_base_unknown"] == 6


def test_registry_names_resolve_through_the_key_cache_when_the_base_was_seen(normalizer: EtwNormalizer) -> None:
    """The same records, preceded by the open of the HKCU handle they use: full Sysmon names."""
    records = recorded("registry_lifecycle.json")
    hkcu = records[1][1]["BaseObject"]
    opened = _open_key_record(records[1], hkcu, "\\REGISTRY\\USER\\S-1-5-21-1-2-3-1001")
    events = normalizer.normalize_batch([opened, *records])
    targets = [e.fields["TargetObject"] for e in events]
    assert targets[:4] == [
        "HKU\\S-1-5-21-1-2-3-1001\\Software\\RustinelFixture",
        "HKU\\S-1-5-21-1-2-3-1001\\Software\\RustinelFixture\\Run",
        "HKU\\S-1-5-21-1-2-3-1001\\Software\\RustinelFixture\\Flag",
        "HKU\\S-1-5-21-1-2-3-1001\\Software\\RustinelFixture\\Run",
    ]
    assert targets[4] == "?\\RustinelFixture"  # its base, HKCU\Software, is still one never seen opened


def _open_key_record(template: tuple[int, dict[str, Any]], key_object: str, name: str) -> tuple[int, dict[str, Any]]:
    data = dict(template[1])
    data["EventHeader"] = dict(data["EventHeader"], EventDescriptor=dict(data["EventHeader"]["EventDescriptor"],
                                                                         Id=2, Opcode=33))
    data.update(BaseObject="0x0", KeyObject=key_object, RelativeName=name, BaseName="")
    data.pop("Disposition", None)
    return 2, data


def test_powershell_recordings(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, "powershell_module_logging.json", "powershell_script_block.json")
    module, script = events
    assert (module.category, module.service) == ("ps_module", "powershell")
    assert module.fields["EventID"] == 4103
    assert "Nom de commande = New-Item" in module.fields["ContextInfo"]  # the French labels, intact
    assert "« Directory »" in module.fields["Payload"]
    assert (script.category, script.service) == ("ps_script", "powershell")
    assert script.fields["ScriptBlockText"] == "Get-Process | Select-Object -First 1"
    assert script.fields["ScriptBlockId"] == "7d1f6d2c-0f64-4f1e-9b5a-3e2f1c0a9b11"
    assert script.fields["Path"] == "C:\\Users\\lab\\fixture.ps1"


def test_task_and_wmi_recordings(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, "task_registered.json", "wmi_activity.json")
    task = events[0]
    assert (task.category, task.service) == ("winlog", "taskscheduler")
    assert task.fields == {"TaskName": "\\RustinelFixtureTask", "UserContext": "lab-windows\\theo-rdp",
                           "EventID": 106, "Channel": "Microsoft-Windows-TaskScheduler/Operational",
                           "Provider_Name": "Microsoft-Windows-TaskScheduler"}
    wmi = events[1:]
    assert [(e.category, e.service, e.fields["EventID"]) for e in wmi] == [
        ("winlog", "wmi", 11), ("winlog", "wmi", 11), ("winlog", "wmi", 5857), ("winlog", "wmi", 12),
        ("winlog", "wmi", 17)]
    assert wmi[1].fields["Operation"].endswith("select * from Win32_Process where Name='explorer.exe'")
    assert wmi[2].fields["Code"] == "0x0" and wmi[2].fields["ProviderName"] == "CIMWin32"


def test_recordings_in_order_give_24_events(normalizer: EtwNormalizer) -> None:
    events = run(normalizer, *RECORDINGS)
    assert len(events) == 24
    assert [e.seq for e in events] == list(range(1, 25))
