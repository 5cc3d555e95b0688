#!/usr/bin/env python3
"""Sensor latency: from the kernel's stamp of an exec to the record leaving ``EbpfSensor.poll``.

Two loads, each measured on the real BPF programs (process family only):

- quiet: one ``/bin/true`` every ``--gap`` seconds (a host doing almost nothing);
- busy: ``--rate`` execs per second from a load process, of which the same
  marked executions are timed.

Latency is ``CLOCK_BOOTTIME`` when ``poll`` returned the record minus the
record's own kernel timestamp (the exec's tracepoint), so the program's
scheduling after the poll is not in it. Prints p50/p90/p99/max in ms and the
batches per second. Needs root. Not a test: run it by hand, e.g.
``.venv/bin/python scripts/bench_latency.py --samples 40``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from edr.sources.ebpf import records as r  # noqa: E402
from edr.sources.ebpf.sensor import EbpfSensor  # noqa: E402

MARK = b"edr-latency-"


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _load(rate: float, stop: threading.Event) -> None:
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        subprocess.run(["/bin/true", "edr-latency-load"], check=False)
        nxt += period
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def measure(samples: int, gap: float, rate: float) -> tuple[list[float], float]:
    """Latencies (ms) of ``samples`` marked execs, and the batches per second seen meanwhile."""
    sensor = EbpfSensor(families={r.PROCESS})
    sensor.open()
    latencies: list[float] = []
    polls = batches = 0
    stop = threading.Event()
    done = threading.Event()
    pids: set[int] = set()

    def poller() -> None:
        nonlocal polls, batches
        while not done.is_set():
            out = sensor.poll(100)
            at = _now_ns()
            polls += 1
            batches += bool(out)
            for rec in out:
                hdr = r.HDR.unpack_from(rec.data)
                if hdr[2] == r.EV_EXEC and hdr[4] in pids:
                    latencies.append((at - hdr[0]) / 1e6)

    load = threading.Thread(target=_load, args=(rate, stop), daemon=True) if rate else None
    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    if load is not None:
        load.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        for i in range(samples):
            child = subprocess.Popen(["/bin/true", f"{MARK.decode()}{i}"])
            pids.add(child.pid)
            child.wait()
            time.sleep(gap)
        time.sleep(0.3)
    finally:
        elapsed = time.monotonic() - started
        stop.set()
        done.set()
        thread.join()
        sensor.close()
    return latencies, batches / elapsed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40, help="marked execs timed per load")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between two marked execs")
    p.add_argument("--rate", type=float, default=400, help="exec/s of the busy load")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_latency: needs root (it loads BPF programs)", file=sys.stderr)
        return 2
    print(f"{'load':>10} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'batches/s':>10}")
    for name, rate in (("quiet", 0.0), (f"{args.rate:g}/s", args.rate)):
        lat, bps = measure(args.samples, args.gap, rate)
        if not lat:
            print(f"{name:>10} no marked exec seen")
            continue
        print(f"{name:>10} {len(lat):>4} {statistics.median(lat):>8.2f} {_pct(lat, 0.9):>8.2f} "
              f"{_pct(lat, 0.99):>8.2f} {max(lat):>8.2f} {bps:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
