"""The sensor field tables against the real decoders: neither a field filled that a table lacks, nor a field
listed that no decoder fills.

- Linux: the real BPF programs, decoder and enricher (:class:`tests.sources.ebpf.live.LiveCapture`) while a child
  process execs, forks, exits (one killed by a signal), connects, accepts, sends UDP, asks a DNS server
  (a responder on 127.0.0.1:53) and connects to the answer, and creates, writes, truncates, renames, links,
  symlinks, chmods, chowns, deletes and makes and removes directories; plus, for what this machine cannot produce
  live (a process in a container), kernel records built byte for byte through the same decoder and
  enricher with a host that answers a container's cgroup.
- Windows: the ETW normalizer on every recorded ETW session (../shared/etw-recordings), on the ETW records
  built from every Sysmon event of the attack samples (as tests/sources/etw/test_sigmahq_etw.py does), with a PE
  lookup reading a real PE file, and on records for the paths neither exercises (inbound names, WMI
  bindings, PowerShell module logging and incomplete script blocks).
"""

from __future__ import annotations

import json
import socket
import struct
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edr import event as ev
from edr.detect.sigma.logsources import LINUX_EBPF_FED
from edr.doctor.sensor_fields import (
    ETW_PE_FIELDS,
    ETW_PROVIDER_ROUTES,
    LINUX_FAMILY_CATEGORIES,
    WINDOWS_ETW_FIELDS,
    linux_ebpf_fields,
)
from edr.enrich.enricher import Enricher
from edr.event import Event
from edr.sources.ebpf import records as r
from edr.sources.ebpf.decode import Decoder
from edr.sources.ebpf.records import FAMILIES
from edr.sources.etw.host import DeviceMap, LiveProcess, SidResolver
from edr.sources.etw.normalize import EtwNormalizer
from edr.sources.etw.pe_info import read_pe_info
from edr.sources.etw.providers import PROVIDERS
from edr.sources.replay.winlog import iter_winlog_events
from tests.conftest import ebpf_unavailable, shared_path
from tests.sources.ebpf import rawrec
from tests.sources.ebpf.fakehost import FakeHost
from tests.sources.ebpf.live import DNS_ANSWER_IP as ANSWER_IP
from tests.sources.ebpf.live import LiveCapture, dns_server, run_python
from tests.sources.etw.conftest import LAB_ACCOUNTS, LAB_DEVICES
from tests.sources.etw.pywintrace_shape import RECORDINGS, all_recorded, load_recording, to_pywintrace
from tests.sources.etw.records import record
from tests.sources.etw.sysmon_to_etw import DEVICES, SysmonToEtw

Observed = dict[tuple[str, str | None], set[str]]


def observe(events: Iterable[Event], into: Observed) -> Observed:
    for e in events:
        into[(e.category, e.service)].update(e.fields)
    return into


def test_the_tables_cover_what_is_routed() -> None:
    """The Linux table has exactly the categories the eBPF collectors feed; every family and provider maps."""
    assert set(linux_ebpf_fields()) == {route[1] for route in LINUX_EBPF_FED}
    assert {c for cats in LINUX_FAMILY_CATEGORIES.values() for c in cats} == set(linux_ebpf_fields())
    assert set(LINUX_FAMILY_CATEGORIES) == set(FAMILIES)
    assert set(ETW_PROVIDER_ROUTES) == set(PROVIDERS)
    assert {route for routes in ETW_PROVIDER_ROUTES.values() for route in routes} == set(WINDOWS_ETW_FIELDS)


# --- Linux ---------------------------------------------------------------------------------------------


TRIGGER = r"""
import json, os, socket, struct, subprocess, sys, time
d, name = sys.argv[1], sys.argv[2]
subprocess.run(["/bin/sh", "-c", "exit 3"], cwd=d, check=False)          # exec, fork, exit
subprocess.run(["/bin/sh", "-c", "kill -9 $$"], cwd=d, check=False)     # killed by a signal
a, b = os.path.join(d, "a.txt"), os.path.join(d, "b.txt")
fd = os.open(a, os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"x"); os.close(fd)
fd = os.open(a, os.O_WRONLY | os.O_TRUNC); os.close(fd)
fd = os.open(a, os.O_WRONLY | os.O_APPEND); os.write(fd, b"y"); os.close(fd)
os.rename(a, b); os.chmod(b, 0o600); os.chown(b, os.getuid(), os.getgid())
os.link(b, os.path.join(d, "hard.txt")); os.symlink("b.txt", os.path.join(d, "sym.txt"))
os.unlink(b); os.mkdir(os.path.join(d, "sub")); os.rmdir(os.path.join(d, "sub"))
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):  # connect and accept
    srv = socket.socket(fam); srv.bind((host, 0)); srv.listen()
    cli = socket.socket(fam); cli.connect((host, srv.getsockname()[1])); conn, _ = srv.accept()
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.sendto(b"ping", rx.getsockname())
q = struct.pack(">HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(q, ("127.0.0.1", 53)); resp = s.recvfrom(512)[0]
ip = socket.inet_ntoa(resp[-4:])
lst = socket.socket(); lst.bind((ip, 0)); lst.listen()
c = socket.socket(); c.connect((ip, lst.getsockname()[1]))
print(json.dumps({"ip": ip, "port": lst.getsockname()[1]}), flush=True)
time.sleep(0.5)  # local ends and directory fds are read from the live process
"""


@pytest.fixture(scope="module")
def dns_responder() -> Iterator[None]:
    with dns_server():
        yield


@pytest.fixture(scope="module")
def capture() -> Iterator[LiveCapture]:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(f"the eBPF sensor cannot run here: {reason}")
    live = LiveCapture()
    live.start()
    yield live
    live.stop()


DOCKER_ID = "ab" * 32


def recorded_container_events() -> list[Event]:
    """A process in a docker container doing one thing of each family, decoded and enriched as live."""
    host = FakeHost(cwds={500: "/srv"}, cgroups={77: f"/system.slice/docker-{DOCKER_ID}.scope"},
                    exes={500: "/usr/bin/curl"})
    decoder = Decoder(host=host, boot_offset=rawrec.BOOT_OFFSET, clock_ticks=100)
    enricher = Enricher()
    raws = [
        rawrec.exec_rec(500, "/usr/bin/curl", ["curl", "http://x"], ppid=1),
        rawrec.file_rec(500, r.OP_OPEN, "/tmp/out", flags=0o100 | 0o1),
        rawrec.file_rec(500, r.OP_UNLINK, "/tmp/out"),
        rawrec.file_rec(500, r.OP_RENAME, "/tmp/a", "/tmp/b"),
        rawrec.file_rec(500, r.OP_CHMOD, "/tmp/b"),
        rawrec.net_rec(r.EV_CONNECT, 500, 3, "10.0.0.1", 443, local=("10.0.0.2", 40000), proto=6),
        rawrec.dns_rec(500, rawrec.dns_message("example.com")),
        rawrec.dns_rec(500, rawrec.dns_message("example.com", response=True,
                                               answers=((1, 60, socket.inet_aton("10.0.0.1")),)), answer=True),
        rawrec.exit_rec(500),
    ]
    events = [e for raw in raws for e in decoder.decode(raw)]
    return [enricher.process(e) for e in events]


@pytest.mark.root
@pytest.mark.slow
def test_linux_table_is_what_the_ebpf_sensor_fills(capture: LiveCapture, dns_responder: None,
                                                   tmp_path: Path) -> None:
    since = capture.mark()
    name = f"doctor-{uuid.uuid4().hex[:12]}.example.test"
    out = json.loads(run_python(TRIGGER, str(tmp_path.resolve()), name))
    assert out["ip"] == ANSWER_IP
    # every category, and the connection to the DNS answer (named by the DNS cache), must have come
    capture.wait_for(lambda e: e.category == ev.NETWORK_CONNECTION and e.fields.get("DestinationPort") == out["port"]
                     and "DestinationHostname" in e.fields, since, timeout=10)
    events = capture.wait_for(lambda e: True, since, timeout=0.1, settle=1.0)
    live = observe(events, defaultdict(set))
    table = linux_ebpf_fields()
    assert {c for c, _ in live} >= set(table), sorted(live)
    recorded = observe(recorded_container_events(), defaultdict(set))
    assert all(e.fields.get("ContainerId") == DOCKER_ID for e in recorded_container_events())
    extra = {cat: sorted(fields - table[cat]) for (cat, _svc), fields in [*live.items(), *recorded.items()]
             if cat in table and fields - table[cat]}
    assert extra == {}, f"fields the eBPF sensor fills that sensor_fields.linux_ebpf_fields() lacks: {extra}"
    never = {cat: sorted(fields - live[(cat, None)] - recorded[(cat, None)])
             for cat, fields in table.items() if fields - live[(cat, None)] - recorded[(cat, None)]}
    assert never == {}, f"fields sensor_fields.linux_ebpf_fields() lists that no event carried: {never}"
    # and only the process cache's own category is left out of the table
    assert {c for c, _ in live} - set(table) <= {ev.PROCESS_FORK}


# --- Windows -------------------------------------------------------------------------------------------

class AnyProcess:
    """A live host that describes every process (as psutil does for one still running)."""

    def __init__(self, table: dict[int, LiveProcess] | None = None) -> None:
        self.table = table or {}

    def describe(self, pid: int) -> LiveProcess | None:
        return self.table.get(pid, LiveProcess(image=f"C:\\Windows\\System32\\p{pid}.exe",
                                               command_line=f"p{pid}.exe", user="lab-windows\\theo-rdp"))


class RealPe:
    """The PE cache's answer for any image: the info of a real PE file (pip's distlib launcher)."""

    def __init__(self, path: Path) -> None:
        self.info = read_pe_info(str(path))

    def lookup(self, path: str, wait: float) -> Any:
        return self.info


def _pe_file() -> Path:
    try:
        from pip._vendor import distlib
    except ImportError:
        pytest.skip("pip's distlib (a real PE file with a version resource) is not installed")
    path = Path(distlib.__file__).parent / "w64.exe"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def _other_paths() -> list[tuple[int, dict[str, Any]]]:
    """Records for what neither the recordings nor the Sysmon samples exercise."""
    inbound = struct.unpack("<I", socket.inet_aton("203.0.113.7"))[0]
    local = struct.unpack("<I", socket.inet_aton("192.168.1.28"))[0]
    port = struct.unpack("<H", (445).to_bytes(2, "big"))[0]
    return [
        record("dns", 3008, {"QueryName": "peer.example", "QueryType": 1, "QueryStatus": 0,
                             "QueryResults": "::ffff:203.0.113.7;"}),
        record("network", 15, {"PID": 6340, "size": 0, "daddr": local, "saddr": inbound, "dport": port,
                               "sport": port}, kinds={"dport": "u16", "sport": "u16"}, pid=4, opcode=15),
        record("wmi", 5861, {"Namespace": "//./root/subscription", "ESS": "evil",
                             "CONSUMER": "CommandLineEventConsumer", "PossibleCause": "Binding"}),
        record("powershell", 4103, {"ContextInfo": "Host Application = powershell.exe", "UserData": "u",
                                    "Payload": "CommandInvocation(Get-Date)"}),
        record("powershell", 4104, {"MessageNumber": 1, "MessageTotal": 2, "ScriptBlockText": "part one",
                                    "ScriptBlockId": "{6a1f}", "Path": "C:\\s.ps1"}),
    ]


@pytest.mark.shared
def test_windows_table_is_what_the_etw_normalizer_fills() -> None:
    observed: Observed = defaultdict(set)
    # the recorded sessions: as recorded (no live host), with a host that knows every process, and with the
    # thread's SID that the session asks ETW to attach (ProviderSpec.sid)
    with_sid = [to_pywintrace(rec, extended={"SID": "S-1-5-21-1-2-3-1001"})
                for name in RECORDINGS for rec in load_recording(name)["records"]]
    for records, facts in ((all_recorded(), None), (all_recorded(), AnyProcess()), (with_sid, None)):
        n = EtwNormalizer(devices=DeviceMap(LAB_DEVICES), sids=SidResolver(LAB_ACCOUNTS.get), facts=facts)
        observe([*n.normalize_batch(records), *n.flush(None)], observed)
    # every Sysmon event of the attack samples, as the ETW records Windows emits for the same activity
    builder = SysmonToEtw()
    root = shared_path("evtx-attack-samples")
    sysmon = [e for path in sorted(root.rglob("*.evtx")) for e in iter_winlog_events(path)
              if e.service == "sysmon" and e.category in ("process_creation", "network_connection", "file_event",
                                                          "registry_set", "dns_query")]
    assert len(sysmon) > 2000
    pe = RealPe(_pe_file())
    with_pe: Observed = defaultdict(set)
    for event in sysmon:
        built = builder.build(event)
        if built is None:
            continue
        records, facts = built
        for lookup, into in ((None, observed), (pe, with_pe)):
            n = EtwNormalizer(devices=DeviceMap(DEVICES), sids=SidResolver(lambda s: None),
                              facts=AnyProcess(facts) if facts else None, pe=lookup)
            observe(n.normalize_batch(records), into)
    n = EtwNormalizer(devices=DeviceMap(LAB_DEVICES), sids=SidResolver(LAB_ACCOUNTS.get), facts=AnyProcess())
    observe([*n.normalize_batch(_other_paths()), *n.flush(None)], observed)

    assert set(observed) == set(WINDOWS_ETW_FIELDS), sorted(set(observed) ^ set(WINDOWS_ETW_FIELDS), key=str)
    pe_fields = with_pe[(ev.PROCESS_CREATION, None)] - observed[(ev.PROCESS_CREATION, None)]
    assert pe_fields == ETW_PE_FIELDS  # what PE info adds, exactly
    extra = {route: sorted(observed[route] - fields) for route, fields in WINDOWS_ETW_FIELDS.items()
             if fields is not None and observed[route] - fields}
    assert extra == {}, f"fields the ETW sensor fills that sensor_fields.WINDOWS_ETW_FIELDS lacks: {extra}"
    never = {route: sorted(fields - observed[route]) for route, fields in WINDOWS_ETW_FIELDS.items()
             if fields is not None and fields - observed[route]}
    assert never == {}, f"fields sensor_fields.WINDOWS_ETW_FIELDS lists that no event carried: {never}"
    # the open routes carry their channel template's properties: more than the System block
    for route, fields in WINDOWS_ETW_FIELDS.items():
        if fields is None:
            assert observed[route] > {"EventID", "Channel", "Provider_Name"}, route
