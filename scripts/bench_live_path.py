#!/usr/bin/env python3
"""The live agent's per-record work outside detection, sans-IO, on raw sensor records of an exec storm.

The live agent's CPU per exec is hard to compare between two builds on a
shared machine (``bench_exec_storm.py --actor-cpu`` varies by tens of per
cent from run to run). This replays recorded raw records through the cores
the live actors call, stage by stage, in one process:

- ``decode``: the eBPF :class:`~edr.sources.ebpf.decode.Decoder` (batches of
  ``--batch`` records) over :class:`~edr.sources.ebpf.host.LiveHost`;
- ``route``: the router's lanes, with connection aggregation as live;
- ``enrich``: the enricher actor's core (process cache; user names through a fixed look-up);
- ``events``: the event stream's lines of ``process_creation`` (as the exec storm bench enables it);
- ``scan``: the scan planner's intake of the events it looks at (YARA rules assumed, default allowlists).

Figures are cumulative per stage (``enrich`` includes ``decode`` and
``route``), per recorded record. ``cpu`` prints process CPU time (noisy on a
shared machine: repeat it); ``instructions`` runs this script under
callgrind with one and three passes and prints the difference per record and
pass (the passes after the first, with the host's caches warm), which is the
same on every run of the same code and input.

    sudo python scripts/bench_live_path.py record /tmp/storm.rec   # 5 s of 1,600 exec/s (root: the sensor)
    python scripts/bench_live_path.py cpu /tmp/storm.rec
    python scripts/bench_live_path.py instructions /tmp/storm.rec --records 6000
    PYTHONPATH=OTHER/src python scripts/bench_live_path.py cpu /tmp/storm.rec   # another build's sources

The processes of the recording are gone when it is replayed, so /proc
look-ups of them fail as they do live for most short-lived processes; the
working directory of a parent that was alive while recording (the load
generator) is answered as it was then, once per process, as live.
"""

from __future__ import annotations

import argparse
import operator
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import compress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = ("decode", "route", "enrich", "events", "scan")
_LEN = struct.Struct("<BI")


def record(path: Path, rate: int, seconds: float) -> None:
    """Record what the sensor reports while ``bench_exec_storm.py --load`` execs /bin/true at ``rate``."""
    from edr.sources.ebpf.records import FAMILIES
    from edr.sources.ebpf.sensor import EbpfSensor

    sensor = EbpfSensor()
    sensor.open()
    records: list[Any] = []
    try:
        load = subprocess.Popen([sys.executable, str(HERE / "bench_exec_storm.py"), "--load", str(rate),
                                 str(seconds), "edr-bench-live-path"], stdout=subprocess.DEVNULL)
        end = time.monotonic() + seconds + 1
        while time.monotonic() < end or load.poll() is None:
            records.extend(sensor.poll(100))
        records.extend(sensor.poll(100))
        records.extend(sensor.held())
    finally:
        sensor.close()
    with open(path, "wb") as fh:
        for raw in records:
            fh.write(_LEN.pack(FAMILIES.index(raw.family), len(raw.data)) + raw.data)
    print(f"{len(records):,} records in {path}")


def load_records(path: Path, limit: int | None) -> list[Any]:
    """The records of a file written by :func:`record` (the first ``limit``)."""
    from edr.sources.ebpf.records import FAMILIES, RawRecord

    data = path.read_bytes()
    out = []
    offset = 0
    while offset < len(data) and (limit is None or len(out) < limit):
        family, size = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        out.append(RawRecord(FAMILIES[family], data[offset:offset + size]))
        offset += size
    return out


def pipeline(stages: int, batch: int) -> Callable[[list[Any]], None]:
    """A function running the first ``stages`` stages over a list of records, with fresh state each call."""
    from edr.alerts.ndjson import dumps_line
    from edr.config import load_config
    from edr.enrich.actor import EnricherActor
    from edr.enrich.enricher import Enricher
    from edr.enrich.users import UserCache
    from edr.event import PROCESS_CREATION, event_to_record
    from edr.route.aggregation import ConnectionAggregator
    from edr.route.router import Router
    from edr.scan.actor import build_planner, build_scanner
    from edr.sources.ebpf.decode import Decoder
    from edr.sources.ebpf.host import LiveHost

    class RecordedHost(LiveHost):
        """LiveHost, with the working directory of processes gone since the recording answered as they had it."""

        def cwd(self, pid: int) -> str | None:
            return super().cwd(pid) or os.getcwd()

    class YaraRules:  # what makes the planner scan executables (the bundled rules, live)
        rules = object()

    cfg = load_config(None).config
    category = operator.attrgetter("category")
    try:
        from edr.scan.planner import INTAKE_CATEGORIES
        scanned: Callable[[Any], bool] = INTAKE_CATEGORIES.__contains__
    except ImportError:  # a build whose scan actor gave the planner every event
        scanned = bool

    # one host for every pass, as live: its caches (symlinks, cgroups found by a scan of the cgroup tree,
    # which varies with what else runs) are warm after the first pass, so passes after it cost the same
    host = RecordedHost()

    def run(records: list[Any]) -> None:
        decoder = Decoder(host=host, ignore_pids={os.getpid()}, boot_offset=0.0)
        router = Router("router", ConnectionAggregator(lambda _: frozenset(), window=10.0, max_entries=4096))
        enricher = EnricherActor("enricher", Enricher(users=UserCache(lambda uid: "root")))
        planner = build_planner(cfg, build_scanner(cfg, YaraRules(), False))  # type: ignore[arg-type]
        for i in range(0, len(records), batch):
            if hasattr(decoder, "decode_batch"):
                events = decoder.decode_batch(records[i:i + batch])
            else:  # a build without it: record by record, as its normalizer did
                events = [e for raw in records[i:i + batch] for e in decoder.decode(raw)]
            if stages < 2:
                continue
            for lane in router.split(events, 0.0):
                if stages < 3 or not lane:
                    continue
                enriched = enricher.enrich(lane)
                if stages < 4:
                    continue
                lines = [dumps_line(event_to_record(e)) for e in enriched if e.category == PROCESS_CREATION]
                del lines
                if stages < 5:
                    continue
                for event in compress(enriched, map(scanned, map(category, enriched))):
                    planner.intake(event, 0.0)
    return run


def cpu(path: Path, limit: int | None, batch: int, repeat: int) -> None:
    """CPU µs per record, cumulative per stage, the best of ``repeat`` runs."""
    records = load_records(path, limit)
    print(f"{len(records):,} records, batches of {batch}; CPU µs per record (best of {repeat}), cumulative:")
    for n, name in enumerate(STAGES, 1):
        run = pipeline(n, batch)
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            run(records)
            best = min(best, time.process_time() - started)
        print(f"  {name:8} {best / len(records) * 1e6:7.2f}")


def instructions(path: Path, limit: int, batch: int) -> None:
    """Instructions per record, cumulative per stage: (3 passes - 1 pass) / 2 under callgrind."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    print(f"{limit:,} records, batches of {batch}; instructions per record (callgrind), cumulative:")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for n, name in enumerate(STAGES, 1):
        totals = []
        for passes in (1, 3):
            result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                     sys.executable, __file__, "--child", str(path), str(limit), str(batch),
                                     str(n), str(passes)], capture_output=True, text=True, env=env)
            found = re.search(r"Collected : (\d+)", result.stderr)
            if result.returncode != 0 or not found:
                raise SystemExit(f"callgrind run failed ({result.returncode}):\n{result.stderr[-2000:]}")
            totals.append(int(found.group(1)))
        print(f"  {name:8} {(totals[1] - totals[0]) / 2 / limit:9,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("record", "cpu", "instructions"))
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--rate", type=int, default=1600, help="record: exec/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="record: how long")
    parser.add_argument("--records", type=int, help="use the first N records (instructions: default 6000)")
    parser.add_argument("--batch", type=int, default=100, help="records per batch")
    parser.add_argument("--repeat", type=int, default=5, help="cpu: runs per stage")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        file, limit, batch, stages, passes = args.child
        records = load_records(Path(file), int(limit))
        run = pipeline(int(stages), int(batch))
        for _ in range(int(passes)):
            run(records)
        return 0
    if args.what is None or args.file is None:
        parser.error("say what (record, cpu, instructions) and the file")
    if args.what == "record":
        record(args.file, args.rate, args.seconds)
    elif args.what == "cpu":
        cpu(args.file, args.records, args.batch, args.repeat)
    else:
        instructions(args.file, args.records or 6000, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
