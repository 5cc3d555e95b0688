#!/usr/bin/env python3
"""Latency: an exec to its record leaving the sensor (``--sensor``), or to its alert line in the file (``--agent``).

``--agent`` (the default): a real ``edr run`` with a simple rule on a marked
program; each repetition execs the marked program (a distinct argument, so
that dedup folds nothing) and times until its alert line is in the alert
file (``--samples`` repetitions on a quiet host, then the same under a
``--rate`` exec/s storm). With ``--sigma PATH`` the agent also loads those
Sigma rules (e.g. all of SigmaHQ).

``--sensor``: two loads, each measured on the real BPF programs (process family only):

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


#: threads that exec the load (one falls short of 1,600 exec/s here)
LOAD_THREADS = 2
#: execs the load made and the seconds it ran, for the rate it reached (one process can fall short of --rate)
LOAD_DONE: list[float] = [0, 0.0]


def _load(rate: float, stop: threading.Event) -> None:
    period = 1.0 / rate
    nxt = started = time.monotonic()
    while not stop.is_set():
        subprocess.run(["/bin/true", "edr-latency-load"], check=False)
        LOAD_DONE[0] += 1
        LOAD_DONE[1] = max(LOAD_DONE[1], time.monotonic() - started)
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


def agent_latencies(samples: int, gap: float, rate: float, sigma: str | None, work: Path) -> list[float]:
    """Milliseconds from just before each marked exec to its alert line in the agent's alert file."""
    import shutil

    marked = work / "edr-latency-mark"
    shutil.copy("/bin/true", marked)
    rules = work / "rules.toml"
    rules.write_text('[[rules]]\nid = "LAT-1"\nname = "latency mark"\ntype = "process"\nseverity = "high"\n'
                     'action = "alert"\nprocess_names = ["edr-latency-mark"]\n')
    sigma_lines = f'sigma_rules_path = "{sigma}"\n' if sigma else "sigma_enabled = false\n"
    (work / "edr.toml").write_text(
        f"[scanner]\n{sigma_lines}yara_enabled = false\n[ioc]\nenabled = false\n"
        f'[simple]\nrules_path = "{rules}"\n[sigma]\ncache_dir = "{work / "cache"}"\n'
        f'[logging]\ndirectory = "{work / "logs"}"\n[alerts]\ndirectory = "{work / "logs"}"\n'
        f'[agent]\nstate_directory = "{work / "state"}"\n[response]\nenabled = false\n')
    agent = subprocess.Popen([sys.executable, "-m", "edr", "run", "--config", str(work / "edr.toml"),
                              "--no-console"], cwd=work, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    loads = [threading.Thread(target=_load, args=(rate / LOAD_THREADS, stop), daemon=True)
             for _ in range(LOAD_THREADS if rate else 0)]
    try:
        deadline = time.monotonic() + 300
        while not any("edr started" in f.read_text(errors="replace") for f in (work / "logs").glob("edr.log.*")):
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit("bench_latency: the agent did not start")
            time.sleep(0.2)
        for load in loads:
            load.start()
        time.sleep(1.0)
        out: list[float] = []
        seen = 0
        for i in range(samples):
            t0 = time.monotonic()
            subprocess.run([str(marked), f"mark-{rate:g}-{i}"], check=True)
            while True:
                lines = b"".join(f.read_bytes() for f in (work / "logs").glob("alerts.json.*")).count(b'"LAT-1"')
                if lines > seen:
                    out.append((time.monotonic() - t0) * 1000)
                    seen = lines
                    break
                if time.monotonic() - t0 > 10:
                    break
                time.sleep(0.0002)
            time.sleep(gap)
        return out
    finally:
        stop.set()
        agent.terminate()
        agent.wait(timeout=60)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40, help="marked execs timed per load")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between two marked execs")
    p.add_argument("--rate", type=float, default=400, help="exec/s of the busy load")
    p.add_argument("--sensor", action="store_true", help="the sensor alone (kernel stamp to poll), not the agent")
    p.add_argument("--sigma", metavar="PATH", help="--agent: Sigma rules the agent loads too (e.g. SigmaHQ)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_latency: needs root (it loads BPF programs)", file=sys.stderr)
        return 2
    if not args.sensor:
        import tempfile

        print(f"exec -> alert line in the file; {args.samples} marks per load"
              + (f"; Sigma rules from {args.sigma}" if args.sigma else ""))
        print(f"{'load':>10} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, rate in (("quiet", 0.0), (f"{args.rate:g}/s", args.rate)):
            LOAD_DONE[:] = [0, 0.0]
            with tempfile.TemporaryDirectory(prefix="edr-latency-") as tmp:
                lat = agent_latencies(args.samples, args.gap, rate, args.sigma, Path(tmp))
            if rate and LOAD_DONE[1]:
                name = f"{LOAD_DONE[0] / LOAD_DONE[1]:.0f}/s"  # the rate the load reached
            if not lat:
                print(f"{name:>10} no alert seen")
                continue
            print(f"{name:>10} {len(lat):>4} {statistics.median(lat):>8.2f} {_pct(lat, 0.9):>8.2f} "
                  f"{_pct(lat, 0.99):>8.2f} {max(lat):>8.2f}")
        return 0
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
