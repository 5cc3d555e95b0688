"""The daily alert file: UTC rotation, 0600, write errors that lose and duplicate nothing; the writer actor."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

import edr.alerts.actor as alerts_actor
from edr.alerts.actor import AlertWriter
from edr.alerts.alert_lines import AlertLines
from edr.alerts.chain import AlertChain
from edr.alerts.daily_file import DailyFile
from edr.alerts.ecs import HostInfo
from edr.detect.alert import Alert
from edr.event import Event
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort


def ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def lines(prefix: str, n: int) -> list[bytes]:
    return [b'{"n":"%s-%d"}\n' % (prefix.encode(), i) for i in range(n)]


def test_rotation_at_utc_midnight(tmp_path: Path) -> None:
    now = [ts("2026-03-01 23:59:59.900")]
    f = DailyFile(tmp_path / "logs", "alerts.json", clock=lambda: now[0])
    f.write(lines("a", 2))
    now[0] = ts("2026-03-02 00:00:00.001")
    f.write(lines("b", 1))
    now[0] = ts("2026-03-02 23:59:59.999")
    f.write(lines("c", 1))
    now[0] = ts("2026-03-03 00:00:00.000")
    f.write(lines("d", 1))
    f.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["alerts.json.2026-03-01", "alerts.json.2026-03-02", "alerts.json.2026-03-03"]
    assert (tmp_path / "logs/alerts.json.2026-03-01").read_bytes() == b"".join(lines("a", 2))
    assert (tmp_path / "logs/alerts.json.2026-03-02").read_bytes() == b"".join(lines("b", 1) + lines("c", 1))
    assert (tmp_path / "logs/alerts.json.2026-03-03").read_bytes() == b"".join(lines("d", 1))
    assert f.lines_written == 5 and f.errors == 0


def test_rotation_uses_utc_not_local_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    import time as _time

    _time.tzset()
    try:
        f = DailyFile(tmp_path, "alerts.json", clock=lambda: ts("2026-03-01 12:00:00.000"))
        f.write(lines("x", 1))
        assert (tmp_path / "alerts.json.2026-03-01").is_file()
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_mode_0600_new_file_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        f = DailyFile(tmp_path / "d", "alerts.json")
        f.write(lines("a", 1))
        assert _mode(f.current_path) == 0o600
    finally:
        os.umask(old)


def test_mode_0600_when_file_preexists_0644(tmp_path: Path) -> None:
    f = DailyFile(tmp_path, "alerts.json")
    path = f.current_path
    path.write_bytes(b'{"old":1}\n')
    os.chmod(path, 0o644)
    f.write(lines("a", 1))
    assert _mode(path) == 0o600
    assert path.read_bytes() == b'{"old":1}\n' + b"".join(lines("a", 1))  # appended, not truncated


def test_directory_removed_mid_run_reopens(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    f = DailyFile(d, "alerts.json")
    f.write(lines("a", 2))
    shutil.rmtree(d)
    f.write(lines("b", 3))
    assert f.current_path.read_bytes() == b"".join(lines("b", 3))
    assert _mode(f.current_path) == 0o600


def test_directory_replaced_by_a_file_then_recovers(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    f = DailyFile(d, "alerts.json")
    f.write(lines("a", 2))
    shutil.rmtree(d)
    d.write_text("not a directory")
    with pytest.raises(OSError):
        f.write(lines("b", 2))
    with pytest.raises(OSError):
        f.write(lines("c", 1))  # accepted and kept pending too
    assert f.pending == sum(map(len, lines("b", 2) + lines("c", 1)))
    assert f.errors == 2
    d.unlink()
    f.flush()
    assert f.pending == 0
    assert f.current_path.read_bytes() == b"".join(lines("b", 2) + lines("c", 1))
    assert f.lines_written == 5


def test_enospc_and_short_writes_lose_and_duplicate_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = DailyFile(tmp_path, "alerts.json")
    real_write = os.write
    script = iter(["short", "enospc", "enospc", "short", "enospc"])

    def flaky(fd: int, data: bytes) -> int:
        step = next(script, "ok")
        if step == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        if step == "short":
            return real_write(fd, bytes(data[: len(data) // 3 + 1]))  # part of a line
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky)
    expected = []
    failures = 0
    for i in range(6):
        batch = lines(f"batch{i}", 4)
        expected += batch
        try:
            f.write(batch)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failures += 1
    while f.pending:
        f.flush()
    monkeypatch.setattr(os, "write", real_write)
    data = f.current_path.read_bytes()
    assert data == b"".join(expected)
    assert failures == 3 and f.errors == 3
    assert [orjson.loads(x) for x in data.splitlines()] == [orjson.loads(x) for x in expected]


def _alert(i: int) -> Alert:
    event = Event("network_connection", "linux", {"ProcessId": i, "Image": "/usr/bin/nc", "DestinationPort": 4444},
                  1_763_000_000.0 + i, seq=i, origin={"log.file.path": "x.ndjson", "edr.log.line": i})
    return Alert(rule_id="R-1", rule_name="test rule", severity="high", engine="simple", event=event)


async def test_alert_writer_retries_until_the_disk_is_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(alerts_actor, "_RETRY_FIRST", 0.01)
    monkeypatch.setattr(alerts_actor, "_RETRY_MAX", 0.02)
    d = tmp_path / "logs"
    d.write_text("in the way")  # the directory cannot be created: every write fails
    file = DailyFile(d, "alerts.json")
    log = logging.getLogger("edr.test.writer")
    writer = AlertWriter("alerts", file, AlertLines(HostInfo("h", "linux"), AlertChain()), log=log)
    edge = Edge("detect.alerts->alerts.in", 2, Policy.BLOCK)
    port = InPort("alerts.in")
    port.attach(edge)
    caplog.set_level(logging.ERROR, logger="edr.test.writer")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, Ports(inputs={"in": port}, outputs={}))
            for b in range(3):
                await edge.send([_alert(b * 3 + k) for k in range(3)])
            # the writer is stuck retrying its first batch; the edge holds the next two and is full
            while len(caplog.records) < 3:
                await trio.sleep(0.01)
            assert writer.alerts == 0 and edge.statistics().depth == 6
            with trio.move_on_after(0.1) as scope:
                await edge.send([_alert(9 + k) for k in range(3)])
            assert scope.cancelled_caught  # backpressure: the sender waits, nothing is dropped
            d.unlink()  # the disk is back
            await edge.send([_alert(9 + k) for k in range(3)])
            edge.close()
    written = [orjson.loads(x) for x in file.current_path.read_bytes().splitlines()]
    assert [a["edr.log.line"] for a in written] == list(range(12))
    assert writer.alerts == 12 and file.errors >= 3
    assert "writing" in caplog.records[0].getMessage() and "retrying" in caplog.records[0].getMessage()
    assert edge.statistics().dropped == 0


async def test_an_alert_is_written_while_the_chain_anchor_is_being_saved(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The anchor's save (write, fsync, rename: slow on a busy disk) runs beside the writer, never in its way:
    the second alert reaches the file while the save the first one started is still stuck in its thread."""
    import threading

    from edr.alerts.actor import ChainAnchor
    from edr.alerts.chain_recovery import Anchor, load_anchor
    from edr.platform.private_files import PrivateDir

    real_save = alerts_actor.save_anchor
    release = threading.Event()
    saving = threading.Event()

    def stuck_save(state: PrivateDir, anchor: Anchor) -> None:
        saving.set()
        # a disk that takes its time (bounded: a writer that waits for this must fail the test, not hang it)
        release.wait(20)
        real_save(state, anchor)

    monkeypatch.setattr(alerts_actor, "save_anchor", stuck_save)
    file = DailyFile(tmp_path / "logs", "alerts.json")
    anchor = ChainAnchor(PrivateDir(tmp_path / "state"), "family", None, logging.getLogger("edr.test.anchor"))
    writer = AlertWriter("alerts", file, AlertLines(HostInfo("h", "linux"), AlertChain()),
                         log=logging.getLogger("edr.test.writer"), anchor=anchor, clock=lambda: 0.0)
    edge = Edge("detect.alerts->alerts.in", 4, Policy.BLOCK)
    port = InPort("alerts.in")
    port.attach(edge)

    def written() -> int:
        return len(file.current_path.read_bytes().splitlines()) if file.current_path.exists() else 0

    with trio.fail_after(10):  # a guard against a hang, not a timing assertion
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, Ports(inputs={"in": port}, outputs={}))
            await edge.send([_alert(0)])
            while not saving.is_set():  # the first alert's anchor save is under way, and stuck
                await trio.sleep(0.005)
            await edge.send([_alert(1)])
            while written() < 2:
                await trio.sleep(0.005)
            assert saving.is_set() and not release.is_set() and anchor.saves == 0
            release.set()
            edge.close()
    saved, note = load_anchor(tmp_path / "state")
    assert note is None and saved is not None and saved.seq == 2  # at close: everything written
    assert writer.alerts == 2 and writer.unwritten() == {"alerts": 0}
