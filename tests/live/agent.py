"""Running a real `edr run` for the live tests: start it, read its alerts, wait for them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

T = TypeVar("T")


def read_alerts(logs: Path) -> list[dict[str, Any]]:
    """Every alert written so far under ``logs``."""
    out = []
    for f in sorted(logs.glob("alerts.json.*")):
        out += [orjson.loads(line) for line in f.read_bytes().splitlines() if line.strip()]
    return out


def wait_for(pred: Callable[[], T], timeout: float, step: float = 0.02) -> T:
    """Poll ``pred`` until it returns something true or ``timeout`` passes; its last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def start_agent(work: Path, config: str, timeout: float) -> tuple[subprocess.Popen[bytes], Path]:
    """`edr run` with ``config`` (logs and alerts in ``work/logs``), once it has logged that it started."""
    conf = work / "config.toml"
    if "[agent]" not in config:  # its own instance lock, not the installed layout's
        config += f'\n[agent]\nstate_directory = "{work / "state"}"\n'
    conf.write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    logs = work / "logs"

    def started() -> bool:
        return any("edr started" in f.read_text() for f in logs.glob("edr.log.*"))

    if not wait_for(started, timeout, 0.2):
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"agent did not start: rc={proc.returncode} {err.decode()[-3000:]}")
    time.sleep(0.5)
    return proc, logs
