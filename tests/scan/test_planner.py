"""The scan job policy without Trio: ScanPlanner fed events and times by hand."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from edr.event import CATEGORIES, Event
from edr.scan.memory import SweepPlanner
from edr.scan.planner import INTAKE_CATEGORIES, ScanJob, ScanPlanner, pid_of

TRUSTED = "/usr/bin/"


def planner(*, files: bool = True, memory: bool = False, settle_secs: float = 1.0, settle_capacity: int = 4096,
            sweep_rate: int = 60, sweep_interval: float = 0.0, exclude: tuple[int, ...] = ()) -> ScanPlanner:
    return ScanPlanner(files=files, memory=memory, skips=lambda path: path.startswith(TRUSTED),
                       settle_secs=settle_secs, settle_capacity=settle_capacity,
                       sweep=SweepPlanner(sweep_rate, exclude=exclude), sweep_interval=sweep_interval)


def exec_event(image: object, pid: object = 4242) -> Event:
    return Event("process_creation", "linux", {"Image": image, "ProcessId": pid}, 0.0)


def write(path: str, category: str = "file_event", **fields: object) -> Event:
    return Event(category, "linux", {"TargetFilename": path, "ProcessId": 77, "Image": "/bin/cp", **fields}, 0.0)


def rename(source: str, target: str) -> Event:
    return write(target, "file_rename", SourceFilename=source)


def delete(path: str) -> Event:
    return Event("file_delete", "linux", {"TargetFilename": path, "ProcessId": 77}, 0.0)


def test_planner_module_does_not_import_trio() -> None:
    code = "import sys, edr.scan.planner; print(sorted(m for m in sys.modules if m.split('.')[0] == 'trio'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_events_of_other_categories_than_intake_categories_give_nothing_and_change_nothing() -> None:
    """The scan actor passes over them without asking the planner: that must lose nothing."""
    p = planner(memory=True)
    p.intake(write("/tmp/settling"), 0.0)
    before = (p.statistics(), len(p.settle))
    for category in sorted(CATEGORIES - INTAKE_CATEGORIES):
        event = Event(category, "linux", {"Image": "/tmp/evil", "TargetFilename": "/tmp/settling",
                                          "SourceFilename": "/tmp/x", "ProcessId": 4242}, 0.0)
        assert p.intake(event, 1.0) == [], category
    assert (p.statistics(), len(p.settle)) == before
    assert [job.path for job in p.due(2.0)] == ["/tmp/settling"]  # still settling from its own write at 0.0


def test_the_allowlist_is_asked_once_per_path_and_every_skip_counted() -> None:
    asked: list[str] = []

    def skips(path: str) -> bool:
        asked.append(path)
        return path.startswith(TRUSTED)

    p = ScanPlanner(files=True, memory=False, skips=skips, settle_secs=1.0)
    for _ in range(3):
        assert p.intake(exec_event(f"{TRUSTED}true"), 0.0) == []
        assert [job.path for job in p.intake(exec_event("/tmp/evil"), 0.0)] == ["/tmp/evil"]
    p.intake(write(f"{TRUSTED}true"), 0.0)
    assert asked == [f"{TRUSTED}true", "/tmp/evil"]
    assert p.statistics()["allowlisted"] == 4 and len(p.settle) == 0


def test_exec_is_scanned_at_once_unless_allowlisted() -> None:
    p = planner()
    event = exec_event("/tmp/evil", 4242)
    assert p.intake(event, 0.0) == [ScanJob("exec", "/tmp/evil", 4242, event)]
    assert p.intake(exec_event(f"{TRUSTED}ls"), 0.0) == []
    # no image, an empty one, or not a string: nothing to scan
    assert p.intake(exec_event(None), 0.0) == [] and p.intake(exec_event(""), 0.0) == []
    assert p.intake(exec_event(17), 0.0) == []
    # a pid that is not a number is not a pid; the image is still scanned
    odd = exec_event("/tmp/evil", "x")
    assert p.intake(odd, 0.0) == [ScanJob("exec", "/tmp/evil", None, odd)]
    assert p.due(100.0) == [] and p.flush() == []  # execs never settle


def test_without_anything_to_scan_for_files_are_neither_scanned_nor_tracked() -> None:
    p = planner(files=False)
    assert p.intake(exec_event("/tmp/evil"), 0.0) == []
    assert p.intake(write("/tmp/drop"), 0.0) == [] and len(p.settle) == 0


def test_memory_of_new_processes_when_enabled() -> None:
    p = planner(files=False, memory=True)
    event = exec_event("/tmp/evil", 4242)
    assert p.intake(event, 0.0) == [ScanJob("memory", None, 4242, event)]
    # kernel threads' pids and unusable pids are never memory-scanned
    for pid in (1, 4, None, "x", True):
        assert p.intake(exec_event("/tmp/evil", pid), 0.0) == []
    both = planner(memory=True)
    assert [j.kind for j in both.intake(event, 0.0)] == ["exec", "memory"]


def test_written_file_is_scanned_once_it_has_settled() -> None:
    p = planner(settle_secs=1.0)
    first = write("/tmp/drop")
    assert p.intake(first, 0.0) == []  # never at once: the writer may not be done
    assert p.due(0.5) == []
    last = write("/tmp/drop", "file_change")
    p.intake(last, 0.6)  # written again: the quiet period starts over
    assert p.due(1.5) == []
    assert p.due(1.6) == [ScanJob("written", "/tmp/drop", None, last)]  # the last write's event
    assert p.due(10.0) == [] and len(p.settle) == 0  # scanned once
    assert p.intake(write(f"{TRUSTED}tool"), 2.0) == [] and len(p.settle) == 0  # allowlisted: not tracked


def test_rename_tracks_the_new_name_and_forgets_the_old_one() -> None:
    p = planner(settle_secs=1.0)
    p.intake(write("/tmp/part"), 0.0)
    moved = rename("/tmp/part", "/tmp/final")
    assert p.intake(moved, 0.5) == []
    assert p.due(1.2) == []  # the old name was not scanned: it no longer holds the bytes
    assert p.due(1.5) == [ScanJob("written", "/tmp/final", None, moved)]
    # renamed away to an allowlisted place: forgotten, and the new name is not tracked either
    p.intake(write("/tmp/other"), 2.0)
    p.intake(rename("/tmp/other", f"{TRUSTED}other"), 2.1)
    assert p.due(10.0) == [] and p.flush() == []


def test_deleted_file_is_forgotten() -> None:
    p = planner(settle_secs=1.0)
    p.intake(write("/tmp/gone"), 0.0)
    p.intake(write("/tmp/kept"), 0.0)
    assert p.intake(delete("/tmp/gone"), 0.5) == []
    assert [j.path for j in p.due(1.0)] == ["/tmp/kept"]
    # written again after the delete: tracked from scratch, and the new event is the one carried
    again = write("/tmp/gone")
    p.intake(again, 2.0)
    assert p.flush() == [ScanJob("written", "/tmp/gone", None, again)]


def test_flush_at_end_scans_every_file_still_settling_in_write_order() -> None:
    p = planner(settle_secs=60.0)
    events = [write(f"/tmp/f{i}") for i in range(3)]
    for i, event in enumerate(events):
        p.intake(event, float(i))
    assert p.due(10.0) == []
    assert p.flush() == [ScanJob("written", f"/tmp/f{i}", None, events[i]) for i in range(3)]
    assert p.flush() == [] and len(p.settle) == 0 and p.statistics()["settle_pending"] == 0


def test_settle_tracker_full_drops_counts_and_logs_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    p = planner(settle_capacity=2)
    caplog.set_level(logging.WARNING, logger="edr.scan")
    for i in range(30):
        p.intake(write(f"/tmp/f{i}"), 0.0)
    p.intake(write("/tmp/f0"), 0.1)  # already tracked: written again, not a drop
    assert p.statistics()["settle_dropped"] == 28 and len(p.settle) == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 21  # the first 20 drops, then one line saying the rest are only counted
    assert "/tmp/f2 not tracked" in lines[0] and "counting" in lines[-1]
    assert [j.path for j in p.flush()] == ["/tmp/f1", "/tmp/f0"]


def test_sweep_rounds_are_scheduled_and_rate_limited() -> None:
    p = planner(files=False, memory=True, sweep_rate=2, sweep_interval=10.0, exclude=(100,))
    assert p.sweeping
    listed: list[float] = []

    def running_at(now: float) -> list[ScanJob]:
        def running() -> list[int]:
            listed.append(now)
            return [1, 100, 200, 300, 400]
        return p.sweep(now, running)

    # the first round begins at once; a minute's worth (2) of the 3 eligible pids, never pids <= 4 or excluded
    assert running_at(0.0) == [ScanJob("sweep", None, 200, None), ScanJob("sweep", None, 300, None)]
    assert running_at(1.0) == [] and listed == [0.0]  # /proc is listed only when a round begins
    assert running_at(30.0) == [ScanJob("sweep", None, 400, None)]  # half a minute: one more token
    # a round was due at 10 s, but round 1 was still going at 30 s: it went on, none began; the next is due at 40 s
    assert listed == [0.0] and p.statistics()["sweep_rounds"] == 1
    assert running_at(39.0) == [] and listed == [0.0]
    assert running_at(40.0) == [] and listed == [0.0, 40.0]  # round 2 begins; no token yet (1/3 of one)
    assert p.statistics()["sweep_rounds"] == 2
    assert running_at(60.0) == [ScanJob("sweep", None, 200, None)]


def test_no_sweep_without_memory_scanning_or_interval() -> None:
    for p in (planner(memory=False, sweep_interval=10.0), planner(memory=True, sweep_interval=0.0)):
        assert not p.sweeping
        assert p.sweep(0.0, lambda: pytest.fail("listed processes for a sweep that is off")) == []


def test_settle_tick_follows_settle_secs_within_bounds() -> None:
    assert planner(settle_secs=1.0).settle_tick == 0.25
    assert planner(settle_secs=0.0).settle_tick == 0.02 and planner(settle_secs=60.0).settle_tick == 0.5


def test_pid_of() -> None:
    assert pid_of(exec_event("/x", "17")) == 17 and pid_of(exec_event("/x", 3.0)) == 3
    assert pid_of(exec_event("/x", None)) is None and pid_of(exec_event("/x", False)) is None
    assert pid_of(exec_event("/x", [1])) is None
