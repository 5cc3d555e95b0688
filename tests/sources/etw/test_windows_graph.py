"""Recorded ETW through the real Windows graph, end to end.

``actors/windows.toml`` runs under the real Supervisor with every real
actor; only pywintrace's ``etw`` module is a stand-in
(:mod:`tests.sources.etw.standin_etw`), whose consumer thread delivers every
recording, converted to pywintrace's callback shape, through the source's
real callback, and so are pywin32's ``win32evtlog`` and ``win32event``
(:mod:`tests.sources.etw.standin_eventlog`), into whose Security channel a thread
logs a record while the graph runs. The lab's drive table and accounts are
the injected host facts (:class:`~edr.sources.etw.host.WindowsHost`); Linux
has no ``QueryDosDevice``. The normalized events are read back from the
events file the graph writes, the alerts from its alert file.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from edr.config import load_config
from edr.runtime.supervisor import Supervisor
from edr.sources.etw.host import DeviceMap, NoProcessFacts, SidResolver, WindowsHost
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph
from tests.sources.etw.conftest import LAB_ACCOUNTS, LAB_DEVICES
from tests.sources.etw.pywintrace_shape import all_recorded
from tests.sources.etw.standin_etw import SessionTable, make_module, stale_session
from tests.sources.etw.standin_eventlog import EventLogService

pytestmark = pytest.mark.shared

POWERSHELL = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
TEMP = "C:\\Users\\theo-rdp\\AppData\\Local\\Temp\\rustinel-fixture-e78e5e\\"

RULE = """\
title: cmd started by PowerShell at high integrity
id: 5f0c7f6e-6f1e-4d6b-9a49-3d2a3c0e0001
status: test
level: high
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\cmd.exe'
        ParentImage|endswith: '\\powershell.exe'
        IntegrityLevel: High
    condition: selection
"""


CLEARED_RULE = """\
title: Security event log cleared
id: 5f0c7f6e-6f1e-4d6b-9a49-3d2a3c0e0002
status: test
level: high
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID: 1102
    condition: selection
"""

SECURITY_LOG_CLEARED = (
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
    "<Provider Name='Microsoft-Windows-Eventlog' Guid='{fc65ddd8-d6ef-4962-83d5-6e5cfe9ce148}'/>"
    "<EventID>1102</EventID><Version>0</Version><Level>4</Level><Task>104</Task><Opcode>0</Opcode>"
    "<Keywords>0x4020000000000000</Keywords><TimeCreated SystemTime='2026-01-12T10:04:11.5127730Z'/>"
    "<EventRecordID>0</EventRecordID><Correlation/><Execution ProcessID='1104' ThreadID='5020'/>"
    "<Channel>Security</Channel><Computer>lab-windows</Computer><Security/></System><UserData>"
    "<LogFileCleared xmlns='http://manifests.microsoft.com/win/2004/08/windows/eventlog'>"
    "<SubjectUserSid>S-1-5-21-1-2-3-1001</SubjectUserSid><SubjectUserName>admin01</SubjectUserName>"
    "<SubjectDomainName>LAB</SubjectDomainName><SubjectLogonId>0x2b7f1</SubjectLogonId></LogFileCleared>"
    "</UserData></Event>")


def _config(tmp: Path) -> Any:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "cmd_from_powershell.yml").write_text(textwrap.dedent(RULE))
    (rules / "security_log_cleared.yml").write_text(textwrap.dedent(CLEARED_RULE))
    overrides = {
        "scanner.sigma_rules_path": str(rules), "scanner.yara_enabled": False, "ioc.enabled": False,
        "simple.enabled": False, "sigma.cache_dir": "", "events.enabled": True,
        "events.directory": str(tmp / "logs"), "alerts.directory": str(tmp / "logs"),
        "logging.directory": str(tmp / "logs"), "agent.state_directory": str(tmp / "state"),
    }
    return load_config(None, environ={}, overrides=overrides).config


def _read(directory: Path, pattern: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob(pattern)):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


@pytest.fixture
def lab_host() -> WindowsHost:
    return WindowsHost(DeviceMap(LAB_DEVICES), SidResolver(LAB_ACCOUNTS.get), NoProcessFacts())


async def test_recordings_through_the_windows_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    lab_host: WindowsHost) -> None:
    records = all_recorded()
    table = SessionTable()
    crashed = stale_session(table, "edr-etw")  # left running by an agent that crashed
    sessions: list[Any] = []
    module = make_module(table, lambda: records)
    real_etw_class = module.ETW

    def tracking_etw(*args: Any, **kwargs: Any) -> Any:
        session = real_etw_class(*args, **kwargs)
        sessions.append(session)
        return session

    module.ETW = tracking_etw
    monkeypatch.setitem(sys.modules, "etw", module)
    # the default channels: Security, System, Application, Windows Defender/Operational
    eventlog = EventLogService(["Security", "System", "Application", "Microsoft-Windows-Windows Defender/Operational"])
    win32evtlog, win32event = eventlog.modules()
    monkeypatch.setitem(sys.modules, "win32evtlog", win32evtlog)
    monkeypatch.setitem(sys.modules, "win32event", win32event)
    logging_thread = threading.Thread(target=lambda: (eventlog.wait_for_subscribers(4),
                                                      eventlog.log("Security", SECURITY_LOG_CLEARED)))
    logging_thread.start()

    config = _config(tmp_path)
    ctx = AgentContext.create(config, "windows", windows_host=lab_host)
    sup = Supervisor(mode_graph("windows"), ctx)

    async def stop_when_delivered(s: Supervisor) -> None:
        ours = None
        while ours is None or s.actors["eventlog"].sent < 1:
            await trio.sleep(0.01)
            ours = next((x for x in sessions if x.event_callback is not None and x.delivered.is_set()), None)
        s.stop()

    code = await sup.run(handle_signals=False, background=[stop_when_delivered])
    logging_thread.join()
    assert code == 0

    # the stale session was stopped before ours started; ours was stopped on exit
    assert table.log[0] == ("control_stop", "edr-etw") and ("start", "edr-etw") in table.log
    assert table.log[-1] == ("stop", "edr-etw") and table.running == {}
    assert crashed not in table.running.values()
    ours = next(x for x in sessions if x.event_callback is not None)
    assert ours.callbacks == 84
    # every provider enabled, with the SID of each event asked for where it names the user
    assert len(ours.providers) == 8
    assert {str(p.guid) for p in ours.providers} == {r[1]["EventHeader"]["ProviderId"] for r in records}

    stats = sup.actor_statistics()
    assert stats["source"]["bridge"]["accepted"] == 84 and stats["source"]["bridge"]["overflow_total"] == 0
    assert stats["source"]["sent"] == 84
    assert stats["normalizer"]["events"] == 24 and stats["normalizer"]["errors"] == 0
    assert stats["eventlog"]["sent"] == 1 and stats["eventlog_normalizer"] == {"decoded": 1, "rejected": 0}
    assert stats["eventlog"]["channels"]["Security"]["bookmark"] == 1

    events = _read(tmp_path / "logs", "events.json*")
    by_category: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        assert e["product"] == "windows"
        by_category.setdefault(e["category"], []).append(e["fields"])
    assert len(events) == 25
    (cleared,) = [e for e in events if e.get("service") == "security"]
    assert cleared["fields"]["EventID"] == 1102 and cleared["fields"]["SubjectUserName"] == "admin01"

    (created,) = by_category["process_creation"]
    assert created["Image"] == "C:\\Windows\\System32\\cmd.exe"
    assert created["ProcessId"] == 7004
    assert created["ParentProcessId"] == 6340
    assert created["IntegrityLevel"] == "High"
    assert created["ParentImage"] == POWERSHELL
    assert by_category["process_termination"] == [{"ProcessId": 7004, "Image": "C:\\Windows\\System32\\cmd.exe"}]

    (connection,) = by_category["network_connection"]
    assert connection["DestinationIp"] == "20.190.159.23"
    assert connection["DestinationPort"] == 443
    assert connection["DestinationHostname"] == "login.live.com"
    assert (connection["SourceIp"], connection["SourcePort"]) == ("192.168.1.28", 49939)

    registry = [(e["category"], e["fields"]["EventType"], e["fields"]["TargetObject"], e["fields"].get("Details"))
                for e in events if e["category"].startswith("registry_")]
    assert registry == [
        ("registry_add", "CreateKey", "?\\Software\\RustinelFixture", None),
        ("registry_set", "SetValue", "?\\Software\\RustinelFixture\\Run", "C:\\Windows\\System32\\cmd.exe /c fixture"),
        ("registry_set", "SetValue", "?\\Software\\RustinelFixture\\Flag", "DWORD (0x00000001)"),
        ("registry_delete", "DeleteValue", "?\\Software\\RustinelFixture\\Run", None),
        ("registry_delete", "DeleteKey", "?\\RustinelFixture", None),
    ]

    assert [f["TargetFilename"] for f in by_category["file_event"]] == [TEMP + "fixture.txt"] * 2
    (renamed,) = by_category["file_rename"]
    assert (renamed["SourceFilename"], renamed["TargetFilename"]) == (TEMP + "fixture.txt",
                                                                      TEMP + "fixture-renamed.txt")
    assert [f["TargetFilename"] for f in by_category["file_delete"]] == [TEMP + "fixture-renamed.txt"]
    assert all(f["Image"] == POWERSHELL for f in by_category["file_event"] + by_category["file_delete"])

    assert by_category["ps_script"][0]["ScriptBlockText"] == "Get-Process | Select-Object -First 1"
    assert len(by_category["winlog"]) == 7  # 1 TaskScheduler + 5 WMI-Activity from ETW, Security 1102


    # and the Sigma engine of the graph fired on the ETW-derived process_creation
    alerts = _read(tmp_path / "logs", "alerts.json*")
    assert sorted(a["rule.name"] for a in alerts) == ["Security event log cleared",
                                                     "cmd started by PowerShell at high integrity"]
    (from_etw,) = [a for a in alerts if a["rule.name"] == "cmd started by PowerShell at high integrity"]
    assert from_etw["process.pid"] == 7004
    (from_channel,) = [a for a in alerts if a["rule.name"] == "Security event log cleared"]
    assert (from_channel["winlog.channel"], from_channel["winlog.record_id"]) == ("Security", "1")
    assert "log.file.path" not in from_channel
