"""`edr run` with SigmaHQ's own Linux rules (../shared): real actions fire the published rules.

The agent loads every rule under ``../shared/sigma/rules/linux`` (the auditd
and builtin ones load inert: no collector here feeds them) and must raise
the SigmaHQ rule a real action triggers, with the process context of the
action, within one second.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED, ebpf_unavailable
from tests.live.agent import read_alerts, start_agent, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

LINUX_RULES = SHARED / "sigma" / "rules" / "linux"
SHELLS = ("/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/dash")




@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    if not LINUX_RULES.is_dir():
        pytest.skip(f"SigmaHQ rules not available at {LINUX_RULES}")
    work = tmp_path_factory.mktemp("sigmahq-agent")
    proc, logs = start_agent(work, f"""
[scanner]
sigma_rules_path = "{LINUX_RULES}"
yara_enabled = false
[ioc]
enabled = false
[logging]
directory = "{work / 'logs'}"
[alerts]
directory = "{work / 'logs'}"
[sigma]
cache_dir = "{work / 'cache'}"
""", timeout=180)
    yield proc, logs
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_new_cron_file_fires_sigmahq_rule_within_one_second(agent: tuple[Any, Path]) -> None:
    _proc, logs = agent
    path = Path(f"/etc/cron.d/edr-sigmahq-{uuid.uuid4().hex[:8]}")
    t0 = time.monotonic()
    subprocess.run(["/bin/sh", "-c", f"echo '# test' > {path}"], check=True)
    try:
        hits = wait_for(lambda: [a for a in read_alerts(logs) if a.get("rule.name") == "New Cron File Created"
                                  and a.get("file.path") == str(path)], 5.0)
        latency = time.monotonic() - t0
        assert hits, "SigmaHQ's 'New Cron File Created' did not fire"
        assert latency <= 1.0, f"alert took {latency:.3f}s"
        a = hits[0]
        assert a["rule.engine"] == "sigma" and a["process.executable"] in SHELLS
        assert "attack.t1053.003" in a["tags"]
        assert "T1053.003" in a["threat.technique.id"]
    finally:
        path.unlink(missing_ok=True)


def test_base64_decode_fires_sigmahq_rule_with_process_context(agent: tuple[Any, Path]) -> None:
    _proc, logs = agent
    marker = uuid.uuid4().hex[:8]
    subprocess.run(["/bin/sh", "-c", f"echo ZWRy | /usr/bin/base64 -d > /dev/null; echo {marker} > /dev/null"],
                   check=True)
    hits = wait_for(lambda: [a for a in read_alerts(logs) if a.get("rule.name") == "Decode Base64 Encoded Text"], 5.0)
    assert hits, "SigmaHQ's 'Decode Base64 Encoded Text' did not fire"
    a = hits[-1]
    assert a["process.executable"] == "/usr/bin/base64"
    assert a["process.command_line"] == "/usr/bin/base64 -d"
    assert a["process.parent.executable"] in SHELLS
    assert marker in a["process.parent.command_line"]
    assert a["user.name"] == "root"
