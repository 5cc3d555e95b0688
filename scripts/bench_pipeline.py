#!/usr/bin/env python3
"""Throughput of the replay graph: N non-matching events through every hop.

Generates an NDJSON file of edr events (process_creation, network_connection
and file_event records with realistic field sizes, none of which a simple
rule or built-in matches) in a temporary directory, then runs the replay graph
(``actors/replay.toml``: source -> normalizer -> router -> enricher ->
detect + events -> alerts) in-process under the Supervisor, exactly as
``edr replay`` does, and prints events/s and peak RSS.

    python scripts/bench_pipeline.py                 # 1,000,000 events, simple rules only
    python scripts/bench_pipeline.py --engines all   # Sigma and IOC too, when they are available
    python scripts/bench_pipeline.py --profile out.prof
    python scripts/bench_pipeline.py --repeat 5      # five runs over the same input (default 3)
    EDR__PIPELINE__BATCH_SIZE=128 python scripts/bench_pipeline.py   # [pipeline] settings apply

Only ``EDR__PIPELINE__*`` variables reach the run (batch size, edge capacities,
to compare them); other ``EDR__`` settings of the caller are ignored, so the
figure measures the same graph everywhere.

Target on the reference machine (2 vCPU): at least 200,000 events/s with
``--engines simple``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio

from edr.config import load_config
from edr.runtime.supervisor import Supervisor
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph

USERS = ("root", "alice", "www-data", "postgres", "bob")
BINARIES = ("/usr/bin/bash", "/usr/bin/python3.11", "/usr/sbin/sshd", "/usr/bin/curl",
            "/usr/lib/postgresql/15/bin/postgres", "/usr/bin/git", "/usr/local/bin/node", "/opt/app/bin/worker")
PARENTS = ("/usr/lib/systemd/systemd", "/usr/bin/bash", "/usr/sbin/cron", "/usr/bin/containerd-shim-runc-v2")
PORTS = (443, 80, 53, 5432, 8080, 22, 6379, 9200)  # none of 4444, 1337, 31337
DIRS = ("/var/lib/app/data/", "/home/alice/projects/edr/src/", "/tmp/build-4821/", "/var/log/nginx/",
        "/usr/share/doc/python3/")


def generate(path: Path, n: int, seed: int = 7) -> int:
    """Write ``n`` non-matching events to ``path``; returns the file size."""
    rnd = random.Random(seed)
    base = 1_760_000_000.0
    dumps = orjson.dumps
    with open(path, "wb") as fh:
        chunk: list[bytes] = []
        for i in range(n):
            pid = 1000 + rnd.randrange(60000)
            image = rnd.choice(BINARIES)
            user = rnd.choice(USERS)
            ts = base + i * 0.001
            utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + ".123"
            kind = i % 10
            if kind < 3:
                fields = {
                    "UtcTime": utc, "ProcessGuid": f"{{{rnd.getrandbits(128):032x}}}", "ProcessId": pid,
                    "Image": image,
                    "CommandLine": f"{image} --config /etc/app/{rnd.randrange(999)}.conf --verbose "
                                   f"--worker-id={rnd.randrange(64)} --listen 127.0.0.1:{rnd.randrange(1024, 65535)}",
                    "CurrentDirectory": rnd.choice(DIRS), "User": user, "LogonId": "0x0",
                    "ParentProcessId": rnd.randrange(1, 1000), "ParentImage": rnd.choice(PARENTS),
                    "ParentCommandLine": "/usr/lib/systemd/systemd --system --deserialize 31",
                    "Uid": 0 if user == "root" else 1000,
                }
                rec = {"ts": ts, "seq": i, "category": "process_creation", "product": "linux", "fields": fields}
            elif kind < 7:
                fields = {
                    "UtcTime": utc, "ProcessId": pid, "Image": image, "User": user, "Protocol": "tcp",
                    "Initiated": "true", "SourceIsIpv6": "false", "SourceIp": "10.0.3.17",
                    "SourcePort": rnd.randrange(32768, 61000), "DestinationIsIpv6": "false",
                    "DestinationIp": f"93.184.{rnd.randrange(256)}.{rnd.randrange(256)}",
                    "DestinationHostname": f"api{rnd.randrange(20)}.example.com", "DestinationPort": rnd.choice(PORTS),
                }
                rec = {"ts": ts, "seq": i, "category": "network_connection", "product": "linux", "fields": fields}
            else:
                target = f"{rnd.choice(DIRS)}file-{rnd.getrandbits(40):010x}.dat"
                fields = {
                    "UtcTime": utc, "ProcessId": pid, "Image": image, "TargetFilename": target,
                    "CreationUtcTime": utc, "User": user, "Operation": "file_write",
                }
                rec = {"ts": ts, "seq": i, "category": "file_event", "product": "linux", "fields": fields}
            chunk.append(dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
            if len(chunk) >= 10000:
                fh.write(b"".join(chunk))
                chunk.clear()
        fh.write(b"".join(chunk))
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engines", choices=["simple", "all"], default="simple",
                        help="simple: simple rules and built-ins only; all: Sigma and IOC too (if available)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the pipeline run to FILE")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep the files")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs over the same input (default 3): this VM's speed drifts from minute "
                             "to minute, so every run is printed with a host calibration, then best and median")
    args = parser.parse_args()

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edr-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "events.ndjson"
    if not (args.keep and data.is_file() and data.stat().st_size > 0):
        t0 = time.monotonic()
        size = generate(data, args.events)
        print(f"generated {args.events:,} events ({size / 1e6:.0f} MB) in {time.monotonic() - t0:.1f}s: {data}")

    rates = []
    for run in range(1, max(args.repeat, 1) + 1):
        calib = calibrate()
        rate = run_once(args, tmp, data, profile=args.profile if run == 1 else None)
        if rate is None:
            return 1
        rates.append(rate)
        print(f"run {run}: {rate:,.0f} events/s   (host calibration: a 10M-step Python loop took {calib:.2f}s)")
    ordered = sorted(rates)
    print(f"best {ordered[-1]:,.0f} events/s, median {ordered[len(ordered) // 2]:,.0f} events/s "
          f"over {len(rates)} runs of {args.events:,} events")
    return 0


def calibrate() -> float:
    """Seconds for a fixed pure-Python loop: how fast this host runs Python right now."""
    t0 = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - t0


def run_once(args: argparse.Namespace, tmp: Path, data: Path, profile: str | None) -> float | None:
    """One replay of ``data`` through the graph; its events/s, or None if it went wrong."""
    overrides = {
        "alerts.directory": str(tmp / "logs"), "events.directory": str(tmp / "logs"),
        "logging.directory": str(tmp / "logs"), "simple.rules_path": str(tmp / "no-rules.toml"),
    }
    if args.engines == "simple":
        overrides.update({"scanner.sigma_enabled": False, "ioc.enabled": False})
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDR__") or k.startswith("EDR__PIPELINE__")}
    config = load_config(None, environ=environ, overrides=overrides).config
    ctx = AgentContext.create(config, "replay", files=[str(data)])
    graph = mode_graph("replay").with_capacities(config.pipeline.capacities)
    sup = Supervisor(graph, ctx)
    t0 = time.monotonic()
    try:
        sup.build_actors()
    except ImportError as exc:
        print(f"cannot build the engines: {exc}", file=sys.stderr)
        return None
    load_secs = time.monotonic() - t0
    engines = [e.name for e in sup.actors["detect"].engines]
    print(f"engines: {', '.join(engines) or 'none'} (loaded in {load_secs:.2f}s); "
          f"batch_size={config.pipeline.batch_size}")

    profiler = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    t0 = time.monotonic()
    if profiler:
        profiler.enable()
    code = trio.run(functools.partial(sup.run, handle_signals=False))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    secs = time.monotonic() - t0
    cpu = time.process_time() - cpu0

    norm = sup.actors["normalizer"].statistics()
    detect = sup.actors["detect"].statistics()
    alerts = sup.actors["alerts"].statistics()
    dropped = sum(s.dropped for s in sup.statistics().values())
    rate = norm["decoded"] / secs
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"exit code {code}: {norm['decoded']:,} events decoded, {norm['rejected']} rejected, "
          f"{detect['events']:,} through detect, {alerts['alerts']} alerts, {dropped} dropped")
    print(f"throughput: {rate:,.0f} events/s ({secs:.2f}s wall; {norm['decoded'] / cpu:,.0f} events per CPU second)"
          f"   peak RSS: {peak_rss / 2**20:.0f} MiB")
    if norm["decoded"] != args.events or detect["events"] != args.events or dropped:
        print("ERROR: not every event went through every hop", file=sys.stderr)
        return None
    if args.engines == "simple" and alerts["alerts"]:
        print("ERROR: the events were meant not to match", file=sys.stderr)
        return None
    return rate if code == 0 else None




if __name__ == "__main__":
    sys.exit(main())
