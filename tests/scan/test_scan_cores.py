"""Sans-IO scan cores: hashing, identity cache, allowlists, settle tracking, sweep rate limit, FileScanner."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from edr.detect.yara_rules import compile_rules
from edr.scan.allowlist import PrefixAllowlist
from edr.scan.file_scan import MB, FileScanner, FileVerdict, ScanLimits, looks_executable
from edr.scan.hashing import HashTimeout, hash_stream
from edr.scan.identity import FileIdentity, IdentityCache
from edr.scan.memory import SweepPlanner, TokenBucket
from edr.scan.settle import SettleTracker
from tests.scan.marked import RULE, marked_binary, rules_dir


def scanner(tmp_path: Path, *, yara_allow: list[str] = (), hash_allow: list[str] = (),
            want_hashes: bool = True, **limits: float) -> FileScanner:
    return FileScanner(compile_rules(rules_dir(tmp_path / "rules")), want_hashes=want_hashes,
                       limits=ScanLimits(**limits), yara_allowlist=PrefixAllowlist(yara_allow),
                       hash_allowlist=PrefixAllowlist(hash_allow), cache=IdentityCache[FileVerdict](8))


def test_hash_stream_matches_hashlib_in_one_pass() -> None:
    data = os.urandom(3 * MB + 17)
    assert hash_stream(io.BytesIO(data)) == {
        "md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest()}
    with pytest.raises(HashTimeout):
        hash_stream(io.BytesIO(data), deadline=0.0)
    with pytest.raises(ValueError):
        hash_stream(io.BytesIO(data), max_bytes=MB)


def test_identity_cache_is_bounded_lru() -> None:
    cache = IdentityCache[str](2)
    keys = [FileIdentity(1, i, 10, 5) for i in range(3)]
    cache.put(keys[0], "a")
    cache.put(keys[1], "b")
    assert cache.get(keys[0]) == "a"  # refresh a: b is now the oldest
    cache.put(keys[2], "c")
    assert cache.get(keys[1]) is None and cache.get(keys[0]) == "a" and len(cache) == 2
    assert cache.evictions == 1


def test_prefix_allowlist_posix_exact_windows_case_insensitive() -> None:
    posix = PrefixAllowlist(["/usr/bin/", ""], windows=False)
    assert posix.match("/usr/bin/ls") and not posix.match("/usr/binx/ls") and not posix.match("/USR/BIN/ls")
    win = PrefixAllowlist(["C:\\Windows\\"], windows=True)
    assert win.match("c:/windows/System32/cmd.exe") and not win.match("C:\\Temp\\x.exe")
    assert not PrefixAllowlist([]).match("/anything")


def test_settle_tracker_waits_for_quiet_and_is_bounded() -> None:
    t = SettleTracker(1.0, capacity=2)
    t.touch("/a", 0.0)
    t.touch("/b", 0.5)
    assert t.due(0.9) == []
    t.touch("/a", 0.95)  # written again: its quiet period restarts
    assert t.due(1.6) == ["/b"]
    assert t.next_due() == pytest.approx(1.95)
    assert t.touch("/c", 1.7) and not t.touch("/d", 1.7) and t.dropped == 1
    t.forget("/c")
    assert t.due(5.0) == ["/a"] and t.flush() == []


def test_sweep_planner_rate_limits_and_excludes() -> None:
    planner = SweepPlanner(rate_per_minute=6, exclude=[100])
    assert planner.start([1, 4, 100, 200, 300, 400, 500, 600, 700, 800])
    first = planner.take(0.0)
    assert first == [200, 300, 400, 500, 600, 700]  # a minute's burst, never pids <= 4 or excluded
    assert planner.take(1.0) == []
    assert not planner.start([900])  # previous round unfinished
    assert planner.take(10.0) == [800]
    bucket = TokenBucket(60)
    assert sum(bucket.take(0.0) for _ in range(100)) == 60


def test_looks_executable() -> None:
    assert looks_executable(b"\x7fELF", 0o644)
    assert looks_executable(b"#!/b", 0o700) and not looks_executable(b"#!/b", 0o644)
    assert not looks_executable(b"hell", 0o755)


def test_scanner_hit_hashes_and_cache_by_identity(tmp_path: Path) -> None:
    s = scanner(tmp_path)
    path = marked_binary(tmp_path / "bin")
    v = s.scan_file(str(path))
    assert v.status == "scanned" and [h.rule for h in v.hits] == [RULE]
    assert v.hashes is not None and v.hashes["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    again = s.scan_file(str(path))
    assert again.cached and again.hits == v.hits and s.counts["yara_scanned"] == 1
    # rewritten: new identity, rescanned
    marked_binary(tmp_path / "bin", marker=False)
    assert s.scan_file(str(path)).hits == () and s.counts["yara_scanned"] == 2


def test_scanner_allowlist_size_limits_and_bad_files(tmp_path: Path) -> None:
    allowed = tmp_path / "trusted"
    s = scanner(tmp_path, yara_allow=[f"{allowed}/"], hash_allow=[f"{allowed}/"],
                yara_max_bytes=1 * MB, hash_max_bytes=1 * MB)
    assert s.scan_file(str(marked_binary(allowed))).status == "allowlisted"
    big = s.scan_file(str(marked_binary(tmp_path / "big", pad=2 * MB)))
    assert big.hits == () and big.yara_skip == "too_large" and big.hash_skip == "too_large"
    assert s.counts["yara_too_large"] == 1 and s.counts["hash_too_large"] == 1
    assert s.counts["allowlisted"] == 1
    assert s.scan_file(str(tmp_path / "vanished")).status == "missing"
    assert s.scan_file(str(tmp_path)).status == "not_regular"
    assert s.scan_file("/dev/null").status == "not_regular"
    os.mkfifo(tmp_path / "fifo")
    assert s.scan_file(str(tmp_path / "fifo")).status == "not_regular"  # and does not hang
    (tmp_path / "notes.txt").write_text("just text")
    assert s.scan_file(str(tmp_path / "notes.txt"), require_executable=True).status == "not_executable"


def test_scanner_without_hash_iocs_hashes_only_yara_hits(tmp_path: Path) -> None:
    s = scanner(tmp_path, want_hashes=False)
    clean = s.scan_file(str(marked_binary(tmp_path / "b", "clean", marker=False)))
    assert clean.hashes is None and clean.hash_skip == "not_needed"
    assert s.scan_file(str(marked_binary(tmp_path / "b"))).hashes is not None
