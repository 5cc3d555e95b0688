"""A directory the agent must write that cannot be written stops `edr run` at start: exit 2, one line naming it.

Real obstacles: a regular file where the log directory should be, and the
alert directory on a read-only bind mount (in a private mount namespace of
the agent's own, so nothing else sees it). Root is needed for the sensor's
preconditions, which are checked first, and for the mount.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ebpf_unavailable

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]


def _config(work: Path, logs: Path, alerts: Path) -> Path:
    conf = work / "config.toml"
    conf.write_text(f"""
[logging]
directory = "{logs}"
[alerts]
directory = "{alerts}"
[agent]
state_directory = "{work / 'state'}"
[sigma]
cache_dir = "{work / 'cache'}"
""")
    return conf


def _run(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


def test_a_file_in_the_way_of_the_log_directory(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.write_text("not a directory\n")
    conf = _config(tmp_path, logs, tmp_path / "alerts")
    result, _secs = _run([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(logs) in lines[0] and "logging.directory" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "edr.lock").exists(), "it went on past the directory check"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_read_only_alert_directory(tmp_path: Path) -> None:
    logs, alerts = tmp_path / "logs", tmp_path / "alerts"
    alerts.mkdir(mode=0o700)
    conf = _config(tmp_path, logs, alerts)
    script = (f"mount --bind -o ro {alerts} {alerts} && exec {sys.executable} -m edr run --config {conf} "
              f"--no-console")
    result, _secs = _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(alerts) in lines[0] and "alerts.directory" in lines[0] and "Read-only" in lines[0], lines[0]
    # the log directory was writable: the reason is in the operational log too, and the sensor never started
    text = "".join(f.read_text() for f in logs.glob("edr.log.*"))
    assert str(alerts) in text and "edr started" not in text and "enricher:" not in text
