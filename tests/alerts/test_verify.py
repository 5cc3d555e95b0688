"""`edr alerts verify`: a real alert file (an `edr replay` of recorded attacks) chained, then edited,
cut, reordered and rewritten; an untouched chain across a restart and a day change passes."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from edr.alerts.chain import AlertChain, ChainStart, ChainState, parse_line
from edr.alerts.chain_recovery import recover_chain
from edr.alerts.daily_file import DailyFile
from edr.alerts.verify import ChainVerifier, render_text, run_verify, verify
from tests.conftest import shared_path

from .conftest import chain_lines, write_lines

pytestmark = pytest.mark.shared

KEY = b"k3y-for-the-alert-chain-tests-0001"


def ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


@pytest.fixture
def chained(replay_alert_lines: list[bytes]) -> list[bytes]:
    return chain_lines(replay_alert_lines, AlertChain())


def seq_of(line: bytes) -> int:
    return int(orjson.loads(line)["edr.chain.seq"])


def test_untouched_real_file_passes(tmp_path: Path, chained: list[bytes]) -> None:
    path = write_lines(tmp_path / "alerts.json.2026-03-01", chained)
    report = verify([str(path)])
    assert report.ok and report.exit_code == 0 and report.problem_count == 0
    assert report.chained == report.lines == len(chained)
    assert (report.first_seq, report.last_seq) == (1, len(chained))
    assert [(s.line, s.reason) for s in report.segments] == [(1, "new chain")]


def test_edited_line_is_found(tmp_path: Path, chained: list[bytes]) -> None:
    edited = list(chained)
    assert b'"user.name":"' in edited[17]
    edited[17] = edited[17].replace(b'"user.name":"', b'"user.name":"x', 1)  # line 18
    path = write_lines(tmp_path / "alerts.json.2026-03-01", edited)
    report = verify([str(path)])
    assert report.exit_code == 1 and report.problem_count == 1
    first = report.first
    assert first is not None
    assert (first.kind, first.file, first.line) == ("altered", str(path), 18)
    assert first.expected_seq == first.found_seq == 18
    assert first.found_hash == orjson.loads(chained[17])["edr.chain.hash"]
    assert first.expected_hash is not None and first.expected_hash != first.found_hash


def test_edit_that_recomputes_its_own_hash_shows_on_the_next_line(tmp_path: Path, chained: list[bytes]) -> None:
    # Without a key, an attacker can re-hash the line they changed, but not the lines after it.
    before = parse_line(chained[29])
    forged_doc = orjson.loads(chained[30])
    forged_doc["rule.severity"] = "informational"
    del forged_doc["edr.chain.seq"], forged_doc["edr.chain.hash"]
    forged = AlertChain(ChainStart(ChainState(before.seq, before.hash))).seal(forged_doc)
    edited = [*chained[:30], forged, *chained[31:]]
    report = verify([str(write_lines(tmp_path / "a", edited))])
    assert report.problem_count == 1
    assert report.first is not None and (report.first.kind, report.first.line) == ("altered", 32)
    assert "or the line before it (seq 31)" in report.first.detail


def test_deleted_line_is_found(tmp_path: Path, chained: list[bytes]) -> None:
    cut = [*chained[:40], *chained[41:]]  # seq 41 removed
    path = write_lines(tmp_path / "alerts.json.2026-03-01", cut)
    report = verify([str(path)])
    assert report.exit_code == 1 and report.problem_count == 1
    first = report.first
    assert first is not None
    assert (first.kind, first.line, first.expected_seq, first.found_seq) == ("missing", 41, 41, 42)
    assert "seq 41 absent" in first.detail


def test_deleted_run_of_lines_and_the_last_lines(tmp_path: Path, chained: list[bytes]) -> None:
    cut = [*chained[:10], *chained[15:]]
    report = verify([str(write_lines(tmp_path / "a", cut))])
    assert report.first is not None and report.first.kind == "missing" and "seq 11..15 absent" in report.first.detail
    # lines cut from the very end leave nothing after them to show it: only the anchor can (chain_recovery)
    assert verify([str(write_lines(tmp_path / "b", chained[:-3]))]).ok


def test_swapped_lines_are_found(tmp_path: Path, chained: list[bytes]) -> None:
    swapped = list(chained)
    swapped[25], swapped[26] = swapped[26], swapped[25]  # lines 26 and 27
    path = write_lines(tmp_path / "alerts.json.2026-03-01", swapped)
    report = verify([str(path)])
    assert report.exit_code == 1 and report.problem_count == 1
    first = report.first
    assert first is not None
    assert (first.kind, first.line, first.expected_seq, first.found_seq) == ("reordered", 26, 26, 27)
    assert f"{path}:27" in first.detail


def test_line_moved_far_and_a_duplicated_line(tmp_path: Path, chained: list[bytes]) -> None:
    moved = list(chained)
    line = moved.pop(5)
    moved.insert(30, line)
    report = verify([str(write_lines(tmp_path / "a", moved))])
    assert report.problem_count == 1 and report.first is not None and report.first.kind == "reordered"
    dup = [*chained[:12], chained[8], *chained[12:]]
    report = verify([str(write_lines(tmp_path / "b", dup))])
    assert report.problem_count == 1 and report.first is not None
    assert (report.first.kind, report.first.line, report.first.found_seq) == ("duplicate", 13, 9)


def test_a_suffix_of_the_chain_passes(tmp_path: Path, chained: list[bytes]) -> None:
    # older files removed by retention: the first line given is the trusted starting point
    report = verify([str(write_lines(tmp_path / "a", chained[20:]))])
    assert report.ok and report.first_seq == 21 and report.segments == []
    assert "continues lines not given" in render_text(report)


def test_garbage_and_unchained_lines_are_reported(tmp_path: Path, chained: list[bytes],
                                                  replay_alert_lines: list[bytes]) -> None:
    mixed = [*chained[:3], b'{"half a line\n', b"\n", replay_alert_lines[0], *chained[3:]]
    report = verify([str(write_lines(tmp_path / "a", mixed))])
    assert [(p.kind, p.line) for p in report.problems] == [("malformed", 4), ("malformed", 5), ("unchained", 6)]
    # the chain itself is intact around them
    assert report.chained == len(chained)


def test_whole_chain_rewritten_without_the_key_is_detected(tmp_path: Path, replay_alert_lines: list[bytes]) -> None:
    keyed = chain_lines(replay_alert_lines, AlertChain(key=KEY))
    path = write_lines(tmp_path / "alerts.json.2026-03-01", keyed)
    assert verify([str(path)], KEY).ok
    # the attacker edits a line and re-chains everything, as plain SHA-256 (the only thing they can compute)
    docs = [orjson.loads(line) for line in keyed]
    docs[40]["process.command_line"] = "notepad.exe"
    for d in docs:
        for k in ("edr.chain.seq", "edr.chain.hash", "edr.chain.start", "edr.chain.alg"):
            d.pop(k, None)
    attacker = AlertChain()
    rewritten = [attacker.seal(dict(d)) for d in docs]
    write_lines(path, rewritten)
    assert verify([str(path)]).ok  # consistent in itself...
    report = verify([str(path)], KEY)  # ...but not under the key
    assert report.exit_code == 1 and report.first is not None
    assert (report.first.kind, report.first.line) == ("unkeyed", 1)
    # or with a key of their own, declaring HMAC as the original did
    theirs = b"attacker-chosen-key-0123456789"
    attacker = AlertChain(key=theirs)
    write_lines(path, [attacker.seal(dict(d)) for d in docs])
    report = verify([str(path)], KEY)
    assert report.first is not None and (report.first.kind, report.first.line) == ("altered", 1)
    # or only from line 41 on, continuing from line 40's hash: line 41 fails, and in a file of those
    # lines alone (its first line trusted as a starting point) the second one does
    before = parse_line(keyed[39])
    tail = AlertChain(ChainStart(ChainState(before.seq, before.hash)), key=theirs)
    forged = [*keyed[:40], *(tail.seal(dict(d)) for d in docs[40:])]
    report = verify([str(write_lines(path, forged))], KEY)
    assert report.first is not None and (report.first.kind, report.first.line) == ("altered", 41)
    report = verify([str(write_lines(tmp_path / "b", forged[40:]))], KEY)
    assert report.first is not None and (report.first.kind, report.first.line) == ("altered", 2)


def test_keyed_chain_without_the_key_cannot_be_checked(tmp_path: Path, replay_alert_lines: list[bytes]) -> None:
    keyed = chain_lines(replay_alert_lines, AlertChain(key=KEY))
    report = verify([str(write_lines(tmp_path / "a", keyed))])
    assert report.needs_key and report.problem_count == 0 and report.exit_code == 2
    assert "give --key-file" in render_text(report)
    # a wrong key on a file that does not begin a segment: the first link fails, with a hint
    report = verify([str(write_lines(tmp_path / "b", keyed[5:]))])
    assert report.first is not None and report.first.kind == "altered" and "--key-file" in report.first.detail


def test_chain_spanning_a_restart_and_a_day_change_passes(tmp_path: Path, replay_alert_lines: list[bytes]) -> None:
    """The writer's way: DailyFile with an injected clock, a restart (and a crash's partial line) between."""
    logs, state = tmp_path / "logs", tmp_path / "state"
    now = [ts("2026-03-01 23:58:00")]
    docs = [orjson.loads(line) for line in replay_alert_lines]

    def run(batch: list[dict[str, object]], step: float) -> None:
        resumed = recover_chain(logs, "alerts.json", state_directory=state, key=KEY)
        chain = AlertChain(resumed.start, key=KEY)
        file = DailyFile(logs, "alerts.json", clock=lambda: now[0])
        for d in batch:
            file.write([chain.seal(dict(d))])
            now[0] += step
        file.close()

    run(docs[:20], 1.0)
    # a crash in the middle of a write leaves half a line; the next start continues before it
    day1 = logs / "alerts.json.2026-03-01"
    with open(day1, "ab") as fh:
        fh.write(b'{"@timestamp":"2026-03-01T23:58:20.000Z","rule.id":"half')
    run(docs[20:60], 5.0)  # crosses midnight
    run(docs[60:], 1.0)
    files = sorted(str(p) for p in logs.iterdir())
    assert [os.path.basename(f) for f in files] == ["alerts.json.2026-03-01", "alerts.json.2026-03-02"]
    report = verify(files, KEY)
    assert report.ok, render_text(report)
    assert report.chained == len(docs) and (report.first_seq, report.last_seq) == (1, len(docs))
    assert len(report.segments) == 1  # one chain: neither the restarts nor the day change started another


def test_run_verify_exit_codes_and_outputs(tmp_path: Path, chained: list[bytes]) -> None:
    good = write_lines(tmp_path / "alerts.json.2026-03-01", chained)
    out, err = io.StringIO(), io.StringIO()
    assert run_verify([str(good)], out=out, err=err) == 0
    assert out.getvalue().startswith(f"OK: {len(chained)} chained line(s)")

    bad = write_lines(tmp_path / "alerts.json.2026-03-02", [*chained[:3], *chained[4:]])
    out = io.StringIO()
    assert run_verify([str(bad)], as_json=True, out=out, err=err) == 1
    doc = orjson.loads(out.getvalue())
    assert doc["ok"] is False and doc["exit_code"] == 1 and doc["problem_count"] == 1
    assert doc["problems"][0] | {"detail": ""} == {
        "kind": "missing", "file": str(bad), "line": 4, "detail": "", "expected_seq": 4, "found_seq": 5,
        "expected_hash": None, "found_hash": None}

    out = io.StringIO()
    assert run_verify([str(bad)], out=out, err=err) == 1
    text = out.getvalue()
    assert text.startswith("BROKEN: 1 problem(s)") and f"first: {bad}:4: missing" in text
    assert "seq:  expected 4, found 5" in text

    err = io.StringIO()
    assert run_verify([str(tmp_path / "absent")], out=io.StringIO(), err=err) == 2
    assert f"cannot read {tmp_path / 'absent'}" in err.getvalue()
    err = io.StringIO()
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    assert run_verify([str(good)], key_file=str(short), out=io.StringIO(), err=err) == 2
    assert f"key file {short}: holds 3 bytes" in err.getvalue()
    assert run_verify([], out=io.StringIO(), err=io.StringIO()) == 2


def test_verifier_is_fed_line_by_line_across_files(chained: list[bytes]) -> None:
    v = ChainVerifier()
    v.start_file("day1")
    for n, line in enumerate(chained[:30], 1):
        v.feed("day1", n, line)
    v.start_file("day2")
    for n, line in enumerate(chained[30:], 1):
        v.feed("day2", n, line)
    report = v.report()
    assert report.ok and report.files == ["day1", "day2"] and report.last_seq == len(chained)
    # files given out of order: day2 then day1
    v = ChainVerifier()
    for n, line in enumerate([*chained[30:], *chained[:30]], 1):
        v.feed("x", n, line)
    report = v.report()
    assert report.first is not None and (report.first.kind, report.first.line) == ("reordered", len(chained) - 29)
    assert "files given out of order" in report.first.detail


def test_the_writers_own_file_verifies_and_a_second_run_continues_its_chain(tmp_path: Path,
                                                                              replay_alert_file: Path) -> None:
    """What `edr replay --output` wrote verifies as written; a second run into the same directory (a restart)
    continues that chain rather than starting a new one; an edit of the real file is then found by the CLI."""
    import shutil
    import subprocess
    import sys

    from .conftest import clean_env

    logs = tmp_path / "logs"
    logs.mkdir()
    copy = logs / replay_alert_file.name
    shutil.copyfile(replay_alert_file, copy)
    written = copy.read_bytes().splitlines()
    assert [seq_of(line) for line in written] == list(range(1, len(written) + 1))

    def cli(*files: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edr", "alerts", "verify", *map(str, files)],
                              env=clean_env(), capture_output=True, text=True, timeout=120)

    r = cli(copy)
    assert r.returncode == 0 and r.stdout.startswith(f"OK: {len(written)} chained line(s)"), r.stdout + r.stderr

    # the restart: a replay of one more recording into the same directory, same day file
    work = replay_alert_file.parent.parent
    sample = sorted(shared_path("evtx-attack-samples", "Execution").glob("*.evtx"))[0]
    r = subprocess.run([sys.executable, "-m", "edr", "replay", "--config", str(work / "edr.toml"), "--no-progress",
                        "--output", str(logs), "--sigma",
                        str(shared_path("sigma", "rules", "windows", "process_creation")), str(sample)],
                       cwd=work, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    files = sorted(logs.glob("alerts.json.*"))
    after = b"".join(p.read_bytes() for p in files).splitlines()
    assert len(after) > len(written)
    report = verify([str(p) for p in files])
    assert report.ok, render_text(report)
    assert len(report.segments) == 1 and report.last_seq == len(after)

    lines = copy.read_bytes().splitlines(keepends=True)
    lines[7] = lines[7].replace(b'"rule.name":"', b'"rule.name":"x', 1)
    copy.write_bytes(b"".join(lines))
    r = cli(*files)
    assert r.returncode == 1 and f"first: {copy}:8: altered" in r.stdout, r.stdout
