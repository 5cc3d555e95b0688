"""Retention: age and size limits, oldest first, never the file being written, foreign files and links untouched."""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import edr.alerts.retention as retention
from edr.alerts.retention import (
    AGE,
    SIZE,
    DailyFileInfo,
    RetentionPolicy,
    apply_retention,
    plan_retention,
)

TODAY = date(2026, 3, 10)
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
CURRENT = "alerts.json.2026-03-10"


def infos(*days_sizes: tuple[int, int]) -> list[DailyFileInfo]:
    return [DailyFileInfo(f"alerts.json.2026-03-{d:02d}", date(2026, 3, d), size) for d, size in days_sizes]


def names(removals: list[retention.Removal]) -> list[str]:
    return [r.name for r in removals]


def test_age_limit_keeps_the_last_n_days() -> None:
    files = infos((1, 10), (7, 10), (8, 10), (9, 10), (10, 10))
    plan = plan_retention(files, RetentionPolicy(max_days=3), today=TODAY, current=CURRENT)
    assert names(plan) == ["alerts.json.2026-03-01", "alerts.json.2026-03-07"]
    assert all(r.reason == AGE and "older than 3 day(s) (kept from 2026-03-08)" in r.detail for r in plan)
    plan = plan_retention(files, RetentionPolicy(max_days=1), today=TODAY, current=CURRENT)
    assert names(plan) == [f"alerts.json.2026-03-{d:02d}" for d in (1, 7, 8, 9)]


def test_size_limit_removes_the_oldest_until_the_rest_fit() -> None:
    files = infos((3, 100), (1, 100), (2, 100), (9, 100), (10, 100))
    plan = plan_retention(files, RetentionPolicy(max_total_bytes=250), today=TODAY, current=CURRENT)
    assert names(plan) == ["alerts.json.2026-03-01", "alerts.json.2026-03-02", "alerts.json.2026-03-03"]
    assert all(r.reason == SIZE for r in plan)
    assert plan_retention(files, RetentionPolicy(max_total_bytes=500), today=TODAY, current=CURRENT) == []


def test_both_limits() -> None:
    files = infos((1, 10), (5, 300), (8, 300), (9, 300), (10, 50))
    plan = plan_retention(files, RetentionPolicy(max_days=7, max_total_bytes=700), today=TODAY, current=CURRENT)
    assert [(r.name[-2:], r.reason) for r in plan] == [("01", AGE), ("05", SIZE)]


def test_the_file_being_written_and_todays_are_never_removed() -> None:
    # the current file alone is over the limit: nothing else to remove, and it stays
    files = infos((9, 10), (10, 10_000))
    plan = plan_retention(files, RetentionPolicy(max_days=1, max_total_bytes=100), today=TODAY, current=CURRENT)
    assert names(plan) == ["alerts.json.2026-03-09"]
    # a writer whose clock is behind writes yesterday's file: it is named as current, so it is kept
    plan = plan_retention(files, RetentionPolicy(max_days=1), today=TODAY, current="alerts.json.2026-03-09")
    assert plan == []
    # files dated today or later (a clock ahead) are never removed either
    ahead = [DailyFileInfo("alerts.json.2026-03-12", date(2026, 3, 12), 10_000), *infos((10, 10_000))]
    assert plan_retention(ahead, RetentionPolicy(max_days=1, max_total_bytes=1), today=TODAY, current=None) == []


def test_no_limit_removes_nothing() -> None:
    assert plan_retention(infos((1, 10**12)), RetentionPolicy(), today=TODAY, current=None) == []
    with pytest.raises(ValueError):
        RetentionPolicy(max_days=-1)
    assert RetentionPolicy.from_megabytes(3, 2) == RetentionPolicy(max_days=3, max_total_bytes=2 << 20)


# --- the I/O part on real files -------------------------------------------------------------------


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir(mode=0o700)
    return d


def make(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.write_bytes(b"x" * size)
    os.chmod(path, 0o600)
    return path


def test_apply_removes_old_files_and_logs_each(logs: Path, caplog: pytest.LogCaptureFixture) -> None:
    for d in (1, 2, 8, 9, 10):
        make(logs, f"alerts.json.2026-03-{d:02d}", 100)
    make(logs, "edr.log.2026-03-01", 100)  # another family in the same directory
    with caplog.at_level(logging.INFO, logger="edr.alerts.retention"):
        result = apply_retention(logs, "alerts.json", RetentionPolicy(max_days=3), current=CURRENT, now=NOW)
    assert names(result.removed) == ["alerts.json.2026-03-01", "alerts.json.2026-03-02"]
    assert result.bytes_removed == 200 and result.errors == [] and result.skipped == []
    assert sorted(p.name for p in logs.iterdir()) == [
        "alerts.json.2026-03-08", "alerts.json.2026-03-09", "alerts.json.2026-03-10", "edr.log.2026-03-01"]
    removed_logs = [r.getMessage() for r in caplog.records if "retention: removed" in r.getMessage()]
    assert removed_logs == [
        f"retention: removed {logs}/alerts.json.2026-03-0{d} (100 bytes): older than 3 day(s) (kept from 2026-03-08)"
        for d in (1, 2)]


def test_apply_size_limit_on_real_files(logs: Path) -> None:
    for d, size in ((5, 4000), (6, 3000), (7, 2000), (10, 1000)):
        make(logs, f"events.json.2026-03-{d:02d}", size)
    result = apply_retention(logs, "events.json", RetentionPolicy(max_total_bytes=3500), current=None, now=NOW)
    assert names(result.removed) == ["events.json.2026-03-05", "events.json.2026-03-06"]
    assert sorted(p.name for p in logs.iterdir()) == ["events.json.2026-03-07", "events.json.2026-03-10"]


def test_foreign_files_and_links_are_never_touched(tmp_path: Path, logs: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious")
    hard_victim = outside / "hard-victim"
    hard_victim.write_bytes(b"also precious")
    make(logs, "alerts.json.2026-03-01", 10)
    (logs / "alerts.json.2026-03-02").symlink_to(victim)  # a link with a member's name
    os.link(hard_victim, logs / "alerts.json.2026-03-03")  # a second name of a file elsewhere
    other_user = make(logs, "alerts.json.2026-03-04", 10)
    os.chown(other_user, 65534, 65534)
    (logs / "alerts.json.2026-03-05").mkdir()  # a directory with a member's name
    foreign = ["alerts.json.2026-03-01.gz", "alerts.json.2026-02-30", "old-alerts.json.2026-03-01", "notes"]
    for name in foreign:
        make(logs, name, 10)
    (logs / "dangling").symlink_to(tmp_path / "nowhere")
    result = apply_retention(logs, "alerts.json", RetentionPolicy(max_days=1), current=CURRENT, now=NOW)
    assert names(result.removed) == ["alerts.json.2026-03-01"]
    assert sorted((s.name, s.reason) for s in result.skipped) == [
        ("alerts.json.2026-03-02", "a symbolic link"),
        ("alerts.json.2026-03-03", "has 2 hard links"),
        ("alerts.json.2026-03-04", "owned by uid 65534, not by this agent"),
        ("alerts.json.2026-03-05", "not a regular file"),
    ]
    assert victim.read_bytes() == b"precious" and hard_victim.read_bytes() == b"also precious"
    assert (logs / "alerts.json.2026-03-02").is_symlink() and (logs / "alerts.json.2026-03-03").exists()
    assert other_user.exists() and (logs / "alerts.json.2026-03-05").is_dir()
    for name in foreign:
        assert (logs / name).exists()


def test_a_file_replaced_after_it_was_listed_is_left_alone(logs: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    make(logs, "alerts.json.2026-03-01", 10)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    real_plan = retention.plan_retention

    def plan_then_swap(*args: object, **kwargs: object) -> list[retention.Removal]:
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        (logs / "alerts.json.2026-03-01").unlink()
        (logs / "alerts.json.2026-03-01").symlink_to(victim)
        return plan

    monkeypatch.setattr(retention, "plan_retention", plan_then_swap)
    result = apply_retention(logs, "alerts.json", RetentionPolicy(max_days=1), current=CURRENT, now=NOW)
    assert result.removed == []
    assert [(s.name, s.reason) for s in result.skipped] == [("alerts.json.2026-03-01", "changed since it was listed")]
    assert victim.read_bytes() == b"precious" and (logs / "alerts.json.2026-03-01").is_symlink()


def test_missing_or_unsafe_directory_is_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert apply_retention(tmp_path / "absent", "alerts.json", RetentionPolicy(max_days=1), current=None,
                           now=NOW).errors == []
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    make(open_dir, "alerts.json.2026-03-01", 10)
    result = apply_retention(open_dir, "alerts.json", RetentionPolicy(max_days=1), current=None, now=NOW)
    assert result.removed == [] and len(result.errors) == 1
    assert str(open_dir) in result.errors[0] and "writable by" in result.errors[0]
    assert (open_dir / "alerts.json.2026-03-01").exists()
    assert "retention:" in caplog.text


def test_removal_failure_is_reported_and_the_rest_still_handled(logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in (1, 2, 3):
        make(logs, f"alerts.json.2026-03-0{d}", 10)
    real_unlink = os.unlink

    def flaky(name: str, *, dir_fd: int | None = None) -> None:
        if name.endswith("02"):
            raise PermissionError(1, "Operation not permitted")
        real_unlink(name, dir_fd=dir_fd)

    monkeypatch.setattr(retention.os, "unlink", flaky)
    result = apply_retention(logs, "alerts.json", RetentionPolicy(max_days=1), current=CURRENT, now=NOW)
    assert names(result.removed) == ["alerts.json.2026-03-01", "alerts.json.2026-03-03"]
    assert result.errors == [f"{logs}/alerts.json.2026-03-02: cannot remove: Operation not permitted"]


def test_unlimited_policy_does_not_even_list(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)  # would be refused if it were looked at
    assert apply_retention(d, "alerts.json", RetentionPolicy(), current=None, now=NOW).errors == []
