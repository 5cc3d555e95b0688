"""`edr doctor` and the alert sinks: each destination connected to for real (a listening socket, a closed port,
a local datagram socket), nothing sent."""

from __future__ import annotations

import socket
from pathlib import Path

import attrs

from edr.config import Config, SyslogConfig, WebhookConfig
from edr.doctor.assess import Verdict, sink_checks
from edr.doctor.probes import probe_sinks


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on leaving: nothing listens there


def test_each_destination_is_connected_to(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    up = listener.getsockname()[1]
    down = _closed_port()
    dev_log = tmp_path / "log.sock"
    local = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    local.bind(str(dev_log))
    try:
        config = attrs.evolve(Config(), syslog=SyslogConfig(targets=[
            f"tcp://127.0.0.1:{up}", f"tcp://127.0.0.1:{down}", "udp://127.0.0.1:514", f"unix://{dev_log}"]),
            webhook=WebhookConfig(urls=[f"http://127.0.0.1:{up}/hook?token=secret"]))
        facts = probe_sinks(config, timeout=2.0)
    finally:
        listener.close()
        local.close()
    assert [(f.section, f.reachable) for f in facts] == [
        ("syslog", True), ("syslog", False), ("syslog", None), ("syslog", True), ("webhook", True)]
    assert "secret" not in facts[-1].destination and "refused" in facts[1].detail.lower()
    checks = sink_checks(tuple(facts))
    assert [c.verdict for c in checks] == [Verdict.PASS, Verdict.WARN, Verdict.PASS, Verdict.PASS, Verdict.PASS]
    assert "spool" in (checks[1].reason or "")


def test_no_sink_configured_is_one_passing_check() -> None:
    [check] = sink_checks(tuple(probe_sinks(Config())))
    assert check.verdict == Verdict.PASS and "local ECS file" in check.found
