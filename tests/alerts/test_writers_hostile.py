"""Every file the agent writes as root, attacked by a real unprivileged user and a real full disk.

The attacker is the user ``nobody`` (``setpriv``); the writers are the real
ones (:class:`DailyFile`, the alert and event writers of a real ``edr replay``,
the operational log of :func:`setup_logging`); the full disk is a real tmpfs
and the crash a real SIGKILL.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from edr.alerts.daily_file import DailyFile, utc_day
from edr.oplog import setup_logging
from edr.platform.private_files import UnsafePath
from tests.cli_helpers import BASE_CONFIG, EDR, clean_env, net, write_ndjson

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user and to mount")


def as_nobody(*argv: str) -> None:
    """Run ``argv`` as the unprivileged user nobody (what an attacker on the host can do)."""
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv], check=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def today() -> str:
    return utc_day(time.time())


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
             ) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"{what}: the process ended with {proc.returncode}: {err.decode()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def edr_logger() -> Iterator[None]:
    """Puts the ``edr`` logger back as it was after a test that called setup_logging (and closes its files)."""
    root = logging.getLogger("edr")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        if h not in saved[0]:
            h.close()
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    root.propagate = saved[2]


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp that nobody can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="edr-hostile-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def victim(open_tmp: Path) -> Path:
    """A root-owned 0644 file the attacker would like root to append to or chmod."""
    path = open_tmp / "root-owned"
    path.write_bytes(b"root data\n")
    path.chmod(0o644)
    return path


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == b"root data\n"
    assert mode(victim) == 0o644
    assert victim.stat().st_uid == 0


def nobody_dir(parent: Path, name: str) -> Path:
    """A directory nobody owns (the agent's directory, created by the attacker before the agent ran)."""
    path = parent / name
    path.mkdir()
    os.chown(path, NOBODY, NOBODY)
    return path


def repair(directory: Path) -> None:
    """What the administrator does when told the directory is unsafe: root owns it, 0700."""
    os.chown(directory, 0, 0)
    directory.chmod(0o700)


def lines(prefix: str, n: int) -> list[bytes]:
    return [b'{"n":"%s-%d"}\n' % (prefix.encode(), i) for i in range(n)]


# -- DailyFile ---------------------------------------------------------------------------------------------------


@pytest.mark.root
@as_root
def test_daily_file_never_writes_through_a_link_planted_by_nobody(open_tmp: Path, victim: Path) -> None:
    alerts = nobody_dir(open_tmp, "alerts")
    f = DailyFile(alerts, "alerts.json")
    as_nobody("ln", "-s", str(victim), str(f.current_path))
    with pytest.raises(UnsafePath, match="owned by nobody"):
        f.write(lines("a", 3))
    assert_untouched(victim)
    assert f.pending == sum(map(len, lines("a", 3)))
    repair(alerts)  # the directory is fixed but the link is still there
    with pytest.raises(UnsafePath, match="symbolic link"):
        f.write(lines("b", 2))
    assert_untouched(victim)
    assert f.errors == 2 and f.statistics()["refused"] == 2
    f.current_path.unlink()
    f.flush()
    assert f.current_path.read_bytes() == b"".join(lines("a", 3) + lines("b", 2))  # a fresh file, nothing lost
    assert mode(f.current_path) == 0o600 and not f.current_path.is_symlink()
    assert_untouched(victim)
    f.close()


@pytest.mark.root
@as_root
def test_daily_file_refuses_a_hard_link_to_a_root_file(open_tmp: Path, victim: Path) -> None:
    # the attacker cannot hard-link a root file (protected_hardlinks) but root's own old links must not be written
    alerts = open_tmp / "alerts"
    f = DailyFile(alerts, "alerts.json")
    f.write(lines("a", 1))
    f.close()
    f.current_path.unlink()
    os.link(victim, f.current_path)
    with pytest.raises(UnsafePath, match="hard links"):
        f.write(lines("b", 1))
    assert_untouched(victim)


@pytest.mark.root
@as_root
def test_directory_planted_as_a_link_by_nobody_is_refused(open_tmp: Path) -> None:
    """The configured directory does not exist yet in a sticky /tmp: nobody creates it as a link to a root directory."""
    sticky = open_tmp / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    target = open_tmp / "root-dir"
    target.mkdir(mode=0o700)
    as_nobody("ln", "-s", str(target), str(sticky / "edr-logs"))
    f = DailyFile(sticky / "edr-logs", "alerts.json")
    with pytest.raises(UnsafePath, match=r"edr-logs is a symbolic link owned by nobody"):
        f.write(lines("a", 1))
    # root's own link, through nobody's: the link a target goes through counts too
    (open_tmp / "configured").symlink_to(sticky / "edr-logs")
    g = DailyFile(open_tmp / "configured", "alerts.json")
    with pytest.raises(UnsafePath, match=r"edr-logs is a symbolic link owned by nobody"):
        g.write(lines("b", 1))
    assert list(target.iterdir()) == []
    assert f.pending and g.pending
    # a link root made in a directory only root can write is followed as before
    (open_tmp / "root-link").symlink_to(target)
    h = DailyFile(open_tmp / "root-link", "alerts.json")
    h.write(lines("c", 1))
    h.close()
    assert [p.name for p in target.iterdir()] == [h.current_path.name]


def test_directories_are_created_0700_and_files_0600_under_umask_022(tmp_path: Path, edr_logger: None) -> None:
    old = os.umask(0o022)
    try:
        f = DailyFile(tmp_path / "a" / "b", "alerts.json")
        f.write(lines("a", 1))
        setup_logging("info", str(tmp_path / "l" / "m"), "edr.log", False)
        logging.getLogger("edr.test").info("hello")
    finally:
        os.umask(old)
        setup_logging("info", None, "", False)
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "l", tmp_path / "l" / "m"):
        assert mode(d) == 0o700, d
    assert mode(f.current_path) == 0o600
    [log] = (tmp_path / "l" / "m").iterdir()
    assert mode(log) == 0o600 and b"hello" in log.read_bytes()


# -- partial last lines --------------------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_partial_last_line_is_truncated_before_appending(tmp_path: Path) -> None:
    f = DailyFile(tmp_path, "alerts.json")
    path = f.current_path
    path.write_bytes(b'{"a":1}\n{"a":2}\n{"a":3,"crash":"ther')  # what a SIGKILL on a full disk leaves
    logger = logging.getLogger("edr.alerts.daily_file")  # setup_logging elsewhere stops propagation to the root
    seen = _Records()
    logger.addHandler(seen)
    try:
        f.write(lines("x", 2))
    finally:
        logger.removeHandler(seen)
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n' + b"".join(lines("x", 2))
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()]
    stats = f.statistics()
    assert stats["partial_lines_truncated"] == 1 and stats["partial_bytes_truncated"] == 20
    [record] = [r for r in seen.records if "partial" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert str(path) in record.getMessage() and "20 bytes" in record.getMessage()
    # a file that ends on a whole line is appended to as it is, and nothing is counted
    f.close()
    f.write(lines("y", 1))
    assert f.statistics()["partial_lines_truncated"] == 1
    assert path.read_bytes().endswith(b"".join(lines("x", 2) + lines("y", 1)))


def test_partial_line_without_any_newline_and_beyond_one_read(tmp_path: Path) -> None:
    f = DailyFile(tmp_path, "events.json")
    whole = b"".join(lines("old", 5000))
    f.current_path.write_bytes(whole + b"z" * 200_000)  # a partial line longer than one read back
    f.write(lines("new", 1))
    assert f.current_path.read_bytes() == whole + b"".join(lines("new", 1))
    g = DailyFile(tmp_path / "other", "events.json")
    (tmp_path / "other").mkdir(mode=0o700)
    g.current_path.write_bytes(b'{"never":"finished')
    g.write(lines("new", 1))
    assert g.current_path.read_bytes() == b"".join(lines("new", 1))
    assert g.statistics()["partial_bytes_truncated"] == len(b'{"never":"finished')


@pytest.mark.root
@as_root
def test_partial_line_of_an_append_only_file_is_ended_not_merged(tmp_path: Path) -> None:
    f = DailyFile(tmp_path, "alerts.json")
    path = f.current_path
    path.write_bytes(b'{"a":1}\n{"a":2,"cut')
    path.chmod(0o600)
    if subprocess.run(["chattr", "+a", str(path)], capture_output=True).returncode != 0:
        pytest.skip("no chattr +a on this file system")
    try:
        f.write(lines("x", 1))
        f.close()
    finally:
        subprocess.run(["chattr", "-a", str(path)], check=True)
    assert path.read_bytes() == b'{"a":1}\n{"a":2,"cut\n' + b"".join(lines("x", 1))
    stats = f.statistics()
    assert stats["partial_lines_terminated"] == 1 and stats["partial_lines_truncated"] == 0


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts real 256 KiB tmpfs file systems (disks that fill up); all unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str) -> Path:
        mnt = tmp_path / name
        mnt.mkdir(mode=0o700)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # a file of a failed test still open


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` with a filler file, then free about ``leave`` bytes of it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 65536)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


@pytest.mark.root
@as_root
def test_a_line_half_written_on_a_full_disk_is_taken_back_so_rotation_leaves_whole_lines(
        small_disks: Callable[[str], Path]) -> None:
    """ENOSPC mid-line, then midnight: yesterday's file must not keep the half line, today's gets it whole."""
    small_tmpfs = small_disks("disk")
    now = [datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC).timestamp()]
    f = DailyFile(small_tmpfs / "alerts", "alerts.json", clock=lambda: now[0])
    f.write(lines("warm", 1))
    filler = fill(small_tmpfs, 6000)
    batch = [b'{"n":%d,"pad":"%s"}\n' % (i, b"p" * 300) for i in range(40)]  # ~13 KiB: more than is free
    with pytest.raises(OSError) as exc:
        f.write(batch)
    assert "No space left" in str(exc.value)
    yesterday = f.current_path
    data = yesterday.read_bytes()
    assert data.endswith(b"\n"), "a half-written line was left in the file"
    written = data.splitlines()
    assert 1 < len(written) < 41
    now[0] += 2  # midnight passes while the disk is full
    filler.unlink()
    f.flush()
    assert f.pending == 0
    assert yesterday.read_bytes() == data
    rest = f.current_path.read_bytes()
    assert f.current_path != yesterday and rest.endswith(b"\n")
    assert [orjson.loads(x) for x in written + rest.splitlines()][1:] == [orjson.loads(x) for x in batch]
    assert f.statistics()["partial_lines_truncated"] == 0  # its own half line is no crash remnant
    f.close()


def _alerting_events(path: Path, n: int, marker: int) -> Path:
    """``n`` connections to port 4444 (BUILTIN-SUSPICIOUS-PORT), each an alert; ``marker`` in their SourcePort."""
    return write_ndjson(path, [net(4444, ProcessId=100_000 * marker + i, SourcePort=marker) for i in range(n)])


def _writer_config(tmp_path: Path, alerts_dir: Path, events_dir: Path | None,
                   log_dir: Path) -> tuple[Path, list[str], dict[str, str]]:
    """A config, the replay options and the environment that put alerts, events and the log in three places."""
    cfg = tmp_path / "edr.toml"
    text = BASE_CONFIG
    env = clean_env(EDR__LOGGING__DIRECTORY=str(log_dir))
    if events_dir is not None:
        text += "[events]\nenabled = true\n"
        env["EDR__EVENTS__DIRECTORY"] = str(events_dir)
    cfg.write_text(text)
    return cfg, ["--config", str(cfg), "--output", str(alerts_dir), "--no-progress"], env


def _oplog(log_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("edr.log.*")))


@pytest.mark.root
@as_root
def test_kill_9_on_a_full_disk_then_restart_every_line_parses(tmp_path: Path,
                                                              small_disks: Callable[[str], Path]) -> None:
    # one disk each, so that both files hold lines of the first run when their disk fills
    alerts_disk, events_disk = small_disks("alerts-disk"), small_disks("events-disk")
    alerts_dir, events_dir, log_dir = alerts_disk / "alerts", events_disk / "events", tmp_path / "oplog"
    _cfg, opts, env = _writer_config(tmp_path, alerts_dir, events_dir, log_dir)
    fillers = [fill(alerts_disk, 100_000), fill(events_disk, 100_000)]
    first = _alerting_events(tmp_path / "first.ndjson", 3000, marker=1)  # ~2 MB of alerts: far more than fits
    proc = subprocess.Popen([*EDR, "replay", *opts, str(first)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: all(f"{name}: writing {directory}" in _oplog(log_dir) for name, directory in
                             (("alerts", alerts_dir), ("events", events_dir))), 60,
                 "both writers to retry on their full disk", proc)
        assert "No space left on device" in _oplog(log_dir)
        time.sleep(0.3)  # in the middle of the retries
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for filler in fillers:
        filler.unlink()  # space is back
    second = _alerting_events(tmp_path / "second.ndjson", 50, marker=2)
    r = subprocess.run([*EDR, "replay", *opts, str(second)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    [alerts_file] = alerts_dir.glob("alerts.json.*")
    [events_file] = events_dir.glob("events.json.*")
    for path in (alerts_file, events_file):
        data = path.read_bytes()
        assert data.endswith(b"\n")
        parsed = [orjson.loads(line) for line in data.splitlines()]  # raises on a merged or half line
        assert len(parsed) > 50
    alerts = [orjson.loads(line) for line in alerts_file.read_bytes().splitlines()]
    by_run = [a["source.port"] for a in alerts]
    assert by_run.count(2) == 50 and by_run.count(1) == len(alerts) - 50 > 0
    assert by_run[-50:] == [2] * 50


# -- the alert and event writers of a real replay -----------------------------------------------------------------


@pytest.mark.root
@as_root
def test_replay_never_writes_through_links_planted_for_alerts_and_events(tmp_path: Path, open_tmp: Path,
                                                                          victim: Path) -> None:
    out = nobody_dir(open_tmp, "out")
    log_dir = tmp_path / "oplog"
    _cfg, opts, env = _writer_config(tmp_path, out, out, log_dir)
    day = today()
    as_nobody("ln", "-s", str(victim), str(out / f"alerts.json.{day}"))
    as_nobody("ln", "-s", str(victim), str(out / f"events.json.{day}"))
    events = _alerting_events(tmp_path / "in.ndjson", 20, marker=3)
    proc = subprocess.Popen([*EDR, "replay", *opts, str(events)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def both_refused(reason: str) -> bool:
            log = _oplog(log_dir).splitlines()
            return all(any(f"{name}: writing {out}/{name}.json.{day} failed ({out}" in x and reason in x
                           for x in log) for name in ("alerts", "events"))

        wait_for(lambda: both_refused(f"{out}: owned by nobody"), 60, "both writers to refuse the directory", proc)
        assert_untouched(victim)
        repair(out)  # the links stay: the next retries must refuse them by name
        wait_for(lambda: both_refused(".json." + day + ": is a symbolic link"), 60, "the links to be refused", proc)
        assert_untouched(victim)
        for name in ("alerts", "events"):
            (out / f"{name}.json.{day}").unlink()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert_untouched(victim)
    for name in ("alerts", "events"):
        fresh = out / f"{name}.json.{day}"
        assert not fresh.is_symlink() and mode(fresh) == 0o600 and fresh.stat().st_uid == 0
        assert len([orjson.loads(x) for x in fresh.read_bytes().splitlines()]) == 20  # nothing accepted was lost


# -- the operational log ------------------------------------------------------------------------------------------


@pytest.mark.root
@as_root
def test_oplog_never_writes_through_a_link_planted_by_nobody(open_tmp: Path, victim: Path, edr_logger: None,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    log_dir = nobody_dir(open_tmp, "log")
    as_nobody("ln", "-s", str(victim), str(log_dir / f"edr.log.{today()}"))
    log = setup_logging("info", str(log_dir), "edr.log", False)
    try:
        for i in range(5):
            log.info("record %d", i)
        assert_untouched(victim)
        repair(log_dir)
        log.info("record 5")
        assert_untouched(victim)
        (log_dir / f"edr.log.{today()}").unlink()
        log.info("record 6")
    finally:
        setup_logging("info", None, "", False)
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    complaints = [x for x in err.splitlines() if "operational log" in x]
    assert str(log_dir) in complaints[0] and "owned by nobody" in complaints[0]
    assert len(complaints) == 2 and "writable again" in complaints[1] and "6 records" in complaints[1]
    fresh = log_dir / f"edr.log.{today()}"
    assert not fresh.is_symlink() and mode(fresh) == 0o600
    text = fresh.read_text()
    assert "record 6" in text and "record 4" not in text
    assert "6 records could not be written" in text
    assert_untouched(victim)


@pytest.mark.root
@as_root
def test_replay_with_a_link_planted_for_the_oplog_still_writes_every_alert(tmp_path: Path, open_tmp: Path,
                                                                          victim: Path) -> None:
    log_dir = nobody_dir(open_tmp, "log")
    as_nobody("ln", "-s", str(victim), str(log_dir / f"edr.log.{today()}"))
    _cfg, opts, env = _writer_config(tmp_path, tmp_path / "alerts", None, log_dir)
    events = _alerting_events(tmp_path / "in.ndjson", 10, marker=4)
    r = subprocess.run([*EDR, "replay", *opts, str(events)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Logging error" not in r.stderr and "Traceback" not in r.stderr
    [complaint] = [x for x in r.stderr.splitlines() if "operational log" in x]
    assert str(log_dir) in complaint and "owned by nobody" in complaint
    assert_untouched(victim)
    [alerts] = (tmp_path / "alerts").glob("alerts.json.*")
    assert len(alerts.read_bytes().splitlines()) == 10


def test_oplog_in_a_directory_that_cannot_be_written_says_so_once(tmp_path: Path, edr_logger: None,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    log_dir = tmp_path / "logs"
    log_dir.write_text("a file in the way")
    log = setup_logging("info", str(log_dir), "edr.log", False)
    try:
        for i in range(1000):
            log.warning("record %d", i)
        err = capfd.readouterr().err
        assert "Logging error" not in err and "Traceback" not in err
        [complaint] = err.splitlines()
        assert str(log_dir) in complaint and "Not a directory" in complaint
        log_dir.unlink()
        log.warning("back")
    finally:
        setup_logging("info", None, "", False)
    [again] = capfd.readouterr().err.splitlines()
    assert "writable again" in again and "1000 records" in again
    [path] = log_dir.iterdir()
    text = path.read_text().splitlines()
    assert "1000 records could not be written" in text[0] and "Not a directory" in text[0]
    assert text[1].endswith("back")


def test_oplog_failure_reports_are_rate_limited(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch, edr_logger: None) -> None:
    import edr.oplog as oplog

    now = [1000.0]
    monkeypatch.setattr(oplog, "_monotonic", lambda: now[0])
    (tmp_path / "logs").write_text("in the way")
    log = setup_logging("info", str(tmp_path / "logs"), "edr.log", False)
    try:
        for step in range(300):  # five minutes, one record a second
            now[0] += 1
            log.info("record %d", step)
    finally:
        setup_logging("info", None, "", False)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 5, err  # the first failure, then one reminder a minute
    assert "still" in err[1] and "61 records" in err[1]  # the first at t=1, this one at t=61


def test_oplog_cuts_a_partial_last_line_and_says_so_in_the_log(tmp_path: Path, edr_logger: None) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir(mode=0o700)
    path = log_dir / f"edr.log.{today()}"
    path.write_bytes(b"2026-12-02T00:00:00.000Z INFO edr: whole\n2026-12-02T00:00:01.000Z INFO edr: cut sh")
    log = setup_logging("info", str(log_dir), "edr.log", False)
    try:
        log.info("after the crash")
    finally:
        setup_logging("info", None, "", False)
    text = path.read_text().splitlines()
    assert text[0].endswith("edr: whole") and text[1].endswith("edr: after the crash")
    assert f"WARNING edr.oplog: {path}: removed 41 bytes of a partial last line" in text[2]
    assert len(text) == 3


@pytest.mark.root
@as_root
def test_oplog_of_a_live_process_reopens_after_its_directory_is_removed(tmp_path: Path) -> None:
    log_dir = tmp_path / "var" / "logs"
    script = ("import itertools, sys, time\n"
              "from edr.oplog import setup_logging\n"
              f"log = setup_logging('info', {str(log_dir)!r}, 'edr.log', False)\n"
              "for i in itertools.count():\n"
              "    log.info('tick %d', i)\n"
              "    time.sleep(0.02)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=clean_env(), stderr=subprocess.PIPE)
    try:
        current = log_dir / f"edr.log.{today()}"
        wait_for(current.exists, 30, "the first log file", proc)

        def ticks() -> list[int]:
            try:
                return [int(x.rsplit(" ", 1)[1]) for x in current.read_text().splitlines() if " tick " in x]
            except FileNotFoundError:
                return []

        while log_dir.exists():  # rm -rf racing the live writer may find one more file: try again, as a person would
            shutil.rmtree(log_dir, ignore_errors=True)
        wait_for(lambda: len(ticks()) >= 3, 30, "a new file after the directory was removed", proc)
        assert ticks()[0] > 0, "the new file holds the records logged after the removal"
        assert mode(log_dir) == 0o700 and mode(current) == 0o600
        log_dir.rename(tmp_path / "var" / "moved")
        wait_for(lambda: len(ticks()) >= 3, 30, "a new file after the directory was renamed", proc)
        moved = tmp_path / "var" / "moved" / current.name
        last_moved = int(moved.read_text().splitlines()[-1].rsplit(" ", 1)[1])
        assert ticks()[0] == last_moved + 1  # each record is in one of the two files: none lost, none twice
        current.unlink()
        wait_for(lambda: len(ticks()) >= 3, 30, "a new file after the file was deleted", proc)
        assert mode(current) == 0o600
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert b"Logging error" not in err and b"Traceback" not in err
