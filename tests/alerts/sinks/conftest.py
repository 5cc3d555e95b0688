"""Helpers for the sink tests: recordings that raise alerts, a configuration with the sink sections, replays.

:func:`sink_config` gives a configuration with the ``[syslog]`` and
``[webhook]`` sections set from keyword dictionaries.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

from edr.alerts.sinks.document import alert_id
from edr.config import Config, SyslogConfig, WebhookConfig, load_config
from edr.runtime.supervisor import Supervisor
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph

#: Only the simple engine, with its built-in rules (a file under /etc/cron.d/ raises BUILTIN-CRON).
BASE_CONFIG = """\
[scanner]
sigma_enabled = false
yara_enabled = false
[ioc]
enabled = false
[simple]
rules_path = ""
"""


def sink_config(workdir: Path, *, syslog: dict[str, Any] | None = None, webhook: dict[str, Any] | None = None,
                **overrides: Any) -> Config:
    """The configuration of ``workdir/edr.toml`` (:data:`BASE_CONFIG`), alerts under ``workdir/out``, with the sink
    sections given as keyword dictionaries."""
    config_file = workdir / "edr.toml"
    if not config_file.exists():
        config_file.write_text(BASE_CONFIG)
    base = load_config(str(config_file), environ={},
                       overrides={"alerts.directory": str(workdir / "out"), **overrides}).config
    return attrs.evolve(base, syslog=SyslogConfig(**(syslog or {})), webhook=WebhookConfig(**(webhook or {})))


def cron_events(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` file events, each raising one BUILTIN-CRON alert (each a distinct alert: path, time and seq differ)."""
    return [{"ts": 1_763_000_000.0 + i * 0.001, "seq": i + 1, "category": "file_event", "product": "linux",
             "fields": {"ProcessId": 7000 + i % 50, "Image": "/usr/bin/vim", "User": "root",
                        "TargetFilename": f"/etc/cron.d/job-{i}", "ParentProcessId": 700,
                        "ParentImage": "/usr/bin/bash", "CommandLine": f"vim /etc/cron.d/job-{i}"}}
            for i in range(start, start + n)]


def write_recording(path: Path, events: list[dict[str, Any]]) -> Path:
    with open(path, "wb") as fh:
        for event in events:
            fh.write(orjson.dumps(event) + b"\n")
    return path


def alert_docs(directory: Path) -> list[dict[str, Any]]:
    """Every alert document of the daily alert files in ``directory``."""
    docs = []
    for f in sorted(directory.glob("alerts.json.*")):
        docs.extend(orjson.loads(line) for line in f.read_bytes().splitlines())
    return docs


def file_alert_ids(directory: Path) -> list[str]:
    """The ``event.id`` a sink gives each alert of the alert files (the id the writer's document has too)."""
    return [doc["event.id"] if "event.id" in doc else alert_id(doc) for doc in alert_docs(directory)]


def replay_in_process(config: Config, files: list[Path], *, stop_timeout: float | None = None,
                      background: list[Any] | None = None) -> Supervisor:
    """Replay ``files`` through the replay graph (alerts to the configured alert directory, sinks as configured)."""
    ctx = AgentContext.create(config, "replay", files=[str(f) for f in files])
    sup = Supervisor(mode_graph("replay"), ctx, stop_timeout=stop_timeout)
    code = trio.run(functools.partial(sup.run, handle_signals=False, background=background or []))
    assert code == 0, (code, sup.failed, sup.unwritten())
    return sup


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDR")}
    env.update(extra)
    return env


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=edr test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
        os.chmod(d / f"{name}.key", 0o600)
    return d
