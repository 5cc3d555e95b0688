"""Continuing the chain at start: from the newest file's tail, the anchor, or a new segment that says why."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.alerts.chain import GENESIS, AlertChain, ChainStart, ChainState, parse_line
from edr.alerts.chain_recovery import (
    ANCHOR_NAME,
    Anchor,
    AnchorSchedule,
    Tail,
    anchor_for,
    family_path,
    load_anchor,
    read_tail,
    recover_chain,
    resume,
    save_anchor,
    tail_lines,
)
from edr.alerts.daily_file import DailyFile
from edr.alerts.verify import render_text, verify
from edr.platform.private_files import PrivateDir

KEY = b"recovery-test-key-0123456789"
OTHER_KEY = b"another-test-key-9876543210"


def doc(i: int) -> dict[str, Any]:
    return {"@timestamp": "2026-03-01T10:00:00.000Z", "rule.id": f"R-{i}", "message": "x" * (i % 7)}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "logs", tmp_path / "state"


def write_day(logs: Path, day: str, lines: list[bytes]) -> Path:
    logs.mkdir(mode=0o700, exist_ok=True)
    path = logs / f"alerts.json.{day}"
    with open(path, "ab") as fh:
        fh.write(b"".join(lines))
    os.chmod(path, 0o600)
    return path


def sealed(chain: AlertChain, n: int, first: int = 0) -> list[bytes]:
    return [chain.seal(doc(first + i)) for i in range(n)]


def start_and_write(logs: Path, state: Path, day: str, n: int, key: bytes | None = None,
                    first: int = 0) -> tuple[AlertChain, list[str]]:
    """A writer's start: recover, then seal n alerts into the day's file and save the anchor."""
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=key)
    chain = AlertChain(resumed.start, key=key)
    write_day(logs, day, sealed(chain, n, first))
    save_anchor(PrivateDir(state), anchor_for(chain.state, family=family_path(logs, "alerts.json"), key=key))
    return chain, list(resumed.notes)


def day_files(logs: Path) -> list[str]:
    return sorted(str(p) for p in logs.glob("alerts.json.*"))


def test_nothing_written_yet_starts_a_new_chain(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.segment == "new chain" and resumed.start.state == ChainState(0, GENESIS)
    assert resumed.notes == ()


def test_continues_from_the_newest_file_across_days(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    chain, _ = start_and_write(logs, state, "2026-03-01", 5)
    (state / ANCHOR_NAME).unlink()  # the tail alone is enough
    write_day(logs, "2026-03-02", sealed(chain, 1))  # the newest file holds one line: its predecessor is the day before
    tail = read_tail(logs, "alerts.json")
    assert tail is not None and tail.file.endswith("2026-03-02") and len(tail.lines) == 2
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.segment is None and resumed.start.state == chain.state and resumed.notes == ()


def test_partial_last_line_is_ignored(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    chain, _ = start_and_write(logs, state, "2026-03-01", 3)
    path = write_day(logs, "2026-03-01", [b'{"@timestamp":"2026-03-01T10:00:00.000Z","rule.i'])
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.state == chain.state and resumed.start.segment is None
    # the writer cuts the half line when it opens the file; the chain then verifies
    chain = AlertChain(resumed.start)
    file = DailyFile(logs, "alerts.json", clock=lambda: 1772359200.0)  # 2026-03-01
    file.write(sealed(chain, 2, 3))
    file.close()
    assert verify([str(path)]).ok


def test_unchained_tail_starts_a_marked_segment_that_verify_lists(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    old = [orjson.dumps(doc(i)) + b"\n" for i in range(3)]  # written before the chain existed
    path = write_day(logs, "2026-03-01", old)
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.segment == f"the last line of {path}: has no edr.chain fields (written before the chain, " \
                                     f"or not by edr)"
    assert resumed.start.state.seq == 0
    assert any("starting a new chain segment" in n for n in resumed.notes)
    chain = AlertChain(resumed.start)
    write_day(logs, "2026-03-01", sealed(chain, 2))
    report = verify([str(path)])
    assert [p.kind for p in report.problems] == ["unchained"] * 3  # the old lines are not protected: said so
    assert [(s.line, s.seq, s.reason) for s in report.segments] == [(4, 1, resumed.start.segment)]


def test_garbage_after_the_last_chained_line_is_skipped_not_a_new_segment(dirs: tuple[Path, Path]) -> None:
    # an append-only file's half line is ended with a newline by the writer: the chain continues over it
    logs, state = dirs
    chain, _ = start_and_write(logs, state, "2026-03-01", 4)
    (state / ANCHOR_NAME).unlink()
    path = write_day(logs, "2026-03-01", [b'{"@timestamp":"2026-03-01T10:00:00.000Z","rule.i\n'])
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.segment is None and resumed.start.state == chain.state
    assert any("not JSON" in n and "continuing from seq 4" in n for n in resumed.notes)
    write_day(logs, "2026-03-01", sealed(AlertChain(resumed.start), 2))
    report = verify([str(path)])
    assert [(p.kind, p.line) for p in report.problems] == [("malformed", 5)]
    assert report.last_seq == 6 and len(report.segments) == 1


def test_unreadable_newest_file_starts_a_segment_naming_it(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    start_and_write(logs, state, "2026-03-01", 2)
    (state / ANCHOR_NAME).unlink()
    victim = logs.parent / "victim"
    victim.write_bytes(b"secret\n")
    (logs / "alerts.json.2026-03-02").symlink_to(victim)
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.segment is not None and "alerts.json.2026-03-02" in resumed.start.segment
    assert "symbolic link" in resumed.start.segment


def test_anchor_ahead_of_the_files_continues_so_that_the_gap_shows(dirs: tuple[Path, Path]) -> None:
    """The newest file deleted while the agent was stopped: the anchor remembers what was written."""
    logs, state = dirs
    start_and_write(logs, state, "2026-03-01", 5)
    start_and_write(logs, state, "2026-03-02", 5, first=5)
    (logs / "alerts.json.2026-03-02").unlink()
    _chain, notes = start_and_write(logs, state, "2026-03-03", 3, first=10)
    assert any("ends at seq 5 but seq 10 was written" in n for n in notes)
    report = verify(day_files(logs))
    assert report.problem_count == 1 and report.first is not None
    assert (report.first.kind, report.first.expected_seq, report.first.found_seq) == ("missing", 6, 11)
    # and the last lines cut from a file, likewise
    lines = (logs / "alerts.json.2026-03-03").read_bytes().splitlines(keepends=True)
    (logs / "alerts.json.2026-03-03").write_bytes(b"".join(lines[:1]))
    _chain, notes = start_and_write(logs, state, "2026-03-03", 1, first=20)
    report = verify(day_files(logs))
    assert [(p.kind, p.expected_seq, p.found_seq) for p in report.problems] == [("missing", 6, 11),
                                                                                ("missing", 12, 14)]


def test_anchor_with_the_same_seq_but_another_hash_wins(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    start_and_write(logs, state, "2026-03-01", 3)
    path = logs / "alerts.json.2026-03-01"
    lines = path.read_bytes().splitlines(keepends=True)
    forged = orjson.loads(lines[-1])
    forged["rule.id"] = "harmless"
    for k in ("edr.chain.seq", "edr.chain.hash"):
        del forged[k]
    before = parse_line(lines[-2])
    lines[-1] = AlertChain(ChainStart(ChainState(before.seq, before.hash))).seal(forged)
    path.write_bytes(b"".join(lines))
    assert verify([str(path)]).ok  # rewritten consistently, as anyone can without a key
    _chain, notes = start_and_write(logs, state, "2026-03-01", 2, first=3)
    assert any("is not the line that was written" in n for n in notes)
    report = verify([str(path)])
    assert report.first is not None and (report.first.kind, report.first.line) == ("altered", 4)


def test_anchor_of_another_family_or_broken_is_ignored(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    start_and_write(logs, state, "2026-03-01", 2)
    anchor, note = load_anchor(state)
    assert anchor is not None and note is None and anchor.seq == 2
    tail = read_tail(logs, "alerts.json")
    other = resume(tail, Anchor(family="/elsewhere/alerts.json", seq=99, hash="a" * 64, alg="sha256", key_id=None),
                   key=None, family=family_path(logs, "alerts.json"))
    assert other.start.state.seq == 2 and any("is for /elsewhere/alerts.json" in n for n in other.notes)
    (state / ANCHOR_NAME).write_bytes(b'{"version": 1, "seq": "many"}')
    anchor, note = load_anchor(state)
    assert anchor is None and note is not None and "cannot be used" in note and ANCHOR_NAME in note
    resumed = recover_chain(logs, "alerts.json", state_directory=state, key=None)
    assert resumed.start.state.seq == 2 and resumed.start.segment is None
    assert any("cannot be used" in n for n in resumed.notes)


def test_anchor_file_is_private_and_a_planted_link_is_refused(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    start_and_write(logs, state, "2026-03-01", 2)
    assert (state / ANCHOR_NAME).stat().st_mode & 0o777 == 0o600
    (state / ANCHOR_NAME).unlink()
    target = state.parent / "planted.json"
    target.write_bytes(Anchor(family_path(logs, "alerts.json"), 50, "b" * 64, "sha256", None).to_bytes())
    (state / ANCHOR_NAME).symlink_to(target)
    anchor, note = load_anchor(state)
    assert anchor is None and note is not None and "symbolic link" in note


def test_key_change_starts_a_segment_and_each_part_verifies_with_its_key(dirs: tuple[Path, Path]) -> None:
    logs, state = dirs
    start_and_write(logs, state, "2026-03-01", 4, key=None)
    _chain, notes = start_and_write(logs, state, "2026-03-02", 4, key=KEY, first=4)
    assert any("another key" in n for n in notes)  # the anchor was written without a key
    report = verify(day_files(logs), KEY)
    assert [(s.file.endswith("2026-03-02"), s.seq, s.alg) for s in report.segments] == [
        (False, 1, "sha256"), (True, 5, "hmac-sha256")]
    assert "the key changed" in report.segments[1].reason
    # with the key, the older unkeyed segment is reported as such; each day verifies under its own key
    assert [p.kind for p in report.problems] == ["unkeyed"]
    assert verify(day_files(logs)[:1]).ok and verify(day_files(logs)[1:], KEY).ok
    # a restart with the same key continues the keyed chain
    _chain, notes = start_and_write(logs, state, "2026-03-02", 2, key=KEY, first=8)
    assert notes == []
    assert verify(day_files(logs)[1:], KEY).ok
    # and a third key again starts a segment numbered on from the last line
    _chain, notes = start_and_write(logs, state, "2026-03-03", 1, key=OTHER_KEY, first=10)
    report = verify(day_files(logs)[2:], OTHER_KEY)
    assert report.ok and report.segments[0].seq == 11, render_text(report)


def test_tail_lines_reader(tmp_path: Path) -> None:
    path = tmp_path / "f"

    def lines_of(data: bytes, **kw: Any) -> list[bytes]:
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            return tail_lines(fd, **kw)
        finally:
            os.close(fd)

    assert lines_of(b"") == []
    assert lines_of(b"no newline at all") == []
    assert lines_of(b"a\nb\npartial") == [b"a\n", b"b\n"]
    assert lines_of(b"a\r\nb\rc\n") == [b"a\r\n", b"b\rc\n"]  # only \n ends a line
    long = b"x" * 200_000 + b"\n"
    assert lines_of(b"first\n" + long + long + b"tail") == [b"first\n", long, long]  # all of it was read
    assert lines_of(b"first\n" + b"y" * 300_000 + b"\n" + long + long) == [long, long]
    many = b"".join(b"%06d\n" % i for i in range(100_000))
    got = lines_of(many)
    assert got[-1] == b"099999\n" and 65_536 // 7 <= len(got) <= 2 * 65_536 // 7
    assert all(len(line) == 7 for line in got)  # no partial first line


def test_anchor_schedule() -> None:
    s = AnchorSchedule(1.0)
    a, b = ChainState(1, "a" * 64), ChainState(2, "b" * 64)
    assert s.due(100.0, a)
    s.saved(100.0, a)
    assert not s.due(100.5, b) and s.pending(b)  # too soon
    assert s.due(101.0, b)
    assert not s.due(200.0, a) and not s.pending(a)  # nothing new


def test_resume_from_a_tail_given_directly() -> None:
    chain = AlertChain()
    lines = sealed(chain, 3)
    family = "/x/alerts.json"
    assert resume(Tail("f", tuple(lines)), None, key=None, family=family).start.state == chain.state
    # only one line, and it is not a segment start: nothing to check its key against, so continue
    one = resume(Tail("f", (lines[-1],)), None, key=KEY, family=family)
    assert one.start.state == chain.state and one.start.segment is None
    # a segment start checked under the wrong key
    first = resume(Tail("f", (lines[0],)), None, key=KEY, family=family)
    assert first.start.segment is not None and "the key changed" in first.start.segment
    assert first.start.state.seq == 1
    err = resume(Tail("f", error="Permission denied"), None, key=None, family=family)
    assert err.start.segment == "f: Permission denied"
