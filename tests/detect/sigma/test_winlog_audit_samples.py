"""Security audit events routed as Sysmon events, on the reference recordings (../shared).

- Every 4688 of the attack samples fires exactly the ``process_creation`` rules
  its fields match (the engine's routing and index against evaluating every
  rule), and the expected ones do fire.
- A 4688 and a Sysmon 1 record of one process fire the same ``process_creation``
  rules, except rules that read a field one of the two records does not know:
  the pairs the samples hold (by time, pid and image), and for every Sysmon 1
  record of the samples the 4688 Windows writes for that process creation
  (Microsoft's documented event, with the command line: the samples' own 4688
  records were made with command-line auditing off).
- Defender: the samples' records, and records built from them after
  Microsoft's documented events (5007, 1119, 1121, 3002, and 1116 as a newer
  Defender renders it), fire the SigmaHQ rules written with ``NewValue``,
  ``ThreatName``, ``SourceName``, ``ProcessName``, ``Feature_Name``.
- Replaying the attack samples gains only the expected alerts and loses none.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edr.detect.sigma import SigmaEngine, load_sigma
from edr.detect.sigma.logsources import applies
from edr.detect.sigma.matchers import MatchContext
from edr.detect.sigma.rules import CompiledRule
from edr.event import Event
from edr.sources.replay import winlog
from edr.sources.replay.winlog import RECORD_KEY, iter_evtx, iter_winlog_events, winlog_to_event
from tests.detect.sigma.conftest import shared_path

pytestmark = [pytest.mark.shared, pytest.mark.slow]

#: Sysmon 1 fields a 4688 never records (pySigma's list of them, less the mapped ones).
SYSMON_ONLY = frozenset({
    "OriginalFileName", "Description", "Product", "Company", "FileVersion", "Hashes", "md5", "sha1", "sha256",
    "Imphash", "CurrentDirectory", "ParentCommandLine", "ParentUser", "ProcessGuid", "ParentProcessGuid",
    "LogonGuid", "TerminalSessionId", "UtcTime", "RuleName", "GrandParentImage",
})
#: Sysmon 1 fields a 4688 is given (edr.sources.replay.winlog_audit).
MAPPED = ("Image", "ParentImage", "CommandLine", "User", "LogonId", "IntegrityLevel", "ProcessId",
          "ParentProcessId")
PROCESS_CREATION = ("windows", "process_creation", None)


def _load(pytestconfig: pytest.Config, factory: pytest.TempPathFactory, *parts: str) -> SigmaEngine:
    rules = shared_path(*parts)
    cache = getattr(pytestconfig, "cache", None)
    cache_dir = cache.mkdir("edr-sigma-cache") if cache is not None else factory.mktemp("edr-sigma-cache")
    engine, report = load_sigma([str(rules)], cache_dir=str(cache_dir))
    assert report.loaded > 1000
    return engine


@pytest.fixture(scope="module")
def sigmahq(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> SigmaEngine:
    """All of SigmaHQ (rules, emerging threats, threat hunting)."""
    return _load(pytestconfig, tmp_path_factory, "sigma")


def attack_events() -> Iterator[tuple[Path, Event]]:
    for path in sorted(shared_path("evtx-attack-samples").rglob("*.evtx")):
        for event in iter_winlog_events(path):
            yield path, event


def generic_process_creation(rule: CompiledRule) -> bool:
    """A rule for process creations whatever logs them (not a ``service: sysmon`` one)."""
    product, category, service = rule.meta.logsource
    return category == "process_creation" and service is None and product in (None, "windows")


def fired(engine: SigmaEngine, event: Event) -> set[str]:
    """Ids of the generic process_creation rules that alert on ``event``."""
    wanted = {r.meta.rule_id for r in engine.rules if generic_process_creation(r)}
    return {a.rule_id for a in engine.match(event)} & wanted


def record_id(event: Event) -> tuple[str, int]:
    origin = event.origin or {}
    return Path(str(origin["log.file.path"])).name, int(origin["log.record"])


# --- 4688 of the samples -------------------------------------------------------------------------

#: (rule, file, record) of every process_creation alert on the samples' 4688 records (none before they
#: were routed); each is what the recording shows. Their command lines are empty (not audited), so
#: these are the rules that need none.
EXPECTED_4688 = {
    # MalSeclogon clones lsass: lsass.exe started by lsass.exe
    ("c8da0dfd-4ed0-4b68-962d-13c9c884384e", "tutto_malseclogon.evtx", 12),
    # the same, as a program started by its own image (threat hunting)
    ("bafd07c6-3ea5-454a-b4be-058fbb073de7", "tutto_malseclogon.evtx", 12),
    # the relayed NTLM session runs notepad through WMI as the domain administrator
    ("d21374ff-f574-44a7-9998-4a8c8bf33d7d", "NTLM2SelfRelay-med0x2e-security_4624_4688.evtx", 10),
    # plink.exe, the SSH client the RDP tunnel is built with (threat hunting)
    ("c75309a3-59f8-4a8d-9c2c-4c927ad50555", "DE_RDP_Tunnel_5156.evtx", 16),
    # cmd.exe as SYSTEM (logon 0x3e7): a remote AT job, a stolen SYSTEM token, mimikatz's host (threat hunting)
    ("61065c72-5d7d-44ef-bf41-6a36684b545f", "LM_ScheduledTask_ATSVC_target_host.evtx", 15),
    ("61065c72-5d7d-44ef-bf41-6a36684b545f", "security_4624_4673_token_manip.evtx", 13),
    ("61065c72-5d7d-44ef-bf41-6a36684b545f", "LM_4624_mimikatz_sekurlsa_pth_source_machine.evtx", 4),
    # tasklist.exe run by that AT job (threat hunting)
    ("63332011-f057-496c-ad8d-d2b6afb27f96", "LM_ScheduledTask_ATSVC_target_host.evtx", 17),
}


def test_every_4688_fires_the_process_creation_rules_its_fields_match(sigmahq: SigmaEngine) -> None:
    rules = [r for r in sigmahq.rules if generic_process_creation(r) and r.emits]
    events = alerts = 0
    hits: set[tuple[str, str, int]] = set()
    for _path, event in attack_events():
        if event.service != "security" or event.fields.get("EventID") != 4688:
            continue
        events += 1
        assert (event.category, event.service) == ("process_creation", "security")
        assert applies(PROCESS_CREATION, (event.product, event.category, event.service))
        ctx = MatchContext(event.fields)
        # every rule evaluated, no index: what the engine must find through its route and index
        expected = {r.meta.rule_id for r in rules if r.condition.ev(ctx)}
        got = fired(sigmahq, event)
        assert got == expected, record_id(event)
        alerts += len(got)
        hits.update((rule, *record_id(event)) for rule in got)
    assert events == 42
    assert hits == EXPECTED_4688, (EXPECTED_4688 - hits, hits - EXPECTED_4688)
    print(f"4688: {events} events, {len({h[0] for h in hits})} distinct rules, {alerts} alerts: {sorted(hits)}")


# --- pairs of 4688 and Sysmon 1 ------------------------------------------------------------------

def _known(value: Any) -> bool:
    return value is not None and value not in ("", "-")


def _same(a: Any, b: Any) -> bool:
    return a.lower() == b.lower() if isinstance(a, str) and isinstance(b, str) else a == b


def assert_same_rules(engine: SigmaEngine, audit: Event, sysmon: Event) -> tuple[int, int]:
    """The two events fire the same generic process_creation rules, but for rules reading a field one lacks.

    Fields both records know must agree. Returns (rules fired on both, rules differing).
    """
    a, s = audit.fields, sysmon.fields
    unknown = set(SYSMON_ONLY)
    for name in MAPPED:
        if _known(a.get(name)) and _known(s.get(name)):
            assert _same(a[name], s[name]), (name, a[name], s[name], record_id(audit), record_id(sysmon))
        else:
            unknown.add(name)
    on_audit, on_sysmon = fired(engine, audit), fired(engine, sysmon)
    by_id = {r.meta.rule_id: r for r in engine.rules}
    unexplained = {rule: sorted(by_id[rule].fields) for rule in on_audit ^ on_sysmon
                   if not by_id[rule].fields & unknown}
    assert not unexplained, (record_id(audit), record_id(sysmon), unexplained)
    return len(on_audit & on_sysmon), len(on_audit ^ on_sysmon)


def test_a_4688_and_the_sysmon_1_of_the_same_process_fire_the_same_rules(sigmahq: SigmaEngine) -> None:
    audits: list[Event] = []
    sysmons: list[Event] = []
    for _path, event in attack_events():
        if event.category != "process_creation":
            continue
        (audits if event.service == "security" else sysmons).append(event)
    pairs = [(a, s) for a in audits for s in sysmons
             if abs(a.timestamp - s.timestamp) <= 1.0 and a.fields.get("ProcessId") == s.fields.get("ProcessId")
             and _same(a.fields.get("Image"), s.fields.get("Image"))]
    # tutto_malseclogon.evtx holds both logs of one host: MalSeclogon.exe twice (from a share) and svchost.exe
    assert len(pairs) == 3, [(record_id(a), record_id(s)) for a, s in pairs]
    both = 0
    for audit, sysmon in pairs:
        both += assert_same_rules(sigmahq, audit, sysmon)[0]
    print(f"{len(pairs)} pairs; {both} rules fired on both records of a pair")


_WELL_KNOWN = {"NT AUTHORITY\\SYSTEM": "S-1-5-18", "NT AUTHORITY\\LOCAL SERVICE": "S-1-5-19",
               "NT AUTHORITY\\NETWORK SERVICE": "S-1-5-20"}
_LABELS = {"Untrusted": "S-1-16-0", "Low": "S-1-16-4096", "Medium": "S-1-16-8192", "High": "S-1-16-12288",
           "System": "S-1-16-16384"}


def as_4688(sysmon: Event) -> dict[str, Any]:
    """The 4688 (version 2) record Windows writes for the process creation a Sysmon 1 event reports.

    After Microsoft's documentation of the event: pids in hexadecimal, the
    creator's pid as ``ProcessId``, the new process's account as the subject
    (no target: the token is the creator's), a service account as the
    machine account with its well-known SID, the integrity level as its
    mandatory label's SID, a share's path under ``\\Device\\Mup``.
    """
    f = sysmon.fields
    user = str(f.get("User", ""))
    domain, _, name = user.rpartition("\\")
    sid = _WELL_KNOWN.get(user.upper())
    if sid is not None:
        domain, name = "WORKGROUP", f"{str(f.get('Computer', 'HOST')).split('.')[0]}$"
    data: dict[str, Any] = {
        "SubjectUserSid": sid or "S-1-5-21-1004336348-1177238915-682003330-1000",
        "SubjectUserName": name or "-", "SubjectDomainName": domain or "-",
        "SubjectLogonId": f.get("LogonId", "0x0"),
        "NewProcessId": hex(int(f["ProcessId"])),
        "NewProcessName": _nt_path(str(f.get("Image", ""))),
        "TokenElevationType": "%%1936",
        "ProcessId": hex(int(f.get("ParentProcessId") or 0)),
        "CommandLine": f.get("CommandLine", ""),
        "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
        "ParentProcessName": _nt_path(str(f.get("ParentImage", "-"))),
    }
    label = _LABELS.get(str(f.get("IntegrityLevel")))
    if label is not None:
        data["MandatoryLabel"] = label
    when = datetime.fromtimestamp(sysmon.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"Event": {"System": {
        "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
        "EventID": 4688, "Version": 2, "TimeCreated": {"#attributes": {"SystemTime": when}},
        "EventRecordID": 1, "Channel": "Security", "Computer": f.get("Computer", "HOST"),
    }, "EventData": data}, RECORD_KEY: (sysmon.origin or {}).get("log.record")}


def _nt_path(path: str) -> str:
    return "\\Device\\Mup\\" + path[2:] if path.startswith("\\\\") else path


def test_the_4688_of_every_sysmon_1_process_creation_fires_the_same_rules(sigmahq: SigmaEngine) -> None:
    roots = [shared_path("evtx-attack-samples"), shared_path("sigma-regression")]
    events = same = differing = 0
    fired_rules: Counter[str] = Counter()
    for root in roots:
        for path in sorted(root.rglob("*.evtx")):
            for sysmon in iter_winlog_events(path):
                if sysmon.category != "process_creation" or sysmon.service != "sysmon":
                    continue
                audit = winlog_to_event(as_4688(sysmon), str(path))
                assert audit is not None and audit.category == "process_creation"
                events += 1
                both, differ = assert_same_rules(sigmahq, audit, sysmon)
                same += both
                differing += differ
                fired_rules.update(fired(sigmahq, audit))
    on_sysmon = same + differing - (sum(fired_rules.values()) - same)
    assert events > 1500
    assert same >= 0.9 * on_sysmon  # nearly every Sysmon alert needs no field 4688 lacks
    print(f"{events} Sysmon 1 events as 4688: {sum(fired_rules.values())} alerts of {len(fired_rules)} rules; "
          f"{same} rule firings shared with the Sysmon record, {differing} differing (a field 4688 lacks)")


# --- 5156 ---------------------------------------------------------------------------------------

#: Ports of the services the samples' inbound connections reach (RPC, NetBIOS, SMB, RDP, WS-Discovery, WinRM).
SERVICE_PORTS = frozenset({135, 139, 445, 3389, 5357, 5985})


def test_inbound_5156_names_its_sides_as_the_platform_and_sysmon_of_2019_do() -> None:
    # An accepted connection to a local service: Sysmon since 2020 (the samples recorded in 2020-2021)
    # gives the service's port as DestinationPort, the side that connected being the source; Sysmon of
    # 2019 gave it as SourcePort, as the filtering platform does. The routed 5156 records keep the
    # platform's sides, which the record's own SourcePort names (see winlog_audit).
    sides: dict[str, list[tuple[str, int, int]]] = {"security": [], "sysmon": [], "sysmon 2019": []}
    since_2020 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    for path, event in attack_events():
        f = event.fields
        ports = (f.get("SourcePort"), f.get("DestinationPort"))
        if event.category != "network_connection" or f.get("Initiated") is not False \
                or f.get("Protocol") != "tcp" or not SERVICE_PORTS & set(ports):
            continue
        if f.get("SourceIp") == f.get("DestinationIp"):  # to itself: both sides are local
            continue
        kind = event.service if event.service == "security" or event.timestamp >= since_2020 else "sysmon 2019"
        sides[str(kind)].append((path.name, *ports))
    assert [len(sides[kind]) for kind in ("security", "sysmon", "sysmon 2019")] == [4, 20, 13], sides
    for kind, found in sides.items():
        service_side = [destination if kind == "sysmon" else source for _, source, destination in found]
        assert all(port in SERVICE_PORTS for port in service_side), (kind, found)


# --- Defender -------------------------------------------------------------------------------------

def defender_records() -> list[dict[str, Any]]:
    path = shared_path("evtx-attack-samples", "AutomatedTestingTools",
                       "WinDefender_Events_1117_1116_AtomicRedTeam.evtx")
    return list(iter_evtx(path))


def test_defender_samples_name_their_fields_as_sigmahq_does(sigmahq: SigmaEngine) -> None:
    events = [winlog_to_event(r, "d.evtx") for r in defender_records()]
    assert len(events) == 11
    for event in events:
        assert event is not None and event.service == "windefend"
        f = event.fields
        for spaced in ("Threat Name", "Source Name", "Process Name", "Severity Name", "Detection User"):
            assert f[spaced.replace(" ", "")] == f[spaced.replace(" ", "_")] == f[spaced]
        # the one SigmaHQ rule the recorded values allow; the AMSI rule wants SourceName 'AMSI', and this
        # 2019 Defender wrote the source unrendered (%%818: real-time protection, Source ID 3)
        assert {a.rule_id for a in sigmahq.match(event)} == {"57b649ef-ff42-4fb0-8bf6-62da243a1708"}
        assert f["SourceName"] == "%%818"


def built(base: dict[str, Any], event_id: int, data: dict[str, Any], *, replace: bool = False) -> Event:
    """A Defender record made from a recorded one: its System block, ``event_id``, and ``data``.

    ``replace``: ``data`` is the whole EventData (another template), else it
    changes the recorded values (the same template: 1116-1119 share it).
    """
    record = copy.deepcopy(base)
    record["Event"]["System"]["EventID"] = event_id
    record["Event"]["EventData"] = data if replace else {**record["Event"]["EventData"], **data}
    event = winlog_to_event(record, "defender-built.evtx")
    assert event is not None and event.service == "windefend"
    return event


_PRODUCT = {"Product Name": "Microsoft Defender Antivirus", "Product Version": "4.18.23090.2008"}


def config_change(old: str, new: str) -> dict[str, Any]:
    """5007 (MALWAREPROTECTION_CONFIG_CHANGED): product, old and new value as ``<key>\\<value> = <data>``."""
    return {**_PRODUCT, "Old Value": old, "New Value": new}


_DEFENDER = "HKLM\\SOFTWARE\\Microsoft\\Windows Defender"
_GUARD = _DEFENDER + "\\Windows Defender Exploit Guard\\Controlled Folder Access"

#: (event id, EventData, whole EventData or changes to the recorded 1117, rule that must fire; "!": must not)
DEFENDER_CASES = [
    (5007, config_change("", _DEFENDER + "\\Exclusions\\Paths\\C:\\Users\\Public\\tools = 0x0"), True,
     "1321dc4e-a1fe-481d-a016-52c45f0c8b4f"),  # Exclusions Added
    (5007, config_change(_DEFENDER + "\\DisableAntiSpyware = 0x0", _DEFENDER + "\\DisableAntiSpyware = 0x1"),
     True, "801bd44f-ceed-4eb6-887c-11544633c0aa"),  # Configuration Changes
    (5007, config_change(_DEFENDER + "\\Real-Time Protection\\SubmitSamplesConsent = 0x1",
                         _DEFENDER + "\\Real-Time Protection\\SubmitSamplesConsent = 0x0"),
     True, "91903aba-1088-42ee-b680-d6d94fe002b0"),  # Submit Sample Feature Disabled
    (5007, config_change("", _GUARD + "\\AllowedApplications\\C:\\Users\\Public\\evil.exe = 0x0"), True,
     "a3ab73f1-bd46-4319-8f06-4b20d0617886"),  # Exploit Guard Tamper: an allowed application
    (5007, config_change(_GUARD + "\\ProtectedFolders\\D:\\Finance = 0x0", ""), True,
     "a3ab73f1-bd46-4319-8f06-4b20d0617886"),  # Exploit Guard Tamper: a protected folder removed
    # 1119 (MALWAREPROTECTION_STATE_MALWARE_ACTION_CRITICALLY_FAILED), 1117's template, as a current
    # Defender writes it: enum names rendered
    (1119, {"Threat Name": "Virus:DOS/EICAR_Test_File", "Source Name": "Real-Time Protection",
            "Path": "file:_C:\\Users\\bob\\AppData\\Local\\Temp\\2\\RS-{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"
                    "\\TieringEngineService.exe",
            "Process Name": "C:\\Users\\bob\\Downloads\\RedSun.exe", "Action Name": "Quarantine"}, False,
     "a7c3e5f2-8b1d-4e9a-b6c2-3d7f5e8a9b4c"),  # RedSun
    (1116, {"Source Name": "AMSI", "Threat Name": "Trojan:PowerShell/Powersploit.M"}, False,
     "ea9bf0fa-edec-4fb8-8b78-b119f2528186"),  # AMSI Trigger Detected
    # 1121 (an attack surface reduction rule blocked)
    (1121, {**_PRODUCT, "ID": "9E6C4E1F-7D60-472F-BA1A-A39EF669E4B2", "Detection Time": "2024-03-01T10:00:00.000Z",
            "User": "CONTOSO\\bob", "Path": "C:\\Windows\\System32\\lsass.exe",
            "Process Name": "C:\\Users\\bob\\procdump64.exe", "Security intelligence Version": "1.403.3470.0",
            "Engine Version": "1.1.24010.10"}, True, "a0a278fe-2c0e-4de2-ac3c-c68b08a9ba98"),
    # ... and not when the process reading lsass is one the rule leaves out by its ProcessName
    (1121, {**_PRODUCT, "ID": "9E6C4E1F-7D60-472F-BA1A-A39EF669E4B2", "Detection Time": "2024-03-01T10:00:00.000Z",
            "User": "NT AUTHORITY\\SYSTEM", "Path": "C:\\Windows\\System32\\lsass.exe",
            "Process Name": "C:\\Windows\\System32\\svchost.exe"}, True, "!a0a278fe-2c0e-4de2-ac3c-c68b08a9ba98"),
    (1121, {**_PRODUCT, "ID": "D1E49AAC-8F56-4280-B9BA-993A6D77406C", "Detection Time": "2024-03-01T10:00:00.000Z",
            "User": "CONTOSO\\bob", "Path": "C:\\Windows\\System32\\cmd.exe",
            "Process Name": "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe"}, True,
     "97b9ce1e-c5ab-11ea-87d0-0242ac130003"),  # PSExec and WMI Process Creations Block
]


@pytest.mark.parametrize(("event_id", "data", "replace", "rule"), DEFENDER_CASES)
def test_defender_events_fire_the_rules_written_without_spaces(sigmahq: SigmaEngine, event_id: int,
                                                               data: dict[str, Any], replace: bool,
                                                               rule: str) -> None:
    base = next(r for r in defender_records() if r["Event"]["System"]["EventID"] == 1117)
    event = built(base, event_id, data, replace=replace)
    assert (rule.lstrip("!") in {a.rule_id for a in sigmahq.match(event)}) is not rule.startswith("!")


@pytest.mark.parametrize(("feature", "fires"), [("%%886", False), ("%%885", True)])
def test_defender_feature_name_written_with_an_underscore(sigmahq: SigmaEngine, feature: str, fires: bool) -> None:
    # 3002: real-time protection failed. The rule leaves out the Network Inspection System (%%886)
    # failing for want of updates (%%892), naming the field Feature_Name.
    base = next(r for r in defender_records() if r["Event"]["System"]["EventID"] == 1117)
    event = built(base, 3002, {**_PRODUCT, "Feature Name": feature, "Reason": "%%892", "Error Code": "0x80004005",
                               "Error Description": "Unspecified error", "Feature ID": "10"}, replace=True)
    rule = "dd80db93-6ec2-4f4c-a017-ad40da6ffe81"
    assert (rule in {a.rule_id for a in sigmahq.match(event)}) is fires


# --- the whole replay ---------------------------------------------------------------------------

#: (rule, file, record) the routing adds on the attack samples, beyond the process creations above
EXPECTED_NEW = EXPECTED_4688 | {
    # plink.exe connects to the tunnel's RDP port (5156)
    ("ed74fe75-7594-4b4b-ae38-e38e3fd2eb23", "DE_RDP_Tunnel_5156.evtx", 25),
    ("ed74fe75-7594-4b4b-ae38-e38e3fd2eb23", "DE_RDP_Tunnel_5156.evtx", 37),
    # a program in a user's folder reads Chrome's saved passwords (4663; the second rule is threat hunting)
    ("a1dfd976-4852-41d4-9507-dc6590a3ccd0", "CA_chrome_firefox_opera_4663.evtx", 5),
    ("91cb43db-302a-47e3-b3c8-7ede481e27bf", "CA_chrome_firefox_opera_4663.evtx", 5),
}


def test_replay_gains_only_the_routed_alerts(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def alerts(engine: SigmaEngine) -> Counter[tuple[str, str, int]]:
        out: Counter[tuple[str, str, int]] = Counter()
        for _path, event in attack_events():
            out.update((a.rule_id, *record_id(event)) for a in engine.match(event))
        return out

    now = alerts(_load(pytestconfig, tmp_path_factory, "sigma"))
    with monkeypatch.context() as patched:  # the decoder as it was: no routing, names as recorded
        patched.setattr(winlog, "route_security", lambda event_id, fields: None)
        patched.setattr(winlog, "_add_spaceless_names", lambda key, value, out: None)
        before = alerts(_load(pytestconfig, tmp_path_factory, "sigma"))
    assert before - now == Counter()
    assert set(now - before) == EXPECTED_NEW and max((now - before).values()) == 1
    print(f"attack samples, all of SigmaHQ: {sum(before.values())} alerts before, {sum(now.values())} after")
