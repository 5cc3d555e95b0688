"""The syslog sink over its other transports, to real sockets: a local datagram socket (like /dev/log), UDP, and
TLS with a CA file and a client certificate (certificates made by the openssl command)."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from edr.alerts.ecs import HostInfo
from edr.alerts.sinks.build import build_syslog
from edr.alerts.sinks.syslog_transport import tls_context
from edr.config import SyslogConfig
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort

from .conftest import openssl
from .test_cores import alert

HOST = HostInfo("web-01", "linux")
LOG = logging.getLogger("test.sinks")


def run_sink(cfg: SyslogConfig, n: int) -> dict[str, Any]:
    """Feed ``n`` alerts to the syslog sink of ``cfg`` and run it to its end; its statistics."""
    actor = build_syslog(cfg, "agent", "syslog", LOG, HOST)
    assert actor.enabled

    async def main() -> None:
        edge = Edge("test->syslog", 8, Policy.BLOCK)
        port = InPort("in")
        port.attach(edge)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run, Ports({"in": port}, {}))
            for i in range(0, n, 10):
                await edge.send([alert(j) for j in range(i, min(n, i + 10))])
            edge.close()

    trio.run(main)
    return actor.statistics()


def receive_datagrams(sock: socket.socket, n: int, out: list[bytes]) -> threading.Thread:
    def loop() -> None:
        while len(out) < n:
            out.append(sock.recv(65536))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_local_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        got: list[bytes] = []
        thread = receive_datagrams(sock, 40, got)
        stats = run_sink(SyslogConfig(targets=[f"unix://{path}"], spool_directory=str(tmp_path / "spool")), 40)
        thread.join(30)
    assert len(got) == 40 and all(m.startswith(b"<131>1 ") and b"[edr@32473 id=" in m for m in got)
    assert (stats["sent"], stats["queued"], stats["lost"]) == (40, 0, 0)


def test_udp(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.settimeout(30)
        got: list[bytes] = []
        thread = receive_datagrams(sock, 40, got)
        target = f"udp://127.0.0.1:{sock.getsockname()[1]}"
        stats = run_sink(SyslogConfig(targets=[target], facility="user",
                                      spool_directory=str(tmp_path / "spool")), 40)
        thread.join(30)
    assert len(got) == 40 and all(m.startswith(b"<11>1 ") for m in got)
    assert stats["sent"] == 40


def test_a_local_socket_that_is_not_a_datagram_socket_is_a_failure_named_and_retried(tmp_path: Path) -> None:
    path = tmp_path / "stream.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen()
        stats = run_sink(SyslogConfig(targets=[f"unix://{path}"], spool_directory=str(tmp_path / "spool"),
                                      drain_secs=0.5, retry_initial_secs=0.1, retry_max_secs=0.1), 5)
    assert stats["sent"] == 0 and stats["failed"] >= 2 and stats["queued"] == 5
    assert "not a datagram socket" in stats["destinations"][f"unix://{path}"]["last_error"]


# -- TLS ----------------------------------------------------------------------------------------------------------


def tls_server(pki: Path, on_message: Callable[[bytes, str], None]) -> tuple[int, Callable[[], None]]:
    """A TLS syslog receiver needing a client certificate signed by the CA; parses octet-counted frames."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = server.accept()
            except TimeoutError:
                continue
            try:
                conn = context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            peer = dict(x[0] for x in conn.getpeercert()["subject"])["commonName"]
            buf = b""
            with conn:
                while data := conn.recv(65536):
                    buf += data
                    while b" " in buf[:8]:
                        length, rest = buf.split(b" ", 1)
                        if len(rest) < int(length):
                            break
                        on_message(rest[:int(length)], peer)
                        buf = rest[int(length):]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        server.close()

    return server.getsockname()[1], close


def test_tls_with_a_ca_file_and_a_client_certificate(tmp_path: Path, pki: Path) -> None:
    got: list[tuple[bytes, str]] = []
    port, close = tls_server(pki, lambda m, peer: got.append((m, peer)))
    try:
        stats = run_sink(SyslogConfig(
            targets=[f"tls://127.0.0.1:{port}"], tls_ca_file=str(pki / "ca.pem"),
            tls_cert_file=str(pki / "client.pem"), tls_key_file=str(pki / "client.key"), confirm_secs=0.3,
            drain_secs=20.0, spool_directory=str(tmp_path / "spool")), 30)
    finally:
        close()
    assert len(got) == 30 and {peer for _, peer in got} == {"client"}
    assert all(m.startswith(b"<131>1 ") for m, _ in got)
    assert (stats["sent"], stats["queued"], stats["lost"]) == (30, 0, 0)


def test_tls_refuses_a_key_others_can_read_and_a_receiver_the_ca_did_not_sign(tmp_path: Path, pki: Path) -> None:
    os.chmod(pki / "client.key", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        tls_context(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
    os.chmod(pki / "client.key", 0o600)
    with pytest.raises(OSError, match="tls_ca_file"):
        tls_context(str(tmp_path / "missing.pem"), "", "")
    # a CA that did not sign the receiver's certificate: every attempt fails, nothing is sent, all stays spooled
    other = tmp_path / "other"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=another CA", cwd=other)
    got: list[tuple[bytes, str]] = []
    port, close = tls_server(pki, lambda m, peer: got.append((m, peer)))
    try:
        stats = run_sink(SyslogConfig(
            targets=[f"tls://127.0.0.1:{port}"], tls_ca_file=str(other / "ca.pem"),
            tls_cert_file=str(pki / "client.pem"), tls_key_file=str(pki / "client.key"), drain_secs=0.5,
            retry_initial_secs=0.1, retry_max_secs=0.1, spool_directory=str(tmp_path / "spool")), 5)
    finally:
        close()
    assert got == [] and stats["sent"] == 0 and stats["failed"] >= 1 and stats["queued"] == 5
    assert "CERTIFICATE_VERIFY_FAILED" in next(iter(stats["destinations"].values()))["last_error"]
