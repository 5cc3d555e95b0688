#!/usr/bin/env python3
"""Start/stop benchmark: seconds from `edr run`'s process start to "edr started", from SIGTERM to exit, peak RSS.

`edr run` starts with a private configuration in a temporary directory, the
Sigma rules of ``--sigma`` (default ../shared/sigma/rules), YARA and IOCs
off, and warm caches: one unmeasured start first fills the compiled-rule
cache and the compiled-sensor cache (``[sigma] cache_dir``).  Then
``--starts`` measured starts (default 5), each printing one row:

- ``start_s``: from just before the process is started to the moment its
  log says "edr started" (the log is polled every 10 ms);
- ``stop_s``: from SIGTERM to the agent's exit;
- ``released_s``: from SIGTERM until the last process the agent left
  behind has exited (the child that takes the tracepoint perf events at
  close, see edr.sources.ebpf.objload.release_in_child): when the kernel
  has unregistered the last of our tracepoints.  This script makes itself
  a child subreaper so those orphans become its children and can be timed;
- ``hwm_mib``: the agent's peak RSS (``VmHWM`` of /proc/<pid>/status, read
  until it exits);
- ``cpu_s``: user + system CPU seconds of the agent and every child it
  waited for (the compile child on a cold BPF cache), less disturbed by
  other load than wall time.

With ``--cold-bpf`` the compiled-sensor cache file is removed before each
measured start (the compile child runs every time).  Then the medians.
The load average is printed at the start and the end: quote it with the
figures.

Needs root (the eBPF sensor). Not a test: run it by hand, e.g.
``sudo .venv/bin/python scripts/bench_start_stop.py --starts 5``.  To measure
another checkout (e.g. main, before a change), run it with that checkout's
``src`` first on PYTHONPATH: the agent is started as ``sys.executable -m edr``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PR_SET_CHILD_SUBREAPER = 36
BPF_CACHE_NAME = "ebpf-sensor.json"


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _config(work: Path, sigma: Path) -> Path:
    conf = work / "config.toml"
    conf.write_text(f"""
[scanner]
sigma_rules_path = "{sigma}"
yara_enabled = false
[ioc]
enabled = false
[logging]
directory = "{work / 'logs'}"
[alerts]
directory = "{work / 'logs'}"
[sigma]
cache_dir = "{work / 'cache'}"
[agent]
state_directory = "{work / 'state'}"
""")
    return conf


def _started(logs: Path, offsets: dict[Path, int]) -> bool:
    """Whether a log line written since the last look says "edr started" (reads only the new bytes)."""
    for path in logs.glob("edr.log*"):
        with open(path, "rb") as fh:
            fh.seek(offsets.get(path, 0))
            chunk = fh.read()
        if b"edr started" in chunk:
            return True
        # keep the last line's start: it may be incomplete
        offsets[path] = offsets.get(path, 0) + max(chunk.rfind(b"\n") + 1, 0)
    return False


def _reap_orphans(deadline: float) -> float | None:
    """Wait for every orphan reparented to this process; the monotonic time the last one exited (None: none)."""
    last = None
    while time.monotonic() < deadline:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return last
        if pid == 0:
            time.sleep(0.002)
            continue
        last = time.monotonic()
    return last


def one_start(work: Path, conf: Path, timeout: float) -> dict[str, Any]:
    """Start the agent, wait for "edr started", stop it with SIGTERM; its figures."""
    logs = work / "logs"
    offsets: dict[Path, int] = {}
    if logs.is_dir():
        for path in logs.glob("edr.log*"):
            offsets[path] = path.stat().st_size
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"],
                             cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    started = None
    hwm = 0
    while time.monotonic() - t0 < timeout and agent.poll() is None:
        hwm = max(hwm, _hwm_kib(agent.pid) or 0)
        if logs.is_dir() and _started(logs, offsets):
            started = time.monotonic() - t0
            break
        time.sleep(0.01)
    if started is None:
        agent.kill()
        err = agent.communicate()[1].decode(errors="replace")
        raise SystemExit(f"the agent did not start within {timeout} s (exit {agent.returncode}): {err[-2000:]}")
    time.sleep(0.5)   # let the graph settle: the figures are for an agent that ran
    hwm = max(hwm, _hwm_kib(agent.pid) or 0)
    t_term = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    while agent.poll() is None:
        hwm = max(hwm, _hwm_kib(agent.pid) or 0)
        time.sleep(0.002)
    stopped = time.monotonic() - t_term
    if agent.stderr is not None:
        agent.stderr.close()
    last_orphan = _reap_orphans(time.monotonic() + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"start_s": round(started, 3), "stop_s": round(stopped, 3),
            "released_s": round((last_orphan if last_orphan is not None else t_term + stopped) - t_term, 3),
            "hwm_mib": round(hwm / 1024, 1), "cpu_s": round(cpu, 2), "exit": agent.returncode}


def main() -> int:
    """Run the warm-up, then the measured starts; print one row each and the medians (``--json``: JSON)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--sigma", type=Path, default=REPO.parent / "shared" / "sigma" / "rules")
    p.add_argument("--cold-bpf", action="store_true", help="remove the compiled-sensor cache before each start")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a start may take")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (the eBPF sensor)", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: cannot become a child subreaper; released_s is the agent's exit", file=sys.stderr)
    load_before = _loadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edr-bench-start-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        conf = _config(work, args.sigma)
        warm = one_start(work, conf, args.timeout)   # fills both caches, not measured
        if not args.json:
            print(f"warm-up start (not measured): {json.dumps(warm)}", flush=True)
        for i in range(args.starts):
            if args.cold_bpf:
                (work / "cache" / BPF_CACHE_NAME).unlink(missing_ok=True)
            row = one_start(work, conf, args.timeout)
            rows.append(row)
            if not args.json:
                print(f"start {i + 1}: {json.dumps(row)}", flush=True)
    medians = {k: round(statistics.median(r[k] for r in rows), 3)
               for k in ("start_s", "stop_s", "released_s", "hwm_mib", "cpu_s")}
    summary = {"starts": len(rows), "cold_bpf": args.cold_bpf, "sigma": str(args.sigma), "median": medians,
               "loadavg_before": load_before, "loadavg_after": _loadavg(), "rows": rows}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"median of {len(rows)}: {json.dumps(medians)}")
        print(f"load average before: {load_before}; after: {summary['loadavg_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
