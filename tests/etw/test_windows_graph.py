"""Recorded ETW through the real Windows graph, end to end.

``actors/windows.toml`` runs under the real Supervisor with every real
actor; only pywintrace's ``etw`` module is a stand-in
(:mod:`tests.etw.standin_etw`), whose consumer thread delivers every
recording, converted to pywintrace's callback shape, through the source's
real callback. The lab's drive table and accounts are the injected host
facts (:class:`~edr.sources.etw.host.WindowsHost`); Linux has no
``QueryDosDevice``. The normalized events are read back from the events
file the graph writes, the alerts from its alert file.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from edr.config import load_config
from edr.runtime.supervisor import Supervisor
from edr.sources.etw.host import DeviceMap, NoProcessFacts, SidResolver, WindowsHost
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph
from tests.etw.conftest import LAB_ACCOUNTS, LAB_DEVICES
from tests.etw.pywintrace_shape import all_recorded
from tests.etw.standin_etw import SessionTable, make_module, stale_session

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


def _config(tmp: Path) -> Any:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "cmd_from_powershell.yml").write_text(textwrap.dedent(RULE))
    overrides = {
        "scanner.sigma_rules_path": str(rules), "scanner.yara_enabled": False, "ioc.enabled": False,
        "simple.enabled": False, "sigma.cache_dir": "", "events.enabled": True,
        "events.directory": str(tmp / "logs"), "alerts.directory": str(tmp / "logs"),
        "logging.directory": str(tmp / "logs"),
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

    config = _config(tmp_path)
    ctx = AgentContext.create(config, "windows", windows_host=lab_host)
    sup = Supervisor(mode_graph("windows"), ctx)

    async def stop_when_delivered(s: Supervisor) -> None:
        ours = None
        while ours is None:
            await trio.sleep(0.01)
            ours = next((x for x in sessions if x.event_callback is not None and x.delivered.is_set()), None)
        s.stop()

    code = await sup.run(handle_signals=False, background=[stop_when_delivered])
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

    events = _read(tmp_path / "logs", "events.json*")
    by_category: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        assert e["product"] == "windows"
        by_category.setdefault(e["category"], []).append(e["fields"])
    assert len(events) == 24

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
    assert len(by_category["winlog"]) == 6  # 1 TaskScheduler + 5 WMI-Activity

    # and the Sigma engine of the graph fired on the ETW-derived process_creation
    alerts = _read(tmp_path / "logs", "alerts.json*")
    assert [a["rule.name"] for a in alerts] == ["cmd started by PowerShell at high integrity"]
    assert alerts[0]["process.pid"] == 7004
