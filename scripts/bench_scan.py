#!/usr/bin/env python3
"""Benchmark file scanning: files/s and MB/s for YARA, hashing and both, by worker count.

Generates files in a temporary directory (random bytes, a few carrying the
test marker), then for each worker count runs the same work through a
thread pool, as the scan dispatcher's workers do. Files are read from the
page cache after the first pass, so the figures are CPU cost, not disk.

    python3 scripts/bench_scan.py                       # 200 x 1 MiB, workers 1 2 4
    python3 scripts/bench_scan.py --files 50 --size-mb 8 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from edr.detect.yara_rules import compile_rules  # noqa: E402
from edr.scan.allowlist import PrefixAllowlist  # noqa: E402
from edr.scan.file_scan import MB, FileScanner, FileVerdict, ScanLimits  # noqa: E402
from edr.scan.hashing import hash_path  # noqa: E402
from edr.scan.identity import IdentityCache  # noqa: E402

MARKER = "_".join(["EDR", "TEST", "MARKER", "7f3a9c2e", "DO", "NOT", "PANIC"]).encode()


def make_files(directory: Path, count: int, size: int) -> list[Path]:
    """``count`` files of ``size`` random bytes; every tenth carries the marker."""
    files = []
    for i in range(count):
        path = directory / f"sample{i:05d}.bin"
        data = bytearray(os.urandom(size))
        if i % 10 == 0:
            data[size // 2: size // 2 + len(MARKER)] = MARKER
        path.write_bytes(bytes(data))
        files.append(path)
    return files


def timed(workers: int, files: list[Path], job: Callable[[str], object]) -> float:
    """Seconds to run ``job`` over every file with ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.perf_counter()
        list(pool.map(job, (str(f) for f in files)))
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rules", default=str(REPO / "rules/yara"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is shown")
    args = parser.parse_args(argv)

    rules = compile_rules(args.rules)
    if rules.rules is None:
        print(f"no YARA rules loaded from {args.rules}: {rules.errors}", file=sys.stderr)
        return 1
    size = int(args.size_mb * MB)
    with tempfile.TemporaryDirectory(prefix="edr-bench-") as tmp:
        files = make_files(Path(tmp), args.files, size)
        total_mb = len(files) * size / MB

        def yara_job(path: str) -> object:
            return rules.scan_file(path, 60)

        def both_job_factory() -> Callable[[str], object]:
            # A fresh scanner per run: an empty identity cache, so every file is really scanned.
            scanner = FileScanner(rules, want_hashes=True, limits=ScanLimits(timeout=60),
                                  yara_allowlist=PrefixAllowlist([]), hash_allowlist=PrefixAllowlist([]),
                                  cache=IdentityCache[FileVerdict](len(files) + 1))
            return scanner.scan_file

        timed(2, files, hash_path)  # warm the page cache
        print(f"{len(files)} files x {args.size_mb:g} MiB = {total_mb:.0f} MiB; "
              f"{rules.rule_count} YARA rule(s); {os.cpu_count()} CPU(s); python {sys.version.split()[0]}")
        print(f"{'work':<22}{'workers':>8}{'seconds':>10}{'files/s':>10}{'MB/s':>10}")
        for name, make_job in (("yara", lambda: yara_job), ("hash md5+sha1+sha256", lambda: hash_path),
                               ("scanner (yara+hash)", both_job_factory)):
            for workers in args.workers:
                secs = min(timed(workers, files, make_job()) for _ in range(args.repeat))
                rate = len(files) / secs
                print(f"{name:<22}{workers:>8}{secs:>10.2f}{rate:>10.1f}{total_mb / secs:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
