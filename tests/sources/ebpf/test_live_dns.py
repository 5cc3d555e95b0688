"""DNS from the real programs: a query to a test server on 127.0.0.1:53, then a connect to the answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from edr.event import DNS_QUERY, NETWORK_CONNECTION, F
from tests.sources.ebpf.live import DNS_ANSWER_IP as ANSWER_IP
from tests.sources.ebpf.live import LiveCapture, dns_server, run_python


@pytest.fixture(scope="module")
def dns_responder() -> Iterator[None]:
    with dns_server():
        yield


CLIENT = r"""
import json, os, socket, struct, sys, time
name, mode = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "sendto":      # unconnected: sendto + recvfrom
    s.sendto(q, ("127.0.0.1", 53)); resp = s.recvfrom(512)[0]
elif mode == "send":      # connected, as glibc does: connect + send + recv
    s.connect(("127.0.0.1", 53)); s.send(q); resp = s.recv(512)
else:                     # connected, as Go does: write + read
    s.connect(("127.0.0.1", 53)); os.write(s.fileno(), q); resp = os.read(s.fileno(), 512)
ip = socket.inet_ntoa(resp[-4:])
lst = socket.socket(); lst.bind((ip, 0)); lst.listen()
c = socket.socket(); c.connect((ip, lst.getsockname()[1]))
print(json.dumps({"ip": ip, "port": lst.getsockname()[1]}))
sys.stdout.flush()
time.sleep(0.3)
"""


@pytest.mark.parametrize("mode", ["sendto", "send", "readwrite"])
def test_dns_query_then_connect_names_the_destination(live: LiveCapture, dns_responder: None, mode: str) -> None:
    name = f"c2-{uuid.uuid4().hex[:12]}.example.test"
    since = live.mark()
    out = json.loads(run_python(CLIENT, name, mode))
    assert out["ip"] == ANSWER_IP
    queries = live.wait_for(lambda e: e.category == DNS_QUERY and e.get(F.QUERY_NAME) == name, since)
    assert len(queries) == 1
    q = queries[0].fields
    assert q[F.QUERY_TYPE] == "A"
    assert q[F.QUERY_STATUS] == "0"
    assert q[F.QUERY_RESULTS] == f"::ffff:{ANSWER_IP};"
    assert q[F.IMAGE].split("/")[-1].startswith("python")
    conns = live.wait_for(lambda e: e.category == NETWORK_CONNECTION and e.get(F.DESTINATION_IP) == ANSWER_IP
                          and e.get(F.DESTINATION_PORT) == out["port"] and e.get(F.INITIATED) == "true", since)
    assert len(conns) == 1
    assert conns[0].fields[F.DESTINATION_HOSTNAME] == name
    assert conns[0].fields[F.PROCESS_ID] == q[F.PROCESS_ID]
