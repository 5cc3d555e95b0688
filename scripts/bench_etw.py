"""Benchmark the Windows ETW path on the recorded ETW events (prints figures; not a test).

The 84 records of ../shared/etw-recordings, converted to exactly what
pywintrace hands its callback (``tests/sources/etw/pywintrace_shape.py``), are
repeated to ``--records`` and pushed, per run, through:

(a) the callback bridge alone: a producer thread calling the real callback,
    a Trio task taking the batches;
(b) the normalizer alone, in batches of ``--batch``;
(c) bridge + normalizer: the producer thread -> bridge -> Trio -> normalizer
    (target: at least 150,000 records/s on the 2-vCPU reference VM);
(d) end to end: (c) plus the full SigmaHQ rule set (../shared/sigma) on every
    event (target: at least 25,000 records/s).

Prints records/s (and events/s where events exist) per stage and run, the
median of the runs, and the peak RSS.

Usage: .venv/bin/python scripts/bench_etw.py [--records N] [--runs N] [--batch N] [--shared DIR]
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the converter lives with the tests

from edr.detect.sigma import SigmaEngine, load_sigma  # noqa: E402
from edr.runtime.supervisor import GC_GEN0_THRESHOLD  # noqa: E402
from edr.sources.etw.bridge import CallbackBridge  # noqa: E402
from edr.sources.etw.host import DeviceMap  # noqa: E402
from edr.sources.etw.normalize import EtwNormalizer  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def normalizer() -> EtwNormalizer:
    return EtwNormalizer(devices=DeviceMap({"\\Device\\HarddiskVolume3": "C:"}))


def through_bridge(records: list[Any], batch: int, work: Callable[[list[Any]], int]) -> tuple[float, int]:
    """Seconds to push ``records`` from a thread through the bridge into ``work`` (per batch); events made."""
    bridge = CallbackBridge(len(records))
    made = 0

    async def main() -> None:
        nonlocal made
        bridge.attach()
        callback = bridge.callback

        def produce() -> None:
            for record in records:
                callback(record)

        producer = threading.Thread(target=produce)
        producer.start()
        taken = 0
        while taken < len(records):
            got = await bridge.receive()
            taken += len(got)
            for i in range(0, len(got), batch):
                made += work(got[i:i + batch])
        producer.join()

    started = time.perf_counter()
    trio.run(main)
    elapsed = time.perf_counter() - started
    assert bridge.statistics()["overflow_total"] == 0
    return elapsed, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--shared", default=str(REPO / ".." / "shared"))
    args = parser.parse_args()
    shared = Path(args.shared).resolve()
    if not (shared / "etw-recordings").is_dir() or not (shared / "sigma").is_dir():
        print(f"reference data not found under {shared}", file=sys.stderr)
        return 2
    from tests.sources.etw.pywintrace_shape import all_recorded

    base = all_recorded()
    records = (base * (args.records // len(base) + 1))[: args.records]
    with tempfile.TemporaryDirectory() as cache:
        engine, report = load_sigma([str(shared / "sigma")], cache_dir=cache)
    print(f"{len(base)} recorded records repeated to {len(records):,}; batches of {args.batch}; "
          f"SigmaHQ: {report.loaded} rules loaded")
    gc.collect()
    gc.freeze()
    if GC_GEN0_THRESHOLD is not None:  # as the supervisor runs a graph
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])

    results: dict[str, list[float]] = {"bridge": [], "normalizer": [], "bridge+normalizer": [], "end to end": []}
    alerts_seen = 0
    for run in range(1, args.runs + 1):
        elapsed, _ = through_bridge(records, args.batch, len)
        results["bridge"].append(len(records) / elapsed)

        n = normalizer()
        started = time.perf_counter()
        events = 0
        for i in range(0, len(records), args.batch):
            events += len(n.normalize_batch(records[i:i + args.batch]))
        elapsed = time.perf_counter() - started
        results["normalizer"].append(len(records) / elapsed)

        n = normalizer()
        elapsed, made = through_bridge(records, args.batch, lambda b, n=n: len(n.normalize_batch(b)))
        results["bridge+normalizer"].append(len(records) / elapsed)

        n = normalizer()
        alerts = 0

        def detect(batch: list[Any], n: EtwNormalizer = n, engine: SigmaEngine = engine) -> int:
            nonlocal alerts
            evs = n.normalize_batch(batch)
            alerts += sum(len(engine.match(e)) for e in evs)
            return len(evs)

        elapsed, made = through_bridge(records, args.batch, detect)
        results["end to end"].append(len(records) / elapsed)
        alerts_seen = alerts
        print(f"run {run}: " + ", ".join(f"{k} {v[-1]:,.0f} records/s" for k, v in results.items())
              + f" ({made:,} events, {alerts:,} alerts)")
    print("median: " + ", ".join(f"{k} {statistics.median(v):,.0f} records/s" for k, v in results.items()))
    print(f"targets: bridge+normalizer >= 150,000 records/s: "
          f"{'met' if statistics.median(results['bridge+normalizer']) >= 150_000 else 'NOT met'}; "
          f"end to end >= 25,000 records/s: "
          f"{'met' if statistics.median(results['end to end']) >= 25_000 else 'NOT met'}")
    print(f"alerts per end-to-end run: {alerts_seen:,}; peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
