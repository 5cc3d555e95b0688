#!/usr/bin/env python3
"""Exec storm benchmark: how much the sensor costs while /bin/true is exec'd at fixed rates.

For each rate (default 100, 400, 1600 exec/s, then as fast as one load
process can) a load generator execs ``/bin/true <marker>`` for ``--duration``
seconds while the measured process runs; per rate it prints the executions
made, exec events captured, kernel lost, user-space dropped, the measured
process's CPU (% of one core) and its peak RSS.

What is measured:

- ``--agent-cmd "CMD"``: a full agent (e.g. ``.venv/bin/edr run``).  It runs
  with the event stream on for process_creation only (``[events]``, in a
  temporary directory): captured is the exact number of recorded execs
  carrying the rate's marker, so the CPU figure includes recording them.
  Kernel lost and user-space dropped come from its ``health {json}`` lines.
- ``--inproc``: this script's own sensor process (EbpfSensor + Decoder +
  Enricher, no trio): exact captured counts by marker.
- default: the full agent if ``.venv/bin/edr run --help`` works, else ``--inproc``.

Needs root.  Not a test: run it by hand, e.g.
``.venv/bin/python scripts/bench_exec_storm.py --inproc --duration 30``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRUE = "/bin/true"
MARK = "edr-bench-"


# ----------------------------------------------------------------- load --
#: set by SIGTERM in a load process: stop early, still report how many were made
_LOAD_STOP = threading.Event()


def run_load(rate: float, duration: float, marker: str) -> int:
    """Exec TRUE with ``marker`` at ``rate`` per second (0: as fast as possible); return how many.

    Ends after ``duration`` seconds, or at SIGTERM (how bench_latency.py stops its load).
    """
    argv = [TRUE, marker]
    env: dict[str, str] = {}
    made = 0
    outstanding = 0
    start = time.monotonic()
    end = start + duration
    while not _LOAD_STOP.is_set():
        now = time.monotonic()
        if now >= end:
            break
        if rate > 0:
            due = int((now - start) * rate) + 1
            if made >= due:
                time.sleep(min((made + 1) / rate - (now - start), 0.01))
                continue
            burst = due - made
        else:
            burst = 32
        for _ in range(burst):
            os.posix_spawn(TRUE, argv, env)
            made += 1
            outstanding += 1
        # reap without blocking, but never let zombies pile up
        while outstanding:
            pid, _ = os.waitpid(-1, os.WNOHANG if outstanding < 512 else 0)
            if pid == 0:
                break
            outstanding -= 1
    while outstanding:
        os.waitpid(-1, 0)
        outstanding -= 1
    return made


# -------------------------------------------------------- in-proc sensor --
def inproc_sensor() -> int:
    """Sensor + decoder + enricher; counts exec events per marker; answers 'stats' on stdin."""
    from edr.enrich.enricher import Enricher
    from edr.event import PROCESS_CREATION
    from edr.sources.ebpf.decode import Decoder
    from edr.sources.ebpf.host import LiveHost
    from edr.sources.ebpf.sensor import EbpfSensor

    sensor = EbpfSensor()
    sensor.open()
    decoder = Decoder(host=LiveHost(), ignore_pids=sensor.ignore_pids)
    enricher = Enricher()
    enricher.seed_running()
    counts: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            for raw in sensor.poll(100):
                for event in decoder.decode(raw):
                    enricher.process(event)
                    if event.category == PROCESS_CREATION:
                        cmd = event.fields.get("CommandLine", "")
                        if cmd.startswith(f"{TRUE} {MARK}"):
                            with lock:
                                counts[cmd] = counts.get(cmd, 0) + 1
            for event in decoder.flush():
                enricher.process(event)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            with lock:
                snapshot = dict(counts)
            print(json.dumps({"counts": snapshot, "sensor": sensor.statistics(),
                              "decoder": decoder.statistics(), "enricher": enricher.statistics()}),
                  flush=True)
        elif line.strip() == "quit":
            break
    stop.set()
    t.join(2)
    sensor.close()
    return 0


# ------------------------------------------------------------ measuring --
class Measured:
    """The process under measurement: the in-proc sensor or a full agent."""

    def __init__(self, cmd: list[str], inproc: bool, health_secs: int = 1) -> None:
        import psutil

        self.inproc = inproc
        self.health: list[dict[str, Any]] = []
        # a health record every second by default, so each rate's counters can be read from the agent's log
        env = {**os.environ, "EDR__HEALTH__INTERVAL_SECS": str(health_secs)}
        self.events_dir = Path(tempfile.mkdtemp(prefix="edr-bench-events-"))
        if not inproc:
            env.update({"EDR__EVENTS__ENABLED": "true", "EDR__EVENTS__DIRECTORY": str(self.events_dir),
                        "EDR__EVENTS__CATEGORIES": '["process_creation"]'})
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if inproc else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                     env=env)
        self.ps = psutil.Process(self.proc.pid)
        self._replies: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.inproc and line.startswith("{"):
                with self._cv:
                    self._replies.append(json.loads(line))
                    self._cv.notify_all()
                continue
            m = re.search(r"health (\{.*\})\s*$", line)
            if m:
                with contextlib.suppress(ValueError):
                    self.health.append(json.loads(m.group(1)))

    def wait_reply(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self._cv.wait(left)
            return self._replies.pop(0)

    def stats(self) -> dict[str, Any] | None:
        if not self.inproc:
            return None
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self.wait_reply(10)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.inproc and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except OSError:
                pass
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.events_dir, ignore_errors=True)

    def recorded(self, marker: str) -> int:
        """Execs of ``marker`` in the agent's recorded event stream."""
        needle = f'"{TRUE} {marker}"'.encode()
        return sum(path.read_bytes().count(needle) for path in self.events_dir.glob("events.json.*"))


def _find(obj: Any, key: str) -> list[Any]:
    """Every value under ``key`` anywhere in a JSON tree."""
    out: list[Any] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.append(v)
            out.extend(_find(v, key))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_find(v, key))
    return out


# ------------------------------------------------------------ per-actor CPU --
def accounted_agent(out: str, argv: list[str]) -> int:
    """``edr`` with ``argv``, adding up the event loop thread's CPU per trio task (actor), written to ``out``
    as JSON at exit: which actor the agent's CPU goes to (other threads: the rest of the process's CPU)."""
    import atexit

    import trio

    cpu: dict[str, int] = {}
    steps: dict[str, int] = {}
    clock = time.thread_time_ns

    class PerTask(trio.abc.Instrument):
        def __init__(self) -> None:
            self.started = 0

        def before_task_step(self, task: Any) -> None:
            self.started = clock()

        def after_task_step(self, task: Any) -> None:
            name = task.name
            cpu[name] = cpu.get(name, 0) + clock() - self.started
            steps[name] = steps.get(name, 0) + 1

    orig_run = trio.run

    def run(*a: Any, **k: Any) -> Any:
        k["instruments"] = [*k.get("instruments", ()), PerTask()]
        return orig_run(*a, **k)
    trio.run = run  # type: ignore[assignment]
    started = clock()
    atexit.register(lambda: Path(out).write_text(json.dumps(
        {"tasks": {n: [cpu[n], steps[n]] for n in cpu}, "thread_total": clock() - started})))
    from edr.cli import main as edr_main

    return int(edr_main(argv))


def print_accounting(path: Path, since: dict[str, Any] | None = None,
                     health: dict[str, Any] | None = None) -> None:
    """The per-task CPU table of :func:`accounted_agent` (ms), the costliest first.

    With the agent's last ``health`` record, an actor that counts its events
    also gets its CPU per event: the host's other processes' events reach the
    agent too, so per exec of the load is a noisy figure where per event is not.
    """
    data = json.loads(path.read_text())
    tasks = data["tasks"]
    total = sum(v[0] for v in tasks.values())
    print(f"event loop thread: {data['thread_total'] / 1e6:.0f} ms CPU, of which {total / 1e6:.0f} ms in task "
          "steps (the rest: the scheduler, I/O waits' wake-ups, run_sync_soon callbacks)")
    actors = (health or {}).get("actors", {})
    for name, (ns, n) in sorted(tasks.items(), key=lambda kv: -kv[1][0])[:20]:
        counted = actors.get(name.removeprefix("actor:"), {}) if name.startswith("actor:") else {}
        events = counted.get("events", counted.get("decoded")) if isinstance(counted, dict) else None
        per_event = f"  ({ns / 1e3 / events:.1f} us per event, {events} events)" if isinstance(events, int) and events \
            else ""
        print(f"  {ns / 1e6:9.1f} ms {n:8} steps  {name}{per_event}")


def _agent_counters(health: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """(kernel lost, userspace dropped) from the agent's latest health record."""
    if not health:
        return None, None
    last = health[-1]
    lost = [v for v in _find(last, "lost") if isinstance(v, int)]
    dropped = last.get("dropped_total")
    return (sum(lost) if lost else None), (dropped if isinstance(dropped, int) else None)


def _agent_works() -> bool:
    edr = REPO / ".venv" / "bin" / "edr"
    if not edr.exists():
        return False
    try:
        return subprocess.run([str(edr), "run", "--help"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def bench(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench_exec_storm: needs root (the sensor loads BPF programs)", file=sys.stderr)
        return 2
    inproc = args.inproc or (not args.agent_cmd and not _agent_works())
    if inproc:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-inproc"]
        label = "in-process sensor (EbpfSensor + Decoder + Enricher)"
    else:
        cmd = shlex.split(args.agent_cmd) if args.agent_cmd else [str(REPO / ".venv/bin/edr"), "run",
                                                                  "--console"]
        label = "agent: " + " ".join(cmd)
        if args.actor_cpu:
            # the same agent under the per-task accounting: "python -m edr ARGS" becomes this script's mode
            edr_args = cmd[cmd.index("-m") + 2:] if "-m" in cmd else cmd[1:]
            accounting = Path(tempfile.mkdtemp(prefix="edr-bench-cpu-")) / "tasks.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--accounted-agent", str(accounting), "--",
                   *edr_args]
    measured = Measured(cmd, inproc, args.health_secs)
    if inproc:
        if measured.wait_reply(120) is None:
            print("bench_exec_storm: the in-process sensor did not start", file=sys.stderr)
            measured.stop()
            return 1
    else:
        time.sleep(args.agent_startup)
        if measured.proc.poll() is not None:
            print(f"bench_exec_storm: the agent exited with {measured.proc.returncode}", file=sys.stderr)
            return 1
    # "idle": no load at all (the agent's own periodic work); "max": as fast as the load can
    rates: list[float | None] = [None if r == "idle" else 0.0 if r == "max" else float(r)
                                 for r in args.rates.split(",")]
    print(f"measuring {label}; {args.duration:.0f} s per rate; {os.cpu_count()} cores", flush=True)
    print(f"{'rate/s':>8} {'made':>8} {'captured':>9} {'k-lost':>7} {'u-dropped':>9} {'cpu%':>6} "
          f"{'peakRSS MiB':>11}", flush=True)
    rows = []
    try:
        for rate in rates:
            marker = f"{MARK}{'idle' if rate is None else int(rate) or 'max'}-{uuid.uuid4().hex[:8]}"
            before = measured.stats()
            if before is None:
                time.sleep(1.5)  # a fresh health record
            lost0 = _lost(before) if before else _agent_counters(measured.health)[0]
            cpu0 = measured.cpu_seconds()
            t0 = time.monotonic()
            # several load processes: one Python spawner tops out near 1,500 exec/s here
            loads = [] if rate is None else [
                subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--load",
                                  str(rate / args.load_procs), str(args.duration), marker],
                                 stdout=subprocess.PIPE, text=True) for _ in range(args.load_procs)]
            peak = measured.rss()
            while any(load.poll() is None for load in loads) or (
                    not loads and time.monotonic() - t0 < args.duration):
                peak = max(peak, measured.rss())
                time.sleep(0.2)
            made = sum(int((load.stdout.read() if load.stdout else "0").strip() or 0) for load in loads)
            wall = time.monotonic() - t0
            # let the agent drain what is in flight; its CPU for that counts too
            captured: int | None = None
            deadline = time.monotonic() + 10
            while True:
                time.sleep(0.5)
                peak = max(peak, measured.rss())
                after = measured.stats() if inproc else None
                if inproc:
                    captured = None if after is None else int(after["counts"].get(f"{TRUE} {marker}", 0))
                else:
                    captured = measured.recorded(marker)
                if (captured is not None and captured >= made) or time.monotonic() > deadline:
                    break
            cpu = (measured.cpu_seconds() - cpu0) / wall * 100
            if after is not None:
                lost: int | None = _lost(after) - (lost0 or 0)
                dropped: int | None = after["decoder"]["malformed"]
            else:
                time.sleep(1.5)  # a health record after the drain
                lost1, dropped = _agent_counters(measured.health)
                lost = None if lost1 is None else lost1 - (lost0 or 0)
            row = {"rate": "idle" if rate is None else rate or "max", "made": made,
                   "achieved_rate": round(made / args.duration),
                   "captured": captured, "kernel_lost": lost, "userspace_dropped": dropped,
                   "cpu_pct": round(cpu, 1), "peak_rss_mib": round(peak / 2**20, 1)}
            rows.append(row)
            name = "idle" if rate is None else str(int(rate)) if rate else "max"
            print(f"{name:>8} {made:>8} {_s(captured):>9} {_s(lost):>7} "
                  f"{_s(dropped):>9} {cpu:>6.1f} {peak / 2**20:>11.1f}", flush=True)
    finally:
        measured.stop()
    if not inproc and args.actor_cpu and accounting.exists():
        print_accounting(accounting, health=measured.health[-1] if measured.health else None)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _lost(stats: dict[str, Any]) -> int:
    return sum(int(v["lost"]) for v in stats["sensor"].values())


def _s(v: object) -> str:
    return "n/a" if v is None else str(v)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inproc", action="store_true", help="measure the in-process sensor, not the agent")
    p.add_argument("--agent-cmd", help="command line of the agent to measure (default: .venv/bin/edr run)")
    p.add_argument("--agent-startup", type=float, default=8.0, help="seconds to let the agent start")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per rate")
    p.add_argument("--rates", default="100,400,1600,max",
                   help="comma-separated exec/s; 'max' = flat out, 'idle' = no load")
    p.add_argument("--load-procs", type=int, default=2, help="load generator processes sharing the rate")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--health-secs", type=int, default=1,
                   help="the agent's health interval (default 1: each rate's lost/dropped counters come from "
                        "its records; 10, the agent's default, for an idle figure as deployed)")
    p.add_argument("--load", nargs=3, metavar=("RATE", "SECONDS", "MARKER"), help=argparse.SUPPRESS)
    p.add_argument("--serve-inproc", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--actor-cpu", action="store_true",
                   help="run the agent under a trio instrument and print its CPU per actor at the end")
    p.add_argument("--accounted-agent", help=argparse.SUPPRESS)
    if "--accounted-agent" in sys.argv:  # the agent itself: edr's own arguments follow "--"
        split = sys.argv.index("--")
        return accounted_agent(sys.argv[sys.argv.index("--accounted-agent") + 1], sys.argv[split + 1:])
    args = p.parse_args()
    if args.load:
        signal.signal(signal.SIGTERM, lambda *_: _LOAD_STOP.set())
        print(run_load(float(args.load[0]), float(args.load[1]), args.load[2]), flush=True)
        return 0
    if args.serve_inproc:
        return inproc_sensor()
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
