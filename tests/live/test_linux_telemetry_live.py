"""`edr run` for real: what the kernel states reaches alerts and the event stream.

The shipped path indicator for /dev/shm fires on a file written there; a process's exit
status, a UDP exchange closed at once and an append to an existing file are recorded as
the sensor states them, through the whole agent (its actor graph, its cgroup hooks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import REPO, ebpf_unavailable
from tests.live.agent import read_alerts, start_agent, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("telemetry")
    proc, logs = start_agent(work, f"""
[scanner]
sigma_enabled = false
yara_enabled = false
[simple]
builtin_enabled = false
rules_path = ""
[ioc]
hashes_path = ""
ips_path = ""
domains_path = ""
paths_regex_path = "{REPO / 'rules' / 'ioc' / 'paths_regex.txt'}"
[events]
enabled = true
directory = "{work / 'events'}"
categories = ["process_termination", "network_connection", "file_event"]
[logging]
directory = "{work / 'logs'}"
[alerts]
directory = "{work / 'logs'}"
""", timeout=120)
    yield proc, logs, work / "events"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _recorded(events: Path, pred: Any) -> list[dict[str, Any]]:
    out = []
    for f in sorted(events.glob("events.json.*")):
        for line in f.read_bytes().splitlines():
            if line.strip():
                record = orjson.loads(line)
                if pred(record):
                    out.append(record)
    return out


def test_shipped_dev_shm_indicator_fires_on_a_file_written_there(agent) -> None:
    proc, logs, _events = agent
    path = f"/dev/shm/edr-test-{uuid.uuid4().hex[:8]}-edr-ioc-demo"
    try:
        subprocess.run(["/bin/sh", "-c", f"echo payload > {path}"], check=True)
        hits = wait_for(lambda: [a for a in read_alerts(logs) if a.get("file.path") == path], 5.0)
        assert hits, "the shipped path indicator ^/dev/shm/.*edr-ioc-demo$ did not fire"
        a = hits[0]
        assert (a["rule.engine"], a["edr.ioc.type"]) == ("ioc", "path_regex")
        assert a["process.executable"] in ("/usr/bin/dash", "/bin/dash", "/usr/bin/sh", "/bin/sh")
        assert proc.poll() is None
    finally:
        os.unlink(path)


def test_exit_status_is_recorded(agent) -> None:
    _proc, _logs, events = agent
    marker = uuid.uuid4().hex[:8]
    subprocess.run(["/bin/sh", "-c", f"exit 7 # {marker}"])
    victim = subprocess.Popen(["/bin/sleep", "30"])
    time.sleep(0.2)
    victim.kill()
    victim.wait()

    def ends() -> list[dict[str, Any]]:
        return _recorded(events, lambda r: r["category"] == "process_termination"
                         and r["fields"].get("ProcessId") == victim.pid)

    [killed] = wait_for(ends, 5.0)
    assert (killed["fields"]["ExitCode"], killed["fields"]["ExitSignal"]) == (137, "SIGKILL")
    sh = _recorded(events, lambda r: r["category"] == "process_termination"
                   and r["fields"].get("CommandLine") == f"/bin/sh -c exit 7 # {marker}")
    assert [r["fields"]["ExitCode"] for r in sh] == [7]


UDP_QUICK = r"""
import json, os, socket
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(rx.getsockname()); s.send(b"x"); client = s.getsockname()[1]; s.close()
print(json.dumps({"server": rx.getsockname()[1], "client": client}), flush=True)
os._exit(0)
"""


def test_udp_closed_at_once_is_recorded_with_both_ends(agent) -> None:
    _proc, _logs, events = agent
    out = subprocess.run([sys.executable, "-c", UDP_QUICK], capture_output=True, text=True, check=True)
    ports = json.loads(out.stdout)
    found = wait_for(lambda: _recorded(events, lambda r: r["category"] == "network_connection"
                                       and r["fields"].get("DestinationPort") == ports["server"]), 5.0)
    assert len(found) == 1
    f = found[0]["fields"]
    assert (f["Protocol"], f["SourceIp"], f["SourcePort"], f["DestinationIp"]) == (
        "udp", "127.0.0.1", ports["client"], "127.0.0.1")


def test_append_to_an_existing_file_is_recorded_as_a_write(agent, tmp_path: Path) -> None:
    _proc, _logs, events = agent
    f = tmp_path.resolve() / "log.txt"
    f.write_text("old\n")
    time.sleep(0.1)
    subprocess.run(["/bin/sh", "-c", f"echo new >> {f}"], check=True)
    found = wait_for(lambda: _recorded(events, lambda r: r["category"] == "file_event"
                                       and r["fields"].get("TargetFilename") == str(f)
                                       and r["fields"].get("ProcessId") != os.getpid()), 5.0)
    assert [r["fields"]["Operation"] for r in found] == ["file_write"]
