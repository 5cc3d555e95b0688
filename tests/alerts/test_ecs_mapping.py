"""The ECS 9 mapping of alerts (issue #15, point 3): every key ECS-typed, Winlogbeat, compatibility or edr.*."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edr.alerts.ecs import HostInfo, iso_time, to_ecs
from edr.alerts.ecs_check import check_document, load_ecs_fields
from edr.alerts.raw_fields import raw_name, raw_value
from edr.detect.alert import Alert
from edr.event import Event
from tests.alerts.conftest import clean_env
from tests.conftest import shared_path

HOST = HostInfo("web-1", "linux")
NOW = 1_764_000_000.5  # the writer's clock, injected
WHEN = 1_763_000_000.25  # when the activity happened


def windows_event(**fields: Any) -> Event:
    record = {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami", "ProcessId": "4242",
              "EventID": 1, "Level": 4, **fields}
    origin = {"log.file.path": "C:\\logs\\a.evtx", "log.record": 7,
              "winlog.channel": "Microsoft-Windows-Sysmon/Operational", "winlog.event_id": 1,
              "winlog.record_id": 6577, "winlog.computer_name": "IEWIN7"}
    return Event("process_creation", "windows", record, WHEN, seq=3, service="sysmon", origin=origin)


def sigma_alert(event: Event | None, **ecs: Any) -> Alert:
    meta = {"rule.reference": ["https://a.example/1", "https://b.example/2"], "rule.author": "Someone",
            "threat.framework": "MITRE ATT&CK", "threat.technique.id": ["T1033"]}
    return Alert("R-1", "Whoami", "high", "sigma", event, tags=("attack.discovery",), ecs={**meta, **ecs})


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    assert check_document(doc) == []
    return doc


def test_ecs_version_is_the_release_of_the_field_list_checked_against() -> None:
    full = load_ecs_fields(shared_path("ecs", "ecs-9.4.0-fields.json"))
    doc = to_ecs(sigma_alert(windows_event()), HOST, created=NOW)
    assert doc["ecs.version"] == full.version == "9.4.0"
    assert check_document(doc, full) == []


def test_created_is_the_writers_clock_and_timestamp_the_activity() -> None:
    doc = valid(to_ecs(sigma_alert(windows_event()), HOST, created=NOW))
    assert doc["@timestamp"] == iso_time(WHEN) == "2025-11-13T02:13:20.250Z"
    assert doc["event.created"] == iso_time(NOW) == "2025-11-24T16:00:00.500Z"
    # a correlation's own time is the activity's time
    corr = Alert("C-1", "corr", "high", "sigma", windows_event(), timestamp=WHEN + 60)
    doc = valid(to_ecs(corr, HOST, created=NOW))
    assert (doc["@timestamp"], doc["event.created"]) == (iso_time(WHEN + 60), iso_time(NOW))


def test_windows_provenance_is_winlogbeat_and_edr() -> None:
    doc = valid(to_ecs(sigma_alert(windows_event()), HOST, created=NOW))
    assert "log.record" not in doc
    assert doc["edr.log.record"] == 7  # the record's position in the file
    assert (doc["winlog.channel"], doc["winlog.event_id"], doc["winlog.record_id"], doc["winlog.computer_name"]) == (
        "Microsoft-Windows-Sysmon/Operational", "1", "6577", "IEWIN7")  # Winlogbeat: keyword
    assert doc["event.code"] == "1" and doc["log.file.path"] == "C:\\logs\\a.evtx"
    assert (doc["edr.logsource.product"], doc["edr.logsource.category"], doc["edr.logsource.service"]) == (
        "windows", "process_creation", "sysmon")
    assert doc["process.pid"] == 4242 and doc["process.name"] == "cmd.exe"
    assert doc["edr.event"]["EventID"] == "1" and doc["edr.event"]["Level"] == "4"


def test_rule_reference_is_one_keyword_and_author_a_list() -> None:
    doc = valid(to_ecs(sigma_alert(windows_event()), HOST, created=NOW))
    assert doc["rule.reference"] == "https://a.example/1"
    assert doc["edr.rule.references"] == ["https://a.example/1", "https://b.example/2"]
    assert doc["rule.author"] == ["Someone"]
    assert (doc["rule.severity"], doc["rule.engine"]) == ("high", "sigma")  # the seed's compatibility keys
    assert doc["threat.technique.id"] == ["T1033"] and doc["tags"] == ["attack.discovery"]


def test_hashes_go_to_the_object_they_describe() -> None:
    hashes = "SHA1=AA,MD5=BB,SHA256=CC,IMPHASH=DD"
    doc = valid(to_ecs(sigma_alert(windows_event(Hashes=hashes)), HOST, created=NOW))
    assert (doc["process.hash.sha1"], doc["process.hash.md5"], doc["process.hash.sha256"]) == ("aa", "bb", "cc")
    assert doc["process.pe.imphash"] == "dd" and "process.hash.imphash" not in doc
    assert "Hashes" not in doc.get("edr.event", {})  # all of it has an ECS home
    load = Event("image_load", "windows", {"ImageLoaded": "C:\\x.dll", "Hashes": hashes}, WHEN)
    doc = valid(to_ecs(sigma_alert(load), HOST, created=NOW))
    assert (doc["dll.path"], doc["dll.hash.md5"], doc["dll.pe.imphash"]) == ("C:\\x.dll", "bb", "dd")
    assert not [k for k in doc if k.startswith("process.hash")]
    odd = Event("process_creation", "windows", {"Hashes": "SHA256=CC,SHA224=EE"}, WHEN)
    doc = valid(to_ecs(sigma_alert(odd), HOST, created=NOW))
    assert doc["process.hash.sha256"] == "cc" and doc["edr.event"]["Hashes"] == "SHA256=CC,SHA224=EE"


def test_linux_ids_are_keywords() -> None:
    event = Event("process_creation", "linux", {"Image": "/usr/bin/id", "Uid": 1000, "Gid": 1000, "Euid": 0,
                                                "ProcessId": 77, "ExitCode": 7, "ProcessStartTime": 123456}, WHEN)
    doc = valid(to_ecs(sigma_alert(event), HOST, created=NOW))
    assert (doc["user.id"], doc["group.id"], doc["user.effective.id"]) == ("1000", "1000", "0")
    assert doc["process.exit_code"] == 7
    assert doc["edr.event"] == {"ProcessStartTime": "123456"}


def test_file_operation_and_source_path() -> None:
    event = Event("file_rename", "linux", {"TargetFilename": "/tmp/b", "SourceFilename": "/tmp/a",
                                           "Operation": "file_rename"}, WHEN)
    doc = valid(to_ecs(sigma_alert(event), HOST, created=NOW))
    assert (doc["file.path"], doc["file.name"], doc["file.directory"]) == ("/tmp/b", "b", "/tmp")
    assert (doc["edr.file.source_path"], doc["edr.file.operation"]) == ("/tmp/a", "file_rename")
    assert "edr.event" not in doc


def test_raw_fields_have_names_without_spaces_and_one_type() -> None:
    event = Event("winlog", "windows", {
        "Threat Name": "Trojan:X", "Source Name": "%%818", "SourceIsIpv6": True, "Data": ["a", 1, None, ["b"]],
        "Flag": False, "Ratio": 0.5, "Big": 10**30, "Nested": {"k": [1, 2]}, "a.b@c": "x", "  ": "blank",
        "Empty": "",
    }, WHEN, service="windefend")
    doc = valid(to_ecs(sigma_alert(event), HOST, created=NOW))
    assert doc["edr.event"] == {
        "ThreatName": "Trojan:X", "SourceName": "%%818", "SourceIsIpv6": "true", "Data": ["a", "1", "", '["b"]'],
        "Flag": "false", "Ratio": "0.5", "Big": str(10**30), "Nested": '{"k":[1,2]}', "a_b_c": "x", "_": "blank",
        "Empty": "",
    }
    same = Event("winlog", "windows", {"SourceIsIpv6": "true"}, WHEN)
    assert to_ecs(sigma_alert(same), HOST)["edr.event"]["SourceIsIpv6"] == "true"  # as the bool above


def test_names_that_collide_keep_every_value() -> None:
    event = Event("winlog", "windows", {"New Value": "1", "NewValue": "1", "New  Value": "2", "New\tValue": "3"},
                  WHEN)
    doc = valid(to_ecs(sigma_alert(event), HOST, created=NOW))
    assert doc["edr.event"] == {"NewValue": "1", "NewValue_2": "2", "NewValue_3": "3"}


def test_values_that_do_not_fit_their_ecs_type_stay_raw() -> None:
    event = Event("network_connection", "windows", {
        "SourceIp": "not-an-ip", "DestinationIp": "fe80::1%eth0", "SourcePort": "http", "DestinationPort": 2**70,
        "Protocol": 6, "Initiated": "maybe", "User": ["a", "b"], "Image": "", "CommandLine": 5,
    }, WHEN)
    doc = valid(to_ecs(sigma_alert(event), HOST, created=NOW))
    for key in ("source.ip", "destination.ip", "source.port", "destination.port", "network.transport",
                "network.direction", "user.name", "process.executable"):
        assert key not in doc, key
    assert doc["process.command_line"] == "5"  # an integer is keyword text
    assert doc["edr.event"] == {"SourceIp": "not-an-ip", "DestinationIp": "fe80::1%eth0", "SourcePort": "http",
                                "DestinationPort": str(2**70), "Protocol": "6", "Initiated": "maybe",
                                "User": ["a", "b"], "Image": ""}


def test_dns_results_keep_their_cnames() -> None:
    results = "type:  5 edge.example;::ffff:13.107.21.200;2001:db8::1;"
    event = Event("dns_query", "windows", {"QueryName": "edge.example", "QueryResults": results}, WHEN)
    doc = valid(to_ecs(sigma_alert(event), HOST, created=NOW))
    assert doc["dns.resolved_ip"] == ["13.107.21.200", "2001:db8::1"]
    assert doc["edr.event"]["QueryResults"] == results


def test_engine_keys_are_typed_or_kept_unmapped(caplog: pytest.LogCaptureFixture) -> None:
    alert = sigma_alert(windows_event(), **{"process.hash.imphash": "DD", "user.id": 0, "edr.chain.seq": 5,
                                            "edr.yara.meta": {"author": "me", "score": 7, "bad name": True},
                                            "edr.correlation.group.Target User": "bob",
                                            "edr.correlation.group.Count": 3, "threat.indicator.ip": "10.0.0.300"})
    with caplog.at_level(logging.WARNING, logger="edr.alerts"):
        doc = valid(to_ecs(alert, HOST, created=NOW))
    assert doc["user.id"] == "0"
    assert doc["edr.yara.meta"] == {"author": "me", "score": "7", "badname": "true"}
    assert doc["edr.correlation.group"] == {"TargetUser": "bob", "Count": "3"}
    assert doc["edr.unmapped"] == {"process_hash_imphash": "DD", "edr_chain_seq": "5",
                                   "threat_indicator_ip": "10.0.0.300"}
    for key in ("process.hash.imphash", "edr.chain.seq", "threat.indicator.ip"):
        assert key not in doc
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'process.hash.imphash' is not in edr's ECS schema" in warned and "threat.indicator.ip" in warned


def test_match_details_are_a_flattened_object() -> None:
    alert = sigma_alert(windows_event())
    alert.debug = {"selections": ["selection"], "fields": ["CommandLine", "*keywords*"],
                   "values": {"CommandLine": "cmd /c whoami", "*keywords*": "whoami"}}
    doc = valid(to_ecs(alert, HOST, created=NOW))
    assert doc["edr.match"] == {"selections": ["selection"], "fields": ["CommandLine", "*keywords*"],
                                "values": {"CommandLine": "cmd /c whoami", "_keywords_": "whoami"}}


def test_raw_rule_is_documented_exactly() -> None:
    assert [raw_name(n) for n in ("Threat Name", "a.b", "x\u00e9y", "", "-_", 5, None)] == [
        "ThreatName", "a_b", "x\u00e9y", "_", "-_", "5", "null"]
    assert [raw_value(v) for v in ("s", True, 7, 1e300, float("nan"), None, (1, "a"), {"k": "v"})] == [
        "s", "true", "7", "1e+300", "nan", None, ["1", "a"], '{"k":"v"}']


def test_no_key_of_issue_15_in_alerts_of_real_windows_recordings(tmp_path: Path) -> None:
    """Replay of Defender (names with spaces), Security and Sysmon recordings with SigmaHQ: every alert is
    valid against all of ECS 9.4.0, and none of the keys the issue found outside ECS is left."""
    samples = shared_path("evtx-attack-samples")
    rules = shared_path("sigma", "rules", "windows")
    full = load_ecs_fields(shared_path("ecs", "ecs-9.4.0-fields.json"))
    files = [samples / "AutomatedTestingTools" / "WinDefender_Events_1117_1116_AtomicRedTeam.evtx",
             *sorted((samples / "Credential Access").glob("*.evtx"))[:12],
             *sorted((samples / "Execution").glob("*.evtx"))[:12]]
    (tmp_path / "edr.toml").write_text(
        f'[sigma]\ncache_dir = "{tmp_path / "cache"}"\n[ioc]\nenabled = false\n[simple]\nenabled = false\n'
        f'[alerts]\ndirectory = "{tmp_path / "logs"}"\n[logging]\ndirectory = "{tmp_path / "logs"}"\n')
    r = subprocess.run([sys.executable, "-m", "edr", "replay", "--config", str(tmp_path / "edr.toml"), "--no-progress",
                        "--output", str(tmp_path / "logs"), "--sigma", str(rules), *map(str, files)], cwd=tmp_path,
                       env=clean_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for f in sorted((tmp_path / "logs").glob("alerts.json.*"))
            for line in f.read_text().splitlines()]
    assert len(docs) >= 50
    defender = [d for d in docs if d.get("winlog.channel", "").endswith("Windows Defender/Operational")]
    assert defender and all("ThreatName" in d["edr.event"] for d in defender)
    issue = {"log.record", "process.hash.imphash", "event.count"}
    for doc in docs:
        assert check_document(doc, full) == [], doc["rule.name"]
        assert not issue & doc.keys()
        assert not [k for k in doc if k.startswith("edr.event.")]  # one object, not keys of their own
        assert all(" " not in name for name in doc.get("edr.event", {}))
        assert isinstance(doc["rule.reference"], str) and doc["ecs.version"] == "9.4.0"
        assert doc["event.created"] != doc["@timestamp"]  # recorded years ago, written now
