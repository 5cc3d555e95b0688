#!/usr/bin/env python3
"""CPU instructions per event of the replay pipeline and of the Sigma engine (callgrind).

This VM's speed drifts by up to ±40 % from one minute to the next, so events/s
figures of two builds taken minutes apart cannot be compared. Instruction
counts under ``valgrind --tool=callgrind`` are the same on every run of the
same code and input, whatever the other tenants do: this script prints them,
as the difference between a run over N and over 2N events divided by N, so
start-up (imports, rule loading) cancels out.

    python scripts/bench_instructions.py pipeline   # replay graph, simple rules, 20k vs 40k events
    python scripts/bench_instructions.py sigma      # Sigma engine on SigmaHQ, 2,000 sample events, 1 vs 3 passes

``pipeline`` uses the events of ``scripts/bench_pipeline.py``; ``sigma`` needs
``../shared`` and compiles the rule cache natively first (under callgrind a
cold pySigma load would take many minutes).
"""

from __future__ import annotations

import argparse
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def callgrind_total(args: list[str]) -> int:
    """Instructions executed by ``python args...`` under callgrind."""
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                             sys.executable, *args], capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def pipeline(work: Path) -> None:
    """Per-event instructions of the replay graph (bench_pipeline's events, simple rules)."""
    sys.path.insert(0, str(HERE))
    import bench_pipeline

    n = 20_000
    for size in (n, 2 * n):
        bench_pipeline.generate(work / f"events-{size}.ndjson", size)
    totals = [callgrind_total([__file__, "--child", "pipeline", str(work), str(size)]) for size in (n, 2 * n)]
    print(f"replay pipeline: {(totals[1] - totals[0]) / n:,.0f} instructions per event "
          f"(callgrind: {totals[0]:,} for {n:,} events, {totals[1]:,} for {2 * n:,})")


def sigma(work: Path) -> None:
    """Per-event instructions of SigmaEngine.match on a sample of the attack EVTX events."""
    from edr.detect.sigma import load_sigma
    from edr.sources.replay.winlog import iter_winlog_events

    samples = SHARED / "evtx-attack-samples"
    if not (SHARED / "sigma").is_dir() or not samples.is_dir():
        raise SystemExit(f"reference data not found under {SHARED}")
    load_sigma([str(SHARED / "sigma")], cache_dir=str(work / "cache"))  # fill the rule cache natively
    events = [e for path in sorted(samples.rglob("*.evtx")) for e in iter_winlog_events(path)]
    sample = random.Random(3).sample(events, 2000)
    (work / "sample.pickle").write_bytes(pickle.dumps(sample))
    totals = [callgrind_total([__file__, "--child", "sigma", str(work), str(passes)]) for passes in (1, 3)]
    print(f"sigma engine: {(totals[1] - totals[0]) / 4000:,.0f} instructions per event "
          f"(callgrind: 2,000 sample events of {len(events):,}, 1 pass {totals[0]:,}, 3 passes {totals[1]:,})")


def child(kind: str, work: Path, count: int) -> None:
    """The measured process: runs under callgrind."""
    if kind == "pipeline":
        sys.path.insert(0, str(HERE))
        import bench_pipeline

        args = argparse.Namespace(events=count, engines="simple", profile=None)
        out = work / f"out-{count}"
        out.mkdir(exist_ok=True)
        if bench_pipeline.run_once(args, out, work / f"events-{count}.ndjson", profile=None) is None:
            raise SystemExit(1)
        return
    import gc

    from edr.detect.sigma import load_sigma

    engine, _report = load_sigma([str(SHARED / "sigma")], cache_dir=str(work / "cache"))
    events = pickle.loads((work / "sample.pickle").read_bytes())
    for event in events[:200]:  # build the route indexes before counting
        engine.match(event)
    gc.collect()
    gc.freeze()
    for _ in range(count):
        for event in events:
            engine.match(event)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", help="pipeline, sigma, or both (default)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DIR", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, work, count = args.child
        child(kind, Path(work), int(count))
        return 0
    unknown = set(args.what) - {"pipeline", "sigma"}
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))} (choose pipeline, sigma)")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edr-instr-") as tmp:
        for what in args.what or ["pipeline", "sigma"]:
            {"pipeline": pipeline, "sigma": sigma}[what](Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
