"""Start-up loses no kernel record: the full SigmaHQ set compiled cold while files are written at 200/s.

Before the fix the sensor attached before the rules compiled (12-15 s for
SigmaHQ's ~3,000 rules with a cold cache) and nobody emptied its rings
meanwhile, so file records were lost at every busy start. Now the rules
compile first and the rings are drained from the moment the programs are
attached until the graph runs. Two starts here (each a cold compile: the
suite's time budget); ``scripts/bench_startup_loss.py`` runs ten.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ebpf_unavailable, shared_path
from tests.live.reload_helpers import FILE_WRITER, health_records, op_log, start_agent_env, stop_agent

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

STARTS = 2
RATE = 200


def _config(work: Path, rules: Path) -> str:
    logs = work / "logs"
    return f"""
[scanner]
sigma_rules_path = "{rules}"
yara_enabled = false
[ioc]
enabled = false
[logging]
directory = "{logs}"
[alerts]
directory = "{logs}"
[events]
enabled = true
directory = "{logs}"
categories = ["file_event"]
[health]
interval_secs = 1
[sigma]
cache_dir = "{work / 'cold-cache'}"
[agent]
state_directory = "{work / 'state'}"
"""


@pytest.mark.parametrize("start", range(STARTS))
def test_cold_start_with_sigmahq_loses_no_file_record(tmp_path: Path, start: int) -> None:
    rules = shared_path("sigma", "rules")
    target = tmp_path / "written"
    target.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", FILE_WRITER, str(target), str(RATE)])
    try:
        proc = start_agent_env(tmp_path, _config(tmp_path, rules), {}, timeout=300)
        logs = tmp_path / "logs"
        text = op_log(logs)
        assert "(cached)" not in text.split("edr started")[0], "the Sigma cache was not cold"
        code = stop_agent(proc)
    finally:
        writer.kill()
        writer.wait()
    assert code == 0, op_log(logs)[-3000:]
    final = [h for h in health_records(logs) if h.get("final")]
    assert final, "no final health record"
    source = final[-1]["actors"]["source"]
    # lost at start: from the attach until the graph ran (read when the drain handed over)
    assert source["startup"]["lost"]["file"] == 0, source
    assert source["startup"]["full"] is False, source
    # the writer's files are in the event stream
    written = [orjson.loads(line) for f in logs.glob("events.json.*") for line in f.read_bytes().splitlines()
               if str(target).encode() in line]
    assert written, "no file event of the writer was recorded"
