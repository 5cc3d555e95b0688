"""The Linux identity check on real processes: a start time in clock ticks, one tick of slack, no more."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edr.detect.alert import Alert
from edr.event import Event
from edr.platform.kill import MISMATCH, TERMINATED
from edr.platform.linux import procfs
from edr.response.decision import target_of
from tests.scan.marked import marked_binary

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd and /proc")

if sys.platform.startswith("linux"):
    from edr.platform.linux import kill as kill_linux


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """A live marked program, its image and its start time as /proc gives it."""
    path = marked_binary(tmp_path, "edr-ticks-demo")
    proc = subprocess.Popen([str(path), "60"])
    ticks = procfs.start_ticks(proc.pid)
    assert ticks is not None
    yield proc, str(path), ticks
    proc.kill()
    proc.wait()


def test_a_stamp_one_tick_after_proc_is_the_same_process(running) -> None:
    """The sensor stamps the fork a few µs after the kernel set start_boottime: a tick may pass between."""
    proc, image, ticks = running
    assert kill_linux.START_TICKS_SLACK == 1
    assert kill_linux.verify_identity(proc.pid, image, ticks, None) is None
    assert kill_linux.verify_identity(proc.pid, image, ticks + 1, None) is None
    result = kill_linux.terminate(proc.pid, image, ticks + 1, None)
    assert result.outcome == TERMINATED, result
    assert proc.wait(timeout=5) == -9


def test_two_ticks_after_or_any_tick_before_is_another_process(running) -> None:
    proc, image, ticks = running
    for stamp in (ticks + 2, ticks + 100, ticks - 1, ticks - 2):
        reason = kill_linux.verify_identity(proc.pid, image, stamp, None)
        assert reason == f"start time {ticks} != {stamp} (pid reused)", (stamp, reason)
        assert kill_linux.terminate(proc.pid, image, stamp, None).outcome == MISMATCH
    assert proc.poll() is None


def test_exec_after_exec_keeps_the_start_time_and_the_executable_tells_them_apart(tmp_path: Path) -> None:
    """A shell that execs the marked program: same pid, same start time, another image."""
    marked = marked_binary(tmp_path, "edr-ticks-demo")
    shell = os.path.realpath("/bin/sh")
    proc = subprocess.Popen(["/bin/sh", "-c", f"read go; exec {marked} 60"], stdin=subprocess.PIPE)
    try:
        ticks = procfs.start_ticks(proc.pid)
        assert ticks is not None and procfs.executable(proc.pid) == shell
        assert kill_linux.verify_identity(proc.pid, shell, ticks, None) is None
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 5
        while procfs.executable(proc.pid) != str(marked) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.executable(proc.pid) == str(marked)
        assert procfs.start_ticks(proc.pid) == ticks  # exec keeps the kernel's start time
        # an alert about the shell no longer names this process: it runs something else now
        reason = kill_linux.verify_identity(proc.pid, shell, ticks, None)
        assert reason == f"executable {str(marked)!r} is not {shell!r}"
        assert kill_linux.terminate(proc.pid, shell, ticks, None).outcome == MISMATCH
        assert proc.poll() is None
        # an alert about the marked program does
        assert kill_linux.terminate(proc.pid, str(marked), ticks, None).outcome == TERMINATED
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_integer_start_time_of_an_event_is_read_as_ticks() -> None:
    event = Event("process_creation", "linux", {"ProcessId": 4242, "Image": "/tmp/x",
                                                "ProcessStartTime": 987654}, 1_800_000_000.0)
    t = target_of(Alert(rule_id="r", rule_name="n", severity="critical", engine="yara", event=event))
    assert (t.start_ticks, t.start_epoch, t.event_time) == (987654, None, 1_800_000_000.0)
