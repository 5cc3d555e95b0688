"""Per-event CPU of detection on live Linux events with all of SigmaHQ loaded (prints figures; not a test).

The live agent's ``detect`` actor, without trio: the engines of
:func:`edr.detect.engines.load_detection` (Sigma with ``--sigma`` rules,
IOC and simple rules as configured by default) run by
:meth:`DetectActor.detect <edr.detect.actor.DetectActor.detect>` over
batches of events shaped as the eBPF sensor, normalizer and enricher give
them (the field sets of a recorded ``[events]`` stream). Two mixes:

- ``storm``: what ``scripts/bench_exec_storm.py`` makes: per exec of
  ``/bin/true <marker>`` by a Python load process, a process_fork,
  process_creation and process_termination;
- ``host``: an ordinary server: varied commands of shells, cron and
  services (fork, exec, exit each), with file, network and DNS events in
  between (per exec about 1.5 file, 0.5 network, 0.2 DNS events).

``--events FILE`` adds a third mix: the events of an NDJSON recording (the
agent's ``[events]`` stream, e.g. with ``EDR__EVENTS__ENABLED=true``).

Printed per mix: CPU microseconds per event of the whole actor core and of
each engine's ``match`` alone, per category for Sigma with the candidate
rules evaluated per event, and per exec. CPU time of this process
(``time.process_time``), best of ``--passes``, each pass on engines loaded
again from the rule cache (a pass must not profit from what the last one
left in the engines' memories of recurring values); the spread of the
passes is printed so that a noisy machine shows.

Usage: python scripts/bench_detect_linux.py [--sigma DIR] [--execs N] [--passes N] [--events FILE]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edr.config import load_config
from edr.detect.actor import DetectActor
from edr.detect.engines import load_detection
from edr.event import Event
from edr.runtime.supervisor import GC_GEN0_THRESHOLD

BATCH = 128
LINUX = "linux"


class _Host:
    """Pids, start times and timestamps advancing like a live host's."""

    def __init__(self) -> None:
        self.pid = 40_000
        self.ticks = 1_000_000
        self.ts = 1_796_207_737.0

    def next_pid(self) -> int:
        self.pid += 1
        self.ticks += 1
        self.ts += 0.0006
        return self.pid


def _exec_events(host: _Host, parent: tuple[int, str, str], image: str, command_line: str, cwd: str,
                 user: str = "root") -> list[Event]:
    """process_fork, process_creation and process_termination of one exec, with the enricher's fields."""
    ppid, parent_image, parent_command_line = parent
    pid = host.next_pid()
    comm = Path(image).name[:15]
    uid = 0 if user == "root" else 1000
    parent_comm = Path(parent_image).name[:15]
    fork = {"ProcessId": pid, "ParentProcessId": ppid, "Comm": parent_comm, "Uid": uid, "Gid": uid,
            "ProcessStartTime": host.ticks, "User": user}
    creation = {"ProcessId": pid, "Image": image, "CommandLine": command_line, "Uid": uid, "Gid": uid,
                "Comm": comm, "CgroupId": 1, "ArgvTruncated": False, "ProcessStartTime": host.ticks,
                "CurrentDirectory": cwd, "ParentProcessId": ppid, "CgroupPath": "/", "User": user,
                "ParentImage": parent_image, "ParentCommandLine": parent_command_line, "ParentUser": user}
    termination = {"ProcessId": pid, "Comm": comm, "Uid": uid, "Gid": uid, "CgroupId": 1, "ExitCode": 0,
                   "User": user, "Image": image, "ParentProcessId": ppid, "CommandLine": command_line}
    ts = host.ts
    return [Event("process_fork", LINUX, fork, ts), Event("process_creation", LINUX, creation, ts + 0.0001),
            Event("process_termination", LINUX, termination, ts + 0.0004)]


def storm_events(execs: int) -> list[Event]:
    """bench_exec_storm's load: ``/bin/true <marker>`` posix_spawn'd by a Python load process."""
    host = _Host()
    marker = "edr-bench-6f1d2c3b9a8e4f10"
    load = (3844, "/usr/bin/python3.11",
            f"/work/main/.venv/bin/python /work/main/scripts/bench_exec_storm.py --load 800.0 20.0 {marker}")
    out: list[Event] = []
    for _ in range(execs):
        out.extend(_exec_events(host, load, "/usr/bin/true", f"/bin/true {marker}", "/work/main"))
    return out


#: (image, command line, working directory, user) of an ordinary server's execs
_HOST_EXECS = [
    ("/usr/bin/ls", "ls -la /etc", "/root", "root"),
    ("/usr/bin/cat", "cat /proc/loadavg", "/", "root"),
    ("/usr/bin/grep", "grep -q nginx /etc/passwd", "/", "root"),
    ("/usr/bin/ps", "ps aux", "/home/deploy", "deploy"),
    ("/usr/bin/date", "date +%s", "/", "root"),
    ("/usr/bin/sleep", "sleep 5", "/", "root"),
    ("/usr/bin/systemctl", "systemctl is-active nginx.service", "/", "root"),
    ("/usr/bin/python3.11", "/usr/bin/python3 /opt/app/manage.py runjobs hourly", "/opt/app", "deploy"),
    ("/usr/bin/git", "git -C /srv/repo fetch --quiet origin", "/srv/repo", "deploy"),
    ("/usr/bin/curl", "curl -fsS -m 5 http://127.0.0.1:8080/health", "/", "root"),
    ("/usr/sbin/logrotate", "/usr/sbin/logrotate /etc/logrotate.conf", "/", "root"),
    ("/usr/bin/find", "find /var/tmp -type f -mtime +7 -delete", "/", "root"),
    ("/usr/bin/tar", "tar -czf /var/backups/etc.tgz /etc", "/var/backups", "root"),
    ("/usr/bin/ssh", "ssh -o BatchMode=yes backup@10.0.0.12 true", "/root", "root"),
    ("/usr/bin/sed", "sed -n 1,20p /var/log/nginx/access.log", "/var/log/nginx", "root"),
    ("/usr/bin/awk", "awk {print $1} /var/log/nginx/access.log", "/var/log/nginx", "root"),
    ("/usr/bin/id", "id -u", "/home/deploy", "deploy"),
    ("/usr/bin/uname", "uname -r", "/", "root"),
    ("/usr/bin/mkdir", "mkdir -p /run/app", "/", "root"),
    ("/usr/bin/chmod", "chmod 640 /var/log/app/app.log", "/", "root"),
    ("/usr/bin/rm", "rm -f /tmp/app-lock.pid", "/tmp", "deploy"),
    ("/usr/bin/node", "node /opt/web/server.js --port 3000", "/opt/web", "www-data"),
    ("/usr/bin/apt-get", "apt-get -qq update", "/", "root"),
    ("/usr/bin/dpkg", "dpkg --print-architecture", "/", "root"),
]
_PARENTS = [
    (812, "/usr/bin/bash", "/bin/bash /etc/cron.hourly/app-jobs"),
    (977, "/usr/sbin/cron", "/usr/sbin/cron -f"),
    (1204, "/usr/bin/bash", "-bash"),
    (1550, "/usr/lib/systemd/systemd", "/sbin/init"),
]
_FILES = ["/var/log/app/app.log", "/tmp/tmp8k2j1l0q", "/var/lib/app/cache/4f/3a9c", "/etc/nginx/conf.d/site.conf",
          "/home/deploy/.cache/pip/http/a/b/c", "/run/app/worker.pid", "/var/tmp/build-1234/out.o",
          "/srv/repo/.git/FETCH_HEAD", "/var/backups/etc.tgz", "/opt/app/static/css/site.css"]
_FILE_OPS = [("file_event", "file_create"), ("file_event", "file_create"), ("file_delete", "file_unlink"),
             ("file_rename", "file_rename"), ("file_change", "file_chmod")]
_PEERS = [("10.0.0.12", 22, "tcp"), ("127.0.0.1", 8080, "tcp"), ("151.101.2.132", 443, "tcp"),
          ("10.255.255.53", 53, "udp"), ("172.17.0.3", 5432, "tcp")]
_NAMES = ["deb.debian.org", "github.com", "api.example.internal", "localhost", "pypi.org"]


def host_events(execs: int, seed: int = 1) -> list[Event]:
    """An ordinary server: varied execs with file, network and DNS events of the processes in between."""
    rng = random.Random(seed)
    host = _Host()
    out: list[Event] = []
    for _ in range(execs):
        image, command_line, cwd, user = rng.choice(_HOST_EXECS)
        parent = rng.choice(_PARENTS)
        life = _exec_events(host, parent, image, command_line, cwd, user)
        out.extend(life[:2])
        pid, comm, ts = host.pid, Path(image).name[:15], host.ts
        common = {"ProcessId": pid, "Uid": 0, "Comm": comm, "CgroupId": 1}
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            category, operation = rng.choice(_FILE_OPS)
            fields = {**common, "TargetFilename": rng.choice(_FILES)}
            if category == "file_rename":
                fields["SourceFilename"] = fields["TargetFilename"] + ".tmp"
            fields.update({"Operation": operation, "User": user, "Image": image, "ParentProcessId": parent[0]})
            out.append(Event(category, LINUX, fields, ts + 0.0002))
        if rng.random() < 0.5:
            ip, port, proto = rng.choice(_PEERS)
            out.append(Event("network_connection", LINUX, {
                **common, "Initiated": "true", "Protocol": proto, "SourceIp": "192.0.2.2",
                "SourcePort": rng.randrange(32768, 60999), "SourceIsIpv6": "false", "DestinationIp": ip,
                "DestinationPort": port, "DestinationIsIpv6": "false", "User": user, "Image": image,
                "ParentProcessId": parent[0]}, ts + 0.0002))
        if rng.random() < 0.2:
            out.append(Event("dns_query", LINUX, {
                "ProcessId": pid, "Uid": 0, "Comm": comm, "QueryName": rng.choice(_NAMES), "QueryType": "A",
                "QueryStatus": "0", "QueryResults": "192.0.2.80", "User": user, "Image": image,
                "ParentProcessId": parent[0]}, ts + 0.0003))
        out.append(life[2])
    return out


def recorded_events(path: str) -> list[Event]:
    """The events of an NDJSON recording (edr's event format)."""
    import orjson

    from edr.event import event_from_record

    with open(path, "rb") as fh:
        return [event_from_record(orjson.loads(line)) for line in fh if line.strip()]


Engines = list[Any]


def _best(fresh: Callable[[], Engines], run: Callable[[Engines], Any], passes: int) -> tuple[float, list[float]]:
    """Least CPU seconds of ``passes`` runs of ``run``, and all of them.

    Each run gets engines of its own (``fresh``, outside the timing): a run
    never profits from what an earlier pass over the same events left in the
    engines' memories, as the live agent never sees the same events twice.
    """
    times: list[float] = []
    for _ in range(passes):
        engines = fresh()
        gc.collect()
        started = time.process_time()
        run(engines)
        times.append(time.process_time() - started)
    return min(times), times


def _spread(times: list[float]) -> str:
    return f"spread {100 * (max(times) - min(times)) / min(times):.0f} %"


def measure(name: str, events: Sequence[Event], fresh: Callable[[], Engines], passes: int, per_exec: bool) -> None:
    """Print the per-event CPU of the actor core, of each engine, and of Sigma per category."""
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    alerts = 0

    def detect_all(engines: Engines) -> None:
        nonlocal alerts
        actor = DetectActor("detect", engines, logging.getLogger("bench"))
        alerts = sum(len(actor.detect(b)) for b in batches)

    n = len(events)
    best, times = _best(fresh, detect_all, passes)
    execs = sum(1 for e in events if e.category == "process_creation")
    line = f"{name}: {n:,} events ({execs:,} execs), detect actor {1e6 * best / n:.2f} us/event"
    if per_exec and execs:
        line += f", {1e6 * best / execs:.1f} us/exec"
    print(f"{line}, {alerts:,} alerts per pass ({_spread(times)})")
    for position, engine_name in enumerate(e.name for e in fresh()):
        engine_best, engine_times = _best(fresh, lambda engines, i=position: [engines[i].match(e) for e in events],
                                          passes)
        print(f"  {engine_name:<7} match {1e6 * engine_best / n:6.2f} us/event ({_spread(engine_times)})")
    by_category: dict[str, list[Event]] = {}
    for event in events:
        by_category.setdefault(event.category, []).append(event)
    evaluated: dict[str, float] = {}

    def sigma_over(engines: Engines, category: str) -> None:
        sigma = next(e for e in engines if e.name == "sigma")
        group = by_category[category]
        before = sigma.candidates
        for event in group:
            sigma.match(event)
        evaluated[category] = (sigma.candidates - before) / len(group)

    if not any(e.name == "sigma" for e in fresh()):
        return
    for category, group in sorted(by_category.items(), key=lambda kv: -len(kv[1])):
        category_best, _ = _best(fresh, lambda engines, c=category: sigma_over(engines, c), passes)
        print(f"    sigma {category:<20} {len(group):>7,} events {1e6 * category_best / len(group):6.2f} us/event, "
              f"{evaluated[category]:.2f} candidates evaluated per event")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "sigma" /
                                              "rules"), help="Sigma rules (default ../shared/sigma/rules)")
    parser.add_argument("--execs", type=int, default=10_000, help="execs per mix (default 10,000)")
    parser.add_argument("--passes", type=int, default=5, help="measured passes, the best printed (default 5)")
    parser.add_argument("--events", help="also measure the events of this NDJSON recording")
    args = parser.parse_args()
    if not Path(args.sigma).is_dir():
        print(f"Sigma rules not found at {args.sigma}", file=sys.stderr)
        return 2
    gc.set_threshold(GC_GEN0_THRESHOLD)  # as the agent runs
    # a rule cache of its own: another checkout's agent or replay must not replace it between loads
    cache = tempfile.TemporaryDirectory(prefix="bench-detect-linux-")
    cfg = load_config(None, environ={"EDR__SCANNER__SIGMA_RULES_PATH": f'["{args.sigma}"]',
                                     "EDR__SIGMA__CACHE_DIR": cache.name}, installed="/nonexistent").config
    started = time.perf_counter()
    detection = load_detection(cfg)
    print(f"engines {', '.join(e.name for e in detection.engines)}; rules compiled in "
          f"{time.perf_counter() - started:.1f} s")
    warm_up = storm_events(1) + host_events(30)

    def fresh() -> Engines:
        """The engines loaded again (from the rule cache), each route's index built on one event."""
        engines = list(load_detection(cfg).engines)
        sigma = next((e for e in engines if e.name == "sigma"), None)
        if sigma is not None:
            for event in {e.category: e for e in warm_up}.values():
                sigma.ruleset.route_index((event.product, event.category, event.service))
        return engines

    mixes: Iterator[tuple[str, list[Event], bool]] = iter([
        ("storm", storm_events(args.execs), True),
        ("host", host_events(args.execs), True),
    ])
    if args.events:
        mixes = itertools.chain(mixes, [(f"recorded {Path(args.events).name}", recorded_events(args.events), False)])
    for name, events, per_exec in mixes:
        measure(name, events, fresh, args.passes, per_exec)
    print(f"(CPU time of this process, best of {args.passes} passes, each on engines loaded afresh; "
          f"spread = (worst - best) / best)")
    cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
