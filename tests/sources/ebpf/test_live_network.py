"""Network connections from the real programs: TCP connect/accept, UDP sendto, IPv4 and IPv6."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from edr.event import NETWORK_CONNECTION, F
from tests.sources.ebpf.live import LiveCapture, run_python

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


UDP_QUICK = r"""
import json, os, socket, sys, time
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = sys.argv[2]
# connect+send+close takes ~15 us; on a loaded 2-core host the scheduler may
# stretch one attempt past a millisecond, so the fastest of a few (each to a
# receiver of its own) is the one reported
for _ in range(20):
    rx = socket.socket(fam, socket.SOCK_DGRAM); rx.bind((host, 0))
    server = rx.getsockname()[1]
    s = socket.socket(fam, socket.SOCK_DGRAM)
    t0 = time.perf_counter()
    s.connect((host, server)); s.send(b"ping"); client = s.getsockname()[1]; s.close()
    took = time.perf_counter() - t0
    if took < 0.001:
        break
print(json.dumps({"server": server, "client": client, "took": took}), flush=True)
os._exit(0)  # gone at once too: nothing is left in /proc to ask
"""


@pytest.mark.parametrize(("version", "host"), [("4", "127.0.0.1"), ("6", "::1")])
def test_udp_connect_send_close_within_a_millisecond_has_protocol_and_both_ends(
        live: LiveCapture, version: str, host: str) -> None:
    since = live.mark()
    ports = json.loads(run_python(UDP_QUICK, version, host))
    assert ports["took"] < 0.001, f"connect+send+close took {ports['took'] * 1e3:.3f} ms"
    server, client = ports["server"], ports["client"]
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == server, settle=0.3)
    assert len(out) == 1
    f = out[0].fields
    assert (f[F.PROTOCOL], f[F.INITIATED]) == ("udp", "true")
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT]) == (host, client)
    assert (f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (host, server)
    assert f[F.SOURCE_IS_IPV6] == f[F.DESTINATION_IS_IPV6] == ("true" if version == "6" else "false")


ACCEPT_QUICK = r"""
import json, os, socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = sys.argv[2]
srv = socket.socket(fam, socket.SOCK_STREAM); srv.bind((host, 0)); srv.listen()
cli = socket.socket(fam, socket.SOCK_STREAM); cli.connect((host, srv.getsockname()[1]))
conn, _peer = srv.accept(); conn.close()
print(json.dumps({"server": srv.getsockname()[1], "client": cli.getsockname()[1]}), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize(("version", "host"), [("4", "127.0.0.1"), ("6", "::1")])
def test_accept_closed_at_once_has_both_ends(live: LiveCapture, version: str, host: str) -> None:
    since = live.mark()
    ports = json.loads(run_python(ACCEPT_QUICK, version, host))
    server, client = ports["server"], ports["client"]
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == server and f.get(F.INITIATED) == "false")
    assert len(out) == 1
    f = out[0].fields
    assert f[F.PROTOCOL] == "tcp"
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT]) == (host, client)
    assert (f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (host, server)


def test_accept_of_an_ipv4_client_on_a_dual_stack_listener(live: LiveCapture) -> None:
    """A v6 socket accepting an IPv4 peer: both ends reported as IPv4, as rules and IOCs name them."""
    code = ACCEPT_QUICK.replace("srv.bind((host, 0))", "srv.bind(('::', 0))").replace(
        "cli = socket.socket(fam, socket.SOCK_STREAM); cli.connect((host,",
        "cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM); cli.connect(('127.0.0.1',")
    since = live.mark()
    ports = json.loads(run_python(code, "6", "::"))
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_PORT) == ports["server"]
                and f.get(F.INITIATED) == "false")
    assert len(out) == 1
    f = out[0].fields
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT], f[F.DESTINATION_IP]) == ("127.0.0.1", ports["client"], "127.0.0.1")
    assert f[F.SOURCE_IS_IPV6] == "false"


UDP_UNSENT = r"""
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.connect(("192.0.2.77", int(sys.argv[1])))  # TEST-NET-1: chooses a route, sends nothing
except OSError:
    pass  # no route on this host: the attempt was made all the same
s.close()
os._exit(0)
"""


def test_udp_connect_without_a_datagram_is_reported_with_its_destination(live: LiveCapture) -> None:
    """An attempt is never silent (an indicator on the destination must see it); no source end then."""
    port = 40000 + os.getpid() % 20000
    since = live.mark()
    run_python(UDP_UNSENT, str(port))
    out = _conn(live, since, lambda f: f.get(F.DESTINATION_IP) == "192.0.2.77" and f.get(F.DESTINATION_PORT) == port)
    assert len(out) == 1
    f = out[0].fields
    assert (f[F.PROTOCOL], f[F.INITIATED]) == ("udp", "true")
    assert F.SOURCE_PORT not in f


def test_without_the_cgroup_hooks_udp_is_still_reported_from_the_syscalls(
        live: LiveCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cgroup v2 (or a kernel refusing the hooks): the sensor says why and falls back, UDP stays visible."""
    import edr.sources.ebpf.sensor as sensor_mod
    from edr.sources.ebpf.decode import Decoder
    from edr.sources.ebpf.host import LiveHost

    monkeypatch.setattr(sensor_mod, "find_cgroup2_mount", lambda: "")
    sensor = sensor_mod.EbpfSensor(families={"network"})
    sensor.open()
    try:
        assert sensor.udp_hooks_error == "no cgroup v2 hierarchy is mounted"
        decoder = Decoder(host=LiveHost(), ignore_pids=sensor.ignore_pids)
        # decoded while the sender still lives (it sleeps after sending), as the agent would
        with subprocess.Popen([sys.executable, "-c", UDP_SEND, "4", "127.0.0.1"], stdout=subprocess.PIPE,
                              text=True) as child:
            assert child.stdout is not None
            ports = json.loads(child.stdout.readline())
            events = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not events:
                for raw in sensor.poll(100):
                    events += [e for e in decoder.decode(raw) if e.get(F.DESTINATION_PORT) == ports["server"]]
        assert len(events) == 1
        f = events[0].fields
        # the process was still there (it sleeps): /proc gave the source end
        assert (f[F.PROTOCOL], f[F.SOURCE_PORT]) == ("udp", ports["client"])
        assert decoder.statistics()["socket_from_proc"] == 1
    finally:
        sensor.close()
