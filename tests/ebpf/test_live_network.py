"""Network connections from the real programs: TCP connect/accept, UDP sendto, IPv4 and IPv6."""

from __future__ import annotations

import json
import socket

import pytest

from edr.event import NETWORK_CONNECTION, F
from tests.ebpf.live import LiveCapture, run_python

TCP_PAIR = r"""
import json, socket, sys, time
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = sys.argv[2]
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.bind((host, 0)); srv.listen()
cli = socket.socket(fam, socket.SOCK_STREAM)
cli.connect((host, srv.getsockname()[1]))
conn, peer = srv.accept()
print(json.dumps({"server": srv.getsockname()[1], "client": cli.getsockname()[1]}))
sys.stdout.flush()
time.sleep(0.5)  # the sockets' local ends are read from the live process
"""

UDP_SEND = r"""
import json, socket, sys, time
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = sys.argv[2]
rx = socket.socket(fam, socket.SOCK_DGRAM); rx.bind((host, 0))
tx = socket.socket(fam, socket.SOCK_DGRAM)
for _ in range(3):  # one network_connection per new peer, not per datagram
    tx.sendto(b"ping", (host, rx.getsockname()[1]))
print(json.dumps({"server": rx.getsockname()[1], "client": tx.getsockname()[1]}))
sys.stdout.flush()
time.sleep(0.5)
"""


def _conn(live: LiveCapture, since: int, pred, settle: float = 0.0):
    return live.wait_for(lambda e: e.category == NETWORK_CONNECTION and pred(e.fields), since, settle=settle)


@pytest.mark.parametrize(("version", "host"), [("4", "127.0.0.1"), ("6", "::1")])
def test_tcp_connect_and_accept(live: LiveCapture, version: str, host: str) -> None:
    since = live.mark()
    ports = json.loads(run_python(TCP_PAIR, version, host))
    server, client = ports["server"], ports["client"]
    v6 = "true" if version == "6" else "false"
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == server and f.get(F.INITIATED) == "true")
    assert len(out) == 1
    f = out[0].fields
    assert f[F.PROTOCOL] == "tcp"
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT]) == (host, client)
    assert (f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (host, server)
    assert f[F.SOURCE_IS_IPV6] == f[F.DESTINATION_IS_IPV6] == v6
    assert f[F.IMAGE].split("/")[-1].startswith("python")
    inbound = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == server and f.get(F.INITIATED) == "false")
    assert len(inbound) == 1
    g = inbound[0].fields
    # the initiator is the source, as Sysmon reports inbound connections
    assert (g[F.SOURCE_IP], g[F.SOURCE_PORT]) == (host, client)
    assert (g[F.DESTINATION_IP], g[F.DESTINATION_PORT]) == (host, server)
    assert g[F.PROTOCOL] == "tcp"


@pytest.mark.parametrize(("version", "host"), [("4", "127.0.0.1"), ("6", "::1")])
def test_udp_sendto_new_destination(live: LiveCapture, version: str, host: str) -> None:
    since = live.mark()
    ports = json.loads(run_python(UDP_SEND, version, host))
    server, client = ports["server"], ports["client"]
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == server, settle=0.5)
    assert len(out) == 1, "three datagrams to one peer are one connection"
    f = out[0].fields
    assert f[F.PROTOCOL] == "udp"
    assert f[F.INITIATED] == "true"
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT]) == (host, client)
    assert (f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (host, server)
    assert f[F.DESTINATION_IS_IPV6] == ("true" if version == "6" else "false")


QUICK_CLIENT = r"""
import os, socket, sys
c = socket.socket()
try:
    c.connect(("127.0.0.1", int(sys.argv[1])))
except ConnectionRefusedError:
    pass
print(c.getsockname()[1], flush=True)
os._exit(0)  # gone before the sensor could ask /proc about the socket
"""


def test_tcp_client_exiting_at_once_has_both_ends(live: LiveCapture) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        since = live.mark()
        client_port = int(run_python(QUICK_CLIENT, str(port)))
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == port)
    assert len(out) == 1
    f = out[0].fields
    assert (f[F.PROTOCOL], f[F.SOURCE_IP], f[F.SOURCE_PORT], f[F.DESTINATION_IP]) == (
        "tcp", "127.0.0.1", client_port, "127.0.0.1")


def test_refused_tcp_attempt_is_reported(live: LiveCapture) -> None:
    """A connection attempt to a closed port: indicators on destinations must see attempts too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        since = live.mark()
        client_port = int(run_python(QUICK_CLIENT, str(port)))
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == port)
    assert len(out) == 1
    assert (out[0].fields[F.SOURCE_PORT], out[0].fields[F.INITIATED]) == (client_port, "true")
