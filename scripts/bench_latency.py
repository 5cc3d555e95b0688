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
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from edr.sources.ebpf import records as r  # noqa: E402
from edr.sources.ebpf.sensor import EbpfSensor  # noqa: E402

MARK = b"edr-latency-"


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


#: threads that exec the --sensor load (one falls short of 1,600 exec/s here)
LOAD_THREADS = 2
#: processes that exec the --agent load (bench_exec_storm.py --load)
LOAD_PROCS = 2
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


def agent_latencies(samples: int, gap: float, rate: float, sigma: str | None, work: Path,
                    trace: Path | None = None) -> list[float]:
    """Milliseconds from just before each marked exec to its alert line in the agent's alert file.

    With ``trace``, the agent runs under :func:`traced_agent` and the marks
    slower than 10 ms are explained from its trace once it has stopped.
    """
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
    run = ["run", "--config", str(work / "edr.toml"), "--no-console"]
    head = [sys.executable, "-m", "edr"] if trace is None else [
        sys.executable, str(Path(__file__).resolve()), "--traced-agent", str(trace), "--"]
    marks: list[tuple[str, float, float]] = []
    agent = subprocess.Popen([*head, *run], cwd=work, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loads: list[subprocess.Popen[str]] = []
    load_started = 0.0
    try:
        deadline = time.monotonic() + 300
        while not any("edr started" in f.read_text(errors="replace") for f in (work / "logs").glob("edr.log.*")):
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit("bench_latency: the agent did not start")
            time.sleep(0.2)
        if rate:
            # The storm comes from other processes (bench_exec_storm.py's posix_spawn load, which
            # reaches 1,600/s here): load threads in this process would take the GIL from the timing
            # loop below (up to the 5 ms switch interval per mark) and fall short of the rate.
            storm = Path(__file__).resolve().parent / "bench_exec_storm.py"
            loads = [subprocess.Popen([sys.executable, str(storm), "--load", str(rate / LOAD_PROCS), "3600",
                                       "edr-latency-load"], stdout=subprocess.PIPE, text=True)
                     for _ in range(LOAD_PROCS)]
            load_started = time.monotonic()
        time.sleep(1.0)
        out: list[float] = []
        seen = 0
        rng = random.Random(18)
        for i in range(samples):
            t0 = time.monotonic()
            subprocess.run([str(marked), f"mark-{rate:g}-{i}"], check=True)
            while True:
                lines = b"".join(f.read_bytes() for f in (work / "logs").glob("alerts.json.*")).count(b'"LAT-1"')
                if lines > seen:
                    t1 = time.monotonic()
                    out.append((t1 - t0) * 1000)
                    marks.append((f"mark-{rate:g}-{i}", t0, t1))
                    seen = lines
                    break
                if time.monotonic() - t0 > 10:
                    break
                time.sleep(0.0002)
            # a random gap (the same sequence every run): a fixed gap that is a multiple of the sensor's
            # batch window under a storm (50 ms, 25 ms) puts every mark at the same phase of the
            # drains, which measures that phase rather than the latency of an exec at any moment
            time.sleep(gap * rng.uniform(0.5, 1.5))
        return out
    finally:
        if loads:
            for load in loads:
                load.terminate()
            LOAD_DONE[:] = [sum(int((load.communicate()[0] or "0").strip() or 0) for load in loads),
                            time.monotonic() - load_started]
        agent.terminate()
        agent.wait(timeout=60)
        if trace is not None and trace.exists():
            explain(trace, marks, 10.0)


# ------------------------------------------------------------------ trace --
#: a trio task step or a GC pass at least this long is recorded (ms)
TRACE_SLOW_MS = 1.0


def traced_agent(trace: str, argv: list[str]) -> int:
    """``edr`` with ``argv``, recording what each hop did with the marked execs and what else ran meanwhile.

    Instruments from outside (nothing in edr knows): the exec's kernel stamp,
    each poll of the sensor (and whether the pacer made it wait a batch
    window), the decoder, router, enricher, detection, alert lines and the
    file write reached by each marked event; every trio task step and every
    GC pass over TRACE_SLOW_MS. All times CLOCK_MONOTONIC seconds. Written
    to ``trace`` as JSON at exit.
    """
    import atexit
    import gc
    import json

    import trio

    from edr.alerts.alert_lines import AlertLines
    from edr.alerts.daily_file import DailyFile
    from edr.detect.actor import DetectActor
    from edr.enrich.actor import EnricherActor
    from edr.route.router import Router
    from edr.sources.ebpf.decode import Decoder
    from edr.sources.ebpf.sensor import EbpfSensor

    mono = time.monotonic
    boot_minus_mono = time.clock_gettime(time.CLOCK_BOOTTIME) - mono()
    out: dict[str, list[Any]] = {"hops": [], "steps": [], "gc": [], "polls": [], "threads": []}
    hops = out["hops"]

    def marks_in(events: Any) -> list[str]:
        found = []
        for e in events:
            cmd = getattr(e, "fields", {}).get("CommandLine", "")
            if isinstance(cmd, str) and "edr-latency-mark mark-" in cmd:
                found.append(cmd.rsplit(" ", 1)[-1])
        return found

    def wrap(cls: type, name: str, hop: str, of_result: bool = False) -> None:
        orig = getattr(cls, name)

        def wrapped(self: Any, arg: Any, *a: Any, **k: Any) -> Any:
            t_in = mono()
            res = orig(self, arg, *a, **k)
            for m in marks_in(res if of_result else arg):
                hops.append((m, hop, t_in, mono()))
            return res
        setattr(cls, name, wrapped)

    orig_decode = Decoder.decode

    def decode(self: Any, raw: Any) -> Any:
        t_in = mono()
        res = orig_decode(self, raw)
        for m in marks_in(res):
            hops.append((m, "kernel", r.record_time(raw) / 1e9 - boot_minus_mono, 0.0))
            hops.append((m, "decode", t_in, mono()))
        return res
    Decoder.decode = decode
    wrap(Router, "split", "route")
    wrap(EnricherActor, "enrich", "enrich")
    wrap(DetectActor, "detect", "detect")
    orig_accept = AlertLines.accept

    def accept(self: Any, alerts: Any) -> Any:
        t_in = mono()
        alerts = list(alerts)
        res = orig_accept(self, alerts)
        for m in marks_in(a.event for a in alerts):
            hops.append((m, "alert_lines", t_in, mono()))
        return res
    AlertLines.accept = accept
    orig_write = DailyFile.write
    import edr.alerts.actor as alerts_actor

    orig_save = alerts_actor.save_anchor

    def save_anchor(*a: Any) -> None:
        t_in = mono()
        try:
            orig_save(*a)
        finally:
            out["threads"].append((t_in, mono() - t_in, "alerts: chain anchor saved"))
    alerts_actor.save_anchor = save_anchor

    def write(self: Any, lines: Any) -> None:
        t_in = mono()
        orig_write(self, lines)
        out["threads"].append((t_in, mono() - t_in, f"{self.filename}: {len(lines)} line(s) written"))
        for line in lines:
            i = line.find(b"edr-latency-mark mark-")
            if i >= 0:
                m = line[i:].split(b" ", 1)[1].split(b'"', 1)[0].decode()
                hops.append((m, "file_write", t_in, mono()))
    DailyFile.write = write
    orig_poll = EbpfSensor.poll

    def poll(self: Any, timeout_ms: int) -> Any:
        t_in = mono()
        windowed = self._pacer.windowed
        res = orig_poll(self, timeout_ms)
        out["polls"].append((t_in, mono(), len(res), self._pacer.windowed - windowed))
        return res
    EbpfSensor.poll = poll

    gc_started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = mono()
        elif (took := mono() - gc_started[0]) * 1000 >= TRACE_SLOW_MS:
            out["gc"].append((gc_started[0], took, info.get("generation"), info.get("collected")))
    gc.callbacks.append(on_gc)

    class SlowSteps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.started = 0.0

        def before_task_step(self, task: object) -> None:
            self.started = mono()

        def after_task_step(self, task: object) -> None:
            took = mono() - self.started
            if took * 1000 >= TRACE_SLOW_MS:
                out["steps"].append((self.started, took, getattr(task, "name", "?")))

    orig_run = trio.run

    def run(*a: Any, **k: Any) -> Any:
        k["instruments"] = [*k.get("instruments", ()), SlowSteps()]
        return orig_run(*a, **k)
    trio.run = run  # type: ignore[assignment]
    atexit.register(lambda: Path(trace).write_text(json.dumps(out)))
    from edr.cli import main as edr_main

    return int(edr_main(argv))


def explain(trace: Path, marks: list[tuple[str, float, float]], slow_ms: float) -> None:
    """Print, for each mark slower than ``slow_ms``, its hops and what else ran meanwhile (from the trace)."""
    import json

    data = json.loads(trace.read_text())
    by_mark: dict[str, list[tuple[str, float, float]]] = {}
    for m, hop, t_in, t_out in data["hops"]:
        by_mark.setdefault(m, []).append((hop, t_in, t_out))
    slow = [(m, t0, t1) for m, t0, t1 in marks if (t1 - t0) * 1000 > slow_ms]
    if marks:
        # how quiet the host was: every record the sensor drained while the marks ran (the agent's own excluded)
        start, end = marks[0][1], marks[-1][2]
        polls = [p for p in data["polls"] if start <= p[1] <= end]
        print(f"  the host meanwhile: {sum(p[2] for p in polls) / max(end - start, 1e-9):.0f} records/s drained, "
              f"{sum(1 for p in polls if p[3])} of {sum(1 for p in polls if p[2])} drains after a batch window")
    print(f"  {len(slow)} mark(s) over {slow_ms:g} ms; where their time went:")
    for m, t0, t1 in slow:
        hops = {hop: (t_in, t_out) for hop, t_in, t_out in by_mark.get(m, [])}
        if "decode" not in hops or "file_write" not in hops:
            print(f"    {m}: {(t1 - t0) * 1000:.1f} ms, hops missing from the trace")
            continue
        decoded = hops["decode"][0]
        # the drain that delivered the exec: the last poll to return before it was decoded
        poll = max((p for p in data["polls"] if p[1] <= decoded), key=lambda p: p[1], default=None)
        kernel = hops["kernel"][0]
        parts = [f"exec to its drain {((poll[1] if poll else decoded) - kernel) * 1000:.1f} ms"
                 + (f" (a batch window: {poll[2]} records in that drain)" if poll and poll[3] else ""),
                 f"drain to decode {(decoded - (poll[1] if poll else decoded)) * 1000:.1f} ms",
                 f"decode to the file write {(hops['file_write'][0] - decoded) * 1000:.1f} ms",
                 f"file write to seen {(t1 - hops['file_write'][1]) * 1000:.1f} ms"]
        print(f"    {m}: {(t1 - t0) * 1000:.1f} ms: " + "; ".join(parts))
    for m, t0, t1 in sorted(slow, key=lambda s: s[1] - s[2])[:3]:  # the three slowest in detail
        print(f"  mark {m}: {(t1 - t0) * 1000:.1f} ms (exec started at +0)")
        for hop, t_in, t_out in sorted(by_mark.get(m, []), key=lambda h: h[1]):
            took = f" took {(t_out - t_in) * 1000:.2f} ms" if t_out else ""
            print(f"    +{(t_in - t0) * 1000:7.2f} ms {hop}{took}")
        for t_in, t_out, n, windowed in data["polls"]:
            if t_out >= t0 and t_in <= t1:
                print(f"    +{(t_in - t0) * 1000:7.2f} ms poll -> +{(t_out - t0) * 1000:.2f} ms: {n} records"
                      + (" (batch window)" if windowed else ""))
        for start, took, name in data["steps"]:
            if start + took >= t0 and start <= t1:
                print(f"    +{(start - t0) * 1000:7.2f} ms trio step of {took * 1000:.2f} ms: {name}")
        for start, took, what in data["threads"]:
            if start + took >= t0 and start <= t1:
                print(f"    +{(start - t0) * 1000:7.2f} ms worker thread {took * 1000:.2f} ms: {what}")
        for start, took, gen, collected in data["gc"]:
            if start + took >= t0 and start <= t1:
                print(f"    +{(start - t0) * 1000:7.2f} ms GC gen {gen} {took * 1000:.2f} ms ({collected} collected)")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40, help="marked execs timed per load")
    p.add_argument("--gap", type=float, default=0.25,
                   help="seconds between two marked execs (the agent: on average, uniform in [gap/2, 3 gap/2])")
    p.add_argument("--rate", type=float, default=400, help="exec/s of the busy load")
    p.add_argument("--sensor", action="store_true", help="the sensor alone (kernel stamp to poll), not the agent")
    p.add_argument("--sigma", metavar="PATH", help="--agent: Sigma rules the agent loads too (e.g. SigmaHQ)")
    p.add_argument("--trace", action="store_true",
                   help="--agent: instrument the agent and explain each mark slower than 10 ms")
    p.add_argument("--quiet-only", action="store_true", help="--agent: the quiet host only, no storm")
    p.add_argument("--traced-agent", metavar="TRACE", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--traced-agent" in argv:  # the agent itself, under the tracer: edr's own arguments follow "--"
        split = argv.index("--")
        return traced_agent(argv[argv.index("--traced-agent") + 1], argv[split + 1:])
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_latency: needs root (it loads BPF programs)", file=sys.stderr)
        return 2
    if not args.sensor:
        import tempfile

        print(f"exec -> alert line in the file; {args.samples} marks per load"
              + (f"; Sigma rules from {args.sigma}" if args.sigma else ""))
        print(f"{'load':>10} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        loads = (("quiet", 0.0),) if args.quiet_only else (("quiet", 0.0), (f"{args.rate:g}/s", args.rate))
        for name, rate in loads:
            LOAD_DONE[:] = [0, 0.0]
            with tempfile.TemporaryDirectory(prefix="edr-latency-") as tmp:
                trace = Path(tmp) / "trace.json" if args.trace else None
                lat = agent_latencies(args.samples, args.gap, rate, args.sigma, Path(tmp), trace)
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
