"""The end of the input while a delivery task is between reading the spool and deciding it is done.

The intake stores its last batch and closes the input while the delivery
task's read (in a worker thread) finds nothing: the task must not take
"nothing read" and "input closed" together as "everything delivered", or
that last batch stays in the spool until the next start (webhook, datagram
syslog) or goes on a second connection after the stream was finished (stream
syslog). Forced here by storing and closing from inside that read.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from edr.alerts.ecs import HostInfo
from edr.alerts.sinks.actor import SinkActor
from edr.alerts.sinks.build import build_syslog, build_webhook
from edr.alerts.sinks.destination import Destination
from edr.alerts.sinks.document import sink_document
from edr.alerts.sinks.spool import Batch
from edr.config import SyslogConfig, WebhookConfig
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort

from .test_cores import alert
from .webhook_receiver import WebhookReceiver

HOST = HostInfo("h", "linux")
LOG = logging.getLogger("test.sinks")
SECRET = b"0123456789abcdef0123456789abcdef"


def close_during_an_empty_read(actor: SinkActor, late: list[Any]) -> None:
    """Make the first read of the first destination that finds nothing store ``late`` and close the input."""
    destination: Destination = actor.destinations[0]
    original: Callable[[int, int, int], Awaitable[Batch | None]] = destination.read
    done = False

    async def read(offset: int, max_records: int, max_bytes: int) -> Batch | None:
        nonlocal done
        batch = await original(offset, max_records, max_bytes)
        if batch is None and not done:
            done = True
            destination.store([actor.encode(sink_document(item, actor.host)) for item in late])
            destination.close_input()
        return batch

    destination.read = read  # type: ignore[method-assign]


def run(actor: SinkActor, first: list[Any]) -> None:
    async def main() -> None:
        edge = Edge("test->sink", 8, Policy.BLOCK)
        port = InPort("in")
        port.attach(edge)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run, Ports({"in": port}, {}))
            await edge.send(first)
            # the input ends once the delivery task has closed it (from inside its read)
            while not actor.destinations[0].input_closed:
                await trio.sleep(0.01)
            edge.close()

    trio.run(main)


def test_webhook_delivers_what_was_stored_as_the_input_closed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    with WebhookReceiver(SECRET) as receiver:
        actor = build_webhook(WebhookConfig(urls=[receiver.url], secret_file=str(secret), drain_secs=30.0,
                                            spool_directory=str(tmp_path / "spool")), "agent", "webhook", LOG, HOST)
        close_during_an_empty_read(actor, [alert(3), alert(4)])
        run(actor, [alert(1), alert(2)])
    stats = actor.statistics()
    assert (stats["sent"], stats["queued"]) == (4, 0), stats
    assert len(receiver.accepted_ids) == 4


def test_datagram_syslog_delivers_what_was_stored_as_the_input_closed(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        actor = build_syslog(SyslogConfig(targets=[f"unix://{path}"], drain_secs=30.0,
                                          spool_directory=str(tmp_path / "spool")), "agent", "syslog", LOG, HOST)
        close_during_an_empty_read(actor, [alert(3), alert(4)])
        run(actor, [alert(1), alert(2)])
    stats = actor.statistics()
    assert (stats["sent"], stats["queued"]) == (4, 0), stats


def test_stream_syslog_sends_what_was_stored_as_the_input_closed_before_finishing(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    connections = 0

    def serve() -> None:
        nonlocal connections
        server.settimeout(30)
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections += 1
            with conn:
                while data := conn.recv(65536):
                    received.append(data)
                conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # confirm_secs is how long the sink waits for the receiver to close after the end of the stream
        # before it counts the stream unread and sends it again on a new connection: the default 2 s is
        # shorter than this receiver thread may wait for the CPU on a loaded CI machine (one CI run saw
        # 2 connections); the receiver here always closes, so a long wait costs nothing when it is prompt
        actor = build_syslog(SyslogConfig(targets=[f"tcp://127.0.0.1:{server.getsockname()[1]}"], drain_secs=30.0,
                                          confirm_secs=30.0, spool_directory=str(tmp_path / "spool")),
                             "agent", "syslog", LOG, HOST)
        close_during_an_empty_read(actor, [alert(3), alert(4)])
        run(actor, [alert(1), alert(2)])
    finally:
        server.close()
    stats = actor.statistics()
    assert (stats["sent"], stats["queued"]) == (4, 0), stats
    assert b"".join(received).count(b"[edr@32473 ") == 4
    assert connections == 1  # all four on the one connection, finished once


def test_each_failed_request_counts_once_in_the_backoff_retry_after_or_not(tmp_path: Path) -> None:
    """A 503 with Retry-After waits what the receiver asks and is one failure for the backoff, like any other."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    with WebhookReceiver(SECRET, fail_first=4, retry_after=(lambda: "0",)) as receiver:
        actor = build_webhook(WebhookConfig(urls=[receiver.url], secret_file=str(secret), drain_secs=0.5,
                                            retry_initial_secs=0.01, retry_max_secs=60.0,
                                            spool_directory=str(tmp_path / "spool")), "agent", "webhook", LOG, HOST)
        destination = actor.destinations[0]
        failures: list[int] = []
        original = destination.failure

        async def failure(why: str, wait: float | None = None) -> None:
            await original(why, wait)
            failures.append(destination.backoff.failures)

        destination.failure = failure  # type: ignore[method-assign]
        run_until_closed(actor, [alert(1)])
    assert failures == [1, 2, 3, 4]
    assert actor.statistics()["sent"] == 1


def run_until_closed(actor: SinkActor, first: list[Any]) -> None:
    async def main() -> None:
        edge = Edge("test->sink", 8, Policy.BLOCK)
        port = InPort("in")
        port.attach(edge)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run, Ports({"in": port}, {}))
            await edge.send(first)
            edge.close()

    trio.run(main)
