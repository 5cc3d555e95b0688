"""The sd_notify protocol over a real NOTIFY_SOCKET (issue #14, point 4)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from edr.health import watchdog_task
from edr.platform.linux import systemd
from tests.conftest import REPO, ebpf_unavailable
from tests.live.agent import wait_for
from tests.service.notify_listener import NotifyListener


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    lst = NotifyListener(tmp_path, abstract=request.param == "abstract")
    monkeypatch.setenv("NOTIFY_SOCKET", lst.address)
    yield lst
    lst.close()


def test_ready_watchdog_stopping(listener: NotifyListener) -> None:
    assert systemd.notify_ready()
    assert systemd.notify_watchdog()
    assert systemd.notify_stopping()
    assert listener.wait_for("STOPPING=1", 2.0)
    assert listener.lines() == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_reloading_carries_the_monotonic_time_then_ready(listener: NotifyListener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.notify_reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.notify_ready()
    assert listener.wait_for("READY=1", 2.0)
    # one datagram for the reload (systemd reads both lines together), then READY=1
    texts = [text for _t, text in listener.messages]
    assert len(texts) == 2 and texts[1] == "READY=1"
    key, usec = texts[0].split("\n")
    assert key == "RELOADING=1"
    name, _, value = usec.partition("=")
    assert name == "MONOTONIC_USEC" and before <= int(value) <= after


def test_reloading_with_a_given_time(listener: NotifyListener) -> None:
    assert systemd.notify_reloading(monotonic_usec=123456789)
    assert listener.wait_for("MONOTONIC_USEC=123456789", 2.0)


def test_nothing_is_sent_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify_ready() is False
    assert systemd.notify_reloading() is False


def test_an_absent_socket_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert systemd.notify_ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "@edr-test-nobody-listens-here")
    assert systemd.notify_watchdog() is False


def test_a_manager_that_does_not_read_never_blocks_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop calls notify: with the manager's queue full it must return False, not block."""
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        results: list[bool] = []

        def flood() -> None:
            # the kernel queues at most net.unix.max_dgram_qlen datagrams per socket
            results.extend(systemd.notify_watchdog() for _ in range(5000))

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        t.join(timeout=10)
        assert not t.is_alive(), "notify blocked on a full notification socket"
        assert results[0] is True and results[-1] is False


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("3000000", None, 1.5),
    ("3000000", "self", 1.5),
    ("3000000", "1", None),  # inherited from a parent that was the watched process
    ("0", None, None),       # would make the ping loop spin
    ("-5", None, None),
    ("soon", None, None),
    (None, None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert systemd.watchdog_interval() == expected


async def test_the_watchdog_task_pings_at_half_the_timeout(listener: NotifyListener,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pings every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with trio.move_on_after(0.5):
        await watchdog_task(None)  # type: ignore[arg-type]  # the supervisor is not used for pings
    assert listener.wait_for("WATCHDOG=1", 2.0, count=8)
    assert len(listener.lines()) <= 12


@pytest.mark.root
@pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))
@pytest.mark.slow
def test_edr_run_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """A real ``edr run``: READY=1 once running, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM."""
    listener = NotifyListener(tmp_path)
    logs = tmp_path / "logs"
    conf = tmp_path / "config.toml"
    conf.write_text(f"""
[agent]
state_directory = "{tmp_path / 'state'}"
[scanner]
sigma_rules_path = "{REPO / 'rules' / 'sigma'}"
yara_rules_path = "{REPO / 'rules' / 'yara'}"
[simple]
rules_path = "{REPO / 'rules' / 'edr-rules.toml'}"
[ioc]
enabled = false
[logging]
directory = "{logs}"
[alerts]
directory = "{logs}"
[sigma]
cache_dir = "{tmp_path / 'cache'}"
""")
    env = {**os.environ, "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert listener.wait_for("READY=1", 120), proc.stderr.read().decode()[-3000:] if proc.poll() else ""
        ready_at = next(t for t, text in listener.messages if "READY=1" in text.splitlines())
        # READY=1 means running: the log already says so
        assert wait_for(lambda: any("edr started" in f.read_text() for f in logs.glob("edr.log.*")), 1.0)
        assert listener.wait_for("WATCHDOG=1", 5.0, count=listener.lines().count("WATCHDOG=1") + 3)
        pings = [t for t, text in listener.messages if text == "WATCHDOG=1" and t > ready_at]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert gaps and max(gaps) < 1.0, gaps  # within the watchdog timeout, about every 0.5 s
        assert "STOPPING=1" not in listener.lines()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert listener.wait_for("STOPPING=1", 2.0)
        assert listener.lines().index("READY=1") < listener.lines().index("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
