#!/usr/bin/env python3
"""Start-up loss benchmark: kernel records lost while `edr run` starts cold under file load.

For each of ``--starts`` runs (default 10): a load process creates files at
``--rate`` per second (default 200) in a scratch directory; `edr run` starts
with the Sigma rules of ``--sigma`` (default ../shared/sigma/rules, SigmaHQ's
~3,000 rules) and an empty (cold) compiled-rule cache; once its log says it
started it runs ``--settle`` seconds more and is stopped with SIGTERM. From
its health records the script prints, per start: seconds to start, the
file family's records, the file records the kernel lost at start (from the
attach until the graph ran: the source's ``startup.lost``) and in the whole
run (last record taken with the sensor open), what the start-up drain held
(records polled between the programs being attached and the graph running)
and whether it filled up, and the exit code.

Needs root (the eBPF sensor). Not a test: run it by hand, e.g.
``sudo .venv/bin/python scripts/bench_startup_loss.py --starts 10``.
The live test tests/live/test_startup_loss_live.py runs two such starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import os, sys, time
directory, rate = sys.argv[1], float(sys.argv[2])
made = 0
start = time.monotonic()
while True:
    now = time.monotonic() - start
    due = int(now * rate) + 1
    if made >= due:
        time.sleep(min((made + 1) / rate - now, 0.01))
        continue
    for _ in range(due - made):
        with open(os.path.join(directory, f"f{made}"), "w") as fh:
            fh.write("x")
        made += 1
"""


def one_start(work: Path, sigma: Path, rate: float, settle: float, timeout: float) -> dict[str, Any]:
    """One cold start under load; the figures of its final health record."""
    logs, target = work / "logs", work / "written"
    target.mkdir()
    conf = work / "config.toml"
    conf.write_text(f"""
[scanner]
sigma_rules_path = "{sigma}"
yara_enabled = false
[ioc]
enabled = false
[logging]
directory = "{logs}"
[alerts]
directory = "{logs}"
[health]
interval_secs = 1
[sigma]
cache_dir = "{work / 'cold-cache'}"
[agent]
state_directory = "{work / 'state'}"
""")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(rate)])
    try:
        t0 = time.monotonic()
        agent = subprocess.Popen([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"],
                                 cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started = None
        while time.monotonic() - t0 < timeout and agent.poll() is None:
            if any("edr started" in f.read_text(errors="replace") for f in logs.glob("edr.log.*")):
                started = time.monotonic() - t0
                break
            time.sleep(0.2)
        if started is not None:
            time.sleep(settle)
        agent.terminate()
        code = agent.wait(120)
    finally:
        writer.kill()
        writer.wait()
    text = "".join(f.read_text(errors="replace") for f in sorted(logs.glob("edr.log.*")))
    records = [json.loads(m.group(1)) for m in re.finditer(r" health (\{.*\})\s*$", text, re.M)]
    final = next((r for r in reversed(records) if r.get("final")), None)
    # kernel-lost counters from the last record taken with the sensor open (gone in the final one)
    running = next((r for r in reversed(records) if not r.get("final")), None)
    out: dict[str, Any] = {"start_secs": started, "exit": code, "cold": "(cached)" not in text}
    if final is not None:
        source = final["actors"]["source"]
        out["file_events"] = source["families"]["file"]["events"]
        families = running["actors"]["source"]["families"] if running is not None else None
        out["file_lost"] = families["file"]["lost"] if families else None
        out["lost_all"] = sum(f["lost"] for f in families.values()) if families else None
        startup = source.get("startup", {})
        out["drain_records"] = startup.get("records")
        out["drain_full"] = startup.get("full")
        out["start_lost_file"] = startup.get("lost", {}).get("file")
    return out


def main() -> int:
    """Run the starts and print one line each, then the totals (``--json``: one JSON document)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--starts", type=int, default=10)
    p.add_argument("--rate", type=float, default=200.0, help="files created per second during each start")
    p.add_argument("--sigma", type=Path, default=REPO.parent / "shared" / "sigma" / "rules")
    p.add_argument("--settle", type=float, default=2.0, help="seconds the agent runs after it started")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a start may take")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench_startup_loss: needs root (the eBPF sensor)", file=sys.stderr)
        return 2
    if not args.sigma.is_dir():
        print(f"bench_startup_loss: no Sigma rules at {args.sigma} (--sigma)", file=sys.stderr)
        return 2
    results = []
    if not args.json:
        print(f"{'start':>5} {'secs':>6} {'cold':>5} {'file ev':>8} {'at start':>8} {'file lost':>9} "
              f"{'all lost':>8} {'drained':>8} {'full':>5} {'exit':>4}")
    for i in range(args.starts):
        with tempfile.TemporaryDirectory(prefix="edr-startup-") as tmp:
            r = one_start(Path(tmp), args.sigma, args.rate, args.settle, args.timeout)
        results.append(r)
        if not args.json:
            secs = f"{r['start_secs']:.1f}" if r["start_secs"] is not None else "-"
            print(f"{i + 1:>5} {secs:>6} {r['cold']!s:>5} {r.get('file_events', '-'):>8} "
                  f"{r.get('start_lost_file', '-')!s:>8} {r.get('file_lost', '-'):>9} {r.get('lost_all', '-'):>8} "
                  f"{r.get('drain_records', '-')!s:>8} "
                  f"{r.get('drain_full', '-')!s:>5} {r['exit']:>4}", flush=True)
    lossy = [r for r in results if r.get("start_lost_file") != 0]
    if args.json:
        print(json.dumps({"rate": args.rate, "starts": results, "starts_with_loss": len(lossy)}, indent=2))
    else:
        print(f"{len(results)} starts at {args.rate:.0f} files/s: {len(lossy)} with file records lost at start "
              "(lost until the graph ran; 'file lost' is the whole run, start and settle)")
    return 1 if lossy else 0


if __name__ == "__main__":
    sys.exit(main())
