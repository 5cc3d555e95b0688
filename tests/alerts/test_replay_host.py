"""A replayed alert names the recorded host and says it was replayed; a live one names this host."""

from __future__ import annotations

import socket

from edr.alerts.ecs import HostInfo, to_ecs
from edr.detect.alert import Alert
from edr.event import Event


def _alert(product: str, origin: dict[str, object] | None = None, **fields: object) -> Alert:
    event = Event(category="process_creation", product=product, fields={"Image": "C:\\x.exe", **fields},
                  timestamp=1_763_000_000.0, origin=origin)
    return Alert("R-1", "rule", "high", "sigma", event)


def test_replayed_windows_record_names_its_computer() -> None:
    doc = to_ecs(_alert("windows", {"winlog.computer_name": "IEWIN7", "log.file.path": "a.evtx"}),
                 HostInfo(replay=True))
    assert (doc["host.name"], doc["host.os.type"], doc["edr.replay"]) == ("IEWIN7", "windows", True)


def test_replayed_record_without_a_computer_names_no_host() -> None:
    doc = to_ecs(_alert("linux"), HostInfo(replay=True))
    assert "host.name" not in doc and doc["host.os.type"] == "linux" and doc["edr.replay"] is True
    doc = to_ecs(_alert("windows", Computer="DC01"), HostInfo(replay=True))
    assert doc["host.name"] == "DC01"


def test_live_alert_names_this_host_and_is_not_marked() -> None:
    doc = to_ecs(_alert("linux"), HostInfo())
    assert doc["host.name"] == socket.gethostname() and "edr.replay" not in doc
