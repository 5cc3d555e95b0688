"""Shared helpers for the foundation tests: event records, a tmp working directory, running `edr`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

EDR = [sys.executable, "-m", "edr"]

#: Sigma and IOC engines are other issues; the foundation runs without them. Paths are relative to
#: this file, which lives in the working directory, never the installed layout's; a replay's alerts
#: and log go where its --output says.
BASE_CONFIG = """\
[scanner]
sigma_enabled = false
[ioc]
enabled = false
[simple]
rules_path = "rules/edr-rules.toml"
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any EDR configuration of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDR")}
    env.update(extra)
    return env


def run_edr(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDR, *args], cwd=cwd, env=env if env is not None else clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def proc(line_fields: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    fields = {"ProcessId": 4242, "Image": "/usr/bin/ls", "CommandLine": "ls -la /tmp", "User": "alice",
              "ParentProcessId": 4000, "ParentImage": "/usr/bin/bash", "ParentCommandLine": "-bash",
              "CurrentDirectory": "/home/alice"}
    fields.update(line_fields or {})
    return {"ts": 1_763_000_000.5, "seq": 1, "category": "process_creation", "product": "linux",
            "fields": fields, **kw}


def net(port: int, initiated: str = "true", **extra: Any) -> dict[str, Any]:
    fields = {"ProcessId": 5151, "Image": "/usr/bin/nc", "User": "root", "Protocol": "tcp",
              "Initiated": initiated, "SourceIp": "10.0.0.5", "SourcePort": 40000, "DestinationIp": "203.0.113.9",
              "DestinationPort": port, "ParentProcessId": 5000, "ParentImage": "/usr/bin/bash",
              "CommandLine": f"nc 203.0.113.9 {port}"}
    fields.update(extra)
    return {"ts": 1_763_000_001.25, "seq": 2, "category": "network_connection", "product": "linux",
            "fields": fields}


def file_event(path: str, category: str = "file_event", **extra: Any) -> dict[str, Any]:
    fields = {"ProcessId": 777, "Image": "/usr/bin/vim", "User": "root", "TargetFilename": path,
              "ParentProcessId": 700, "ParentImage": "/usr/bin/bash", "CommandLine": f"vim {path}"}
    fields.update(extra)
    return {"ts": 1_763_000_002.0, "seq": 3, "category": category, "product": "linux", "fields": fields}


def write_ndjson(path: Path, records: list[Any]) -> Path:
    with open(path, "wb") as fh:
        for r in records:
            fh.write(r if isinstance(r, bytes) else orjson.dumps(r))
            fh.write(b"\n")
    return path


def read_alerts(directory: Path, name: str = "alerts.json") -> list[dict[str, Any]]:
    """Every alert line of every daily file; every line must be whole JSON."""
    out = []
    for f in sorted(directory.glob(f"{name}.*")):
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f"{f}: last line is half-written"
        out.extend(orjson.loads(line) for line in data.splitlines())
    return out


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory (logs/ land here) with a config that turns Sigma and IOC off."""
    (tmp_path / "edr.toml").write_text(BASE_CONFIG)
    monkeypatch.chdir(tmp_path)
    for k in list(os.environ):
        if k.startswith("EDR"):
            monkeypatch.delenv(k)
    return tmp_path
