"""Live on Windows: a process started now is seen through a real ETW session, a record logged now through
the Event Log, both through the real Windows graph (Sigma alert included).

Skipped off Windows; the ``windows`` CI workflow (.github/workflows/windows.yml)
runs it on ``windows-latest`` (an elevated runner: kernel ETW providers and
the Security channel need Administrator). Everything it exercises is also
covered on Linux by the recording-driven tests (test_windows_graph.py,
test_eventlog_sigmahq.py), which deliver the same shapes through stand-ins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from edr.config import load_config
from edr.runtime.supervisor import Supervisor
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph

pytestmark = [
    pytest.mark.windows,
    pytest.mark.skipif(sys.platform != "win32", reason="needs Windows: a live ETW session and the Event Log"),
]

#: How long the live events may take to arrive (the session starts, the providers enable, the runner is slow).
DEADLINE_SECS = 120.0
SOURCE = "edr-ci"


def _events(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("events.json*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # the line being written right now
                continue
    return out


def _alerts(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted(directory.glob("alerts.json*"))
            for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _started(events: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    return [e["fields"] for e in events
            if e.get("category") == "process_creation" and marker in str(e["fields"].get("CommandLine", ""))]


def _logged(events: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("service") == "application" and marker in json.dumps(e["fields"])]


async def test_live_process_creation_through_etw_and_a_live_event_log_record(tmp_path: Path) -> None:
    import win32evtlog
    import win32evtlogutil

    marker = f"edr-live-{uuid.uuid4().hex[:12]}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "live.yml").write_text(textwrap.dedent(f"""\
        title: live marker process
        id: 5f0c7f6e-6f1e-4d6b-9a49-3d2a3c0e0201
        status: test
        level: high
        logsource:
            product: windows
            category: process_creation
        detection:
            selection:
                CommandLine|contains: '{marker}'
            condition: selection
        """))
    logs = tmp_path / "logs"
    config = load_config(None, environ={}, overrides={
        "scanner.sigma_rules_path": str(rules), "scanner.yara_enabled": False, "ioc.enabled": False,
        "simple.enabled": False, "sigma.cache_dir": "", "events.enabled": True, "events.directory": str(logs),
        "alerts.directory": str(logs), "logging.directory": str(logs), "agent.state_directory": str(tmp_path / "s"),
    }).config
    sup = Supervisor(mode_graph("windows"), AgentContext.create(config, "windows"), stop_timeout=30.0)
    pids: list[int] = []

    def launch() -> None:
        proc = subprocess.Popen(["cmd.exe", "/c", "echo", marker], stdout=subprocess.DEVNULL)
        pids.append(proc.pid)
        proc.wait(30)

    async def drive(s: Supervisor) -> None:
        # Until both are seen: start a process, log a record. The first ones may come before the session and
        # the subscriptions are up; what is asserted is what came through, never how many tries it took.
        with trio.move_on_after(DEADLINE_SECS):
            while True:
                await trio.to_thread.run_sync(launch)
                win32evtlogutil.ReportEvent(SOURCE, 1000, eventType=win32evtlog.EVENTLOG_INFORMATION_TYPE,
                                            strings=[marker])
                await trio.sleep(1.0)
                events = _events(logs)
                if _started(events, marker) and _logged(events, marker):
                    break
        s.stop()

    code = await sup.run(handle_signals=False, background=[drive])
    assert code == 0

    events = _events(logs)
    started = _started(events, marker)
    assert started, "no process_creation event with the marker came through ETW"
    first = started[0]
    assert first["Image"].lower().endswith("\\windows\\system32\\cmd.exe")
    assert first["Image"][1:3] == ":\\"  # a drive letter: the device path was mapped
    assert first["ProcessId"] in pids
    assert first["ParentProcessId"] == os.getpid()
    assert any(a["rule.name"] == "live marker process" for a in _alerts(logs))

    (logged, *_) = _logged(events, marker)
    assert logged["fields"]["Channel"] == "Application"
    assert logged["fields"]["Provider_Name"] == SOURCE
    assert logged["fields"]["EventID"] == 1000
