"""Decoder (sans-IO): kernel records -> Sysmon-named events, with a fake host."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from edr.event import (
    DNS_QUERY,
    FILE_CHANGE,
    FILE_DELETE,
    FILE_EVENT,
    FILE_RENAME,
    NETWORK_CONNECTION,
    PROCESS_CREATION,
    PROCESS_FORK,
    PROCESS_TERMINATION,
    Event,
    F,
)
from edr.sources.ebpf import records as r
from edr.sources.ebpf.decode import Decoder
from edr.sources.ebpf.host import SocketInfo
from tests.sources.ebpf import rawrec as rr
from tests.sources.ebpf.fakehost import FakeHost

DOCKER = "a" * 64


def _decoder(host: FakeHost | None = None, **kw: object) -> Decoder:
    kw.setdefault("clock_ticks", 100)
    return Decoder(host=host or FakeHost(), boot_offset=rr.BOOT_OFFSET, **kw)  # type: ignore[arg-type]


def test_exec_becomes_process_creation() -> None:
    host = FakeHost(cwds={42: "/home/u"}, euids={42: 0}, links={"/bin/sh": "/usr/bin/dash"},
                    cgroups={77: f"/system.slice/docker-{DOCKER}.scope"})
    [ev] = _decoder(host).decode(rr.exec_rec(42, "/bin/sh", ["sh", "-c", "id"], ppid=7, ts_ns=2_500_000_000,
                                             start_ns=1_234_567_890, comm=b"sh"))
    assert ev.category == PROCESS_CREATION and ev.product == "linux"
    assert ev.timestamp == rr.BOOT_OFFSET + 2.5
    f = ev.fields
    assert f[F.IMAGE] == "/usr/bin/dash"
    assert f[F.COMMAND_LINE] == "sh -c id"
    assert f[F.PROCESS_ID] == 42 and f[F.PARENT_PROCESS_ID] == 7
    assert f[F.CURRENT_DIRECTORY] == "/home/u"
    assert (f[F.UID], f[F.GID], f[F.EUID], f[F.COMM]) == (1000, 1000, 0, "sh")
    assert f[F.ARGV_TRUNCATED] is False
    assert f[F.CGROUP_ID] == 77 and f[F.CONTAINER_ID] == DOCKER
    assert f[F.PROCESS_START_TIME] == 123  # the fork's boot time in clock ticks, not the exec's


def test_exec_start_time_is_the_fork_time_in_clock_ticks() -> None:
    """The kernel's fork time, in /proc/<pid>/stat's unit (ticks since boot), however late the exec."""
    host = FakeHost(starts={42: 1})  # never asked: the record carries the fork time
    d = _decoder(host)
    [ev] = d.decode(rr.exec_rec(42, "/usr/bin/x", ["x"], ts_ns=900_000_000_000, start_ns=3_009_999_999))
    assert ev.fields[F.PROCESS_START_TIME] == 300 and type(ev.fields[F.PROCESS_START_TIME]) is int
    assert ev.timestamp == rr.BOOT_OFFSET + 900.0  # the event keeps its own (exec) time
    # USER_HZ is whatever the host says: at 250 Hz a tick is 4 ms
    [ev] = _decoder(host, clock_ticks=250).decode(rr.exec_rec(42, "/usr/bin/x", ["x"], start_ns=3_009_999_999))
    assert ev.fields[F.PROCESS_START_TIME] == 752
    assert host.start_calls == []


def test_exec_of_a_process_forked_before_the_sensor_reads_its_start_from_proc() -> None:
    host = FakeHost(starts={42: 150})
    [ev] = _decoder(host).decode(rr.exec_rec(42, "/usr/bin/x", ["x"], ts_ns=5_000_000_000))
    assert ev.fields[F.PROCESS_START_TIME] == 150
    assert host.start_calls == [42]


def test_exec_start_from_proc_that_postdates_the_exec_is_not_used() -> None:
    """/proc answering for a process started after the exec means the pid was reused: no start time."""
    host = FakeHost(starts={42: 501})
    d = _decoder(host)
    [ev] = d.decode(rr.exec_rec(42, "/usr/bin/x", ["x"], ts_ns=5_000_000_000))
    assert F.PROCESS_START_TIME not in ev.fields
    host.starts[42] = 500  # the same tick as the exec: possible, and kept
    [ev] = d.decode(rr.exec_rec(42, "/usr/bin/x", ["x"], ts_ns=5_009_000_000))
    assert ev.fields[F.PROCESS_START_TIME] == 500
    # gone from /proc: nothing, and in particular not the exec time
    [ev] = d.decode(rr.exec_rec(43, "/usr/bin/x", ["x"], ts_ns=5_000_000_000))
    assert F.PROCESS_START_TIME not in ev.fields
    assert d.statistics()["start_unknown"] == 2


def test_exec_record_layout_matches_the_c_struct() -> None:
    """struct exec_rec: hdr (56), argc u16, fname_len u16, args_len u32, start_ns u64, euid u32, pad u32, blob."""
    assert (r.HDR_SIZE, r.EXEC_TAIL.size, r.EXEC_BLOB_OFF) == (56, 24, 80)
    raw = rr.exec_rec(7, "/bin/true", ["true"], start_ns=0x0102030405060708, euid=0x0A0B0C0D)
    assert raw.data[64:72] == bytes.fromhex("0807060504030201")
    assert raw.data[72:80] == bytes.fromhex("0D0C0B0A00000000")
    assert raw.data[80:85] == b"true\0"


def test_exec_euid_from_the_kernel_needs_no_proc_lookup() -> None:
    """The sensor's euid is taken as is (a setuid program's owner), without a stat of /proc/<pid>."""
    host = FakeHost(euids={42: 0})   # /proc would say 0: it must not be asked
    d = _decoder(host)
    [ev] = d.decode(rr.exec_rec(42, "/usr/bin/passwd", ["passwd"], uid=1000, euid=65534))
    assert (ev.fields[F.UID], ev.fields[F.EUID]) == (1000, 65534)
    assert not [c for c in host.calls if c.startswith("euid")]
    [root] = d.decode(rr.exec_rec(43, "/usr/bin/su", ["su"], uid=1000, euid=0))
    assert root.fields[F.EUID] == 0
    assert d.statistics()["euid_from_proc"] == 0


def test_exec_euid_unknown_to_the_kernel_comes_from_proc() -> None:
    """A sensor built without the kernel's offsets writes EUID_UNKNOWN: the host is asked, and counted."""
    host = FakeHost(euids={42: 0})
    d = _decoder(host)
    [ev] = d.decode(rr.exec_rec(42, "/usr/bin/x", ["x"], uid=1000))
    assert ev.fields[F.EUID] == 0
    assert host.calls.count("euid 42") == 1
    assert d.statistics()["euid_from_proc"] == 1


def test_exec_relative_filename_and_truncation_flag() -> None:
    host = FakeHost(cwds={5: "/opt/app"})
    [ev] = _decoder(host).decode(rr.exec_rec(5, "./run", ["./run", "x"], truncated=True))
    assert ev.fields[F.IMAGE] == "/opt/app/run"
    assert ev.fields[F.ARGV_TRUNCATED] is True
    assert F.EUID not in ev.fields  # unknown, not guessed


def test_fexecve_uses_proc_exe() -> None:
    host = FakeHost(exes={9: "/memfd:payload (deleted)"})
    [ev] = _decoder(host).decode(rr.exec_rec(9, "/dev/fd/3", ["x"]))
    assert ev.fields[F.IMAGE] == "/memfd:payload (deleted)"


def test_fork_and_exit() -> None:
    d = _decoder()
    [fork] = d.decode(rr.fork_rec(10, 11, ts_ns=7_654_321_000))
    assert fork.category == PROCESS_FORK
    assert (fork.fields[F.PROCESS_ID], fork.fields[F.PARENT_PROCESS_ID]) == (11, 10)
    # the fork record is the child's birth: its time is the child's start, in ticks
    assert fork.fields[F.PROCESS_START_TIME] == 765
    [end] = d.decode(rr.exit_rec(11))
    assert end.category == PROCESS_TERMINATION and end.fields[F.PROCESS_ID] == 11
    assert end.seq > fork.seq


def test_relative_paths_after_the_process_is_gone() -> None:
    """Only the first fork finds the parent in /proc; chdir and inheritance do the rest."""
    host = FakeHost(cwds={100: "/srv"})
    d = _decoder(host)
    d.decode(rr.fork_rec(100, 101))
    host.cwds.clear()  # every process has exited by now
    d.decode(rr.chdir_rec(101, "data"))
    [ev] = d.decode(rr.file_rec(101, r.OP_OPEN, "../data/out.txt", flags=0o101))
    assert ev.fields[F.TARGET_FILENAME] == "/srv/data/out.txt"
    d.decode(rr.chdir_rec(101, "/tmp"))
    [ev] = d.decode(rr.file_rec(101, r.OP_UNLINK, "x"))
    assert ev.fields[F.TARGET_FILENAME] == "/tmp/x"
    # unknown everywhere: never reported with a relative path, dropped and counted
    assert d.decode(rr.file_rec(555, r.OP_UNLINK, "y")) == []
    assert d.decode(rr.file_rec(555, r.OP_CHMOD, "", dfd=9)) == []  # fchmod of an fd nobody knows
    assert d.statistics()["path_unresolved"] == 2


def test_file_operations_and_dirfd() -> None:
    host = FakeHost(fds={(3, 7): "/etc/cron.d"}, cwds={3: "/root"})
    d = _decoder(host)

    def one(rec: r.RawRecord) -> tuple[str, str, str | None, str]:
        [ev] = d.decode(rec)
        return ev.category, ev.fields[F.OPERATION], ev.get(F.SOURCE_FILENAME), ev.fields[F.TARGET_FILENAME]

    assert one(rr.file_rec(3, r.OP_OPEN, "job", dfd=7, flags=0o1101)) == (FILE_EVENT, "file_create", None,
                                                                          "/etc/cron.d/job")
    # O_TRUNC without O_CREAT: the file existed, its content is replaced
    assert one(rr.file_rec(3, r.OP_OPEN, "/etc/./passwd", flags=0o1001))[1:] == ("file_write", None,
                                                                                 "/etc/passwd")
    assert one(rr.file_rec(3, r.OP_OPEN, "/a", flags=0o2))[1] == "file_write"
    assert one(rr.file_rec(3, r.OP_UNLINK, "d", flags=r.AT_REMOVEDIR)) == (FILE_DELETE, "file_rmdir", None,
                                                                           "/root/d")
    assert one(rr.file_rec(3, r.OP_RENAME, "a", "b", dfd2=7)) == (FILE_RENAME, "file_rename", "/root/a",
                                                                  "/etc/cron.d/b")
    assert one(rr.file_rec(3, r.OP_CHMOD, "/bin/x")) == (FILE_CHANGE, "file_chmod", None, "/bin/x")
    assert one(rr.file_rec(3, r.OP_CHMOD, "", dfd=7))[3] == "/etc/cron.d"  # fchmod(fd)
    assert one(rr.file_rec(3, r.OP_SYMLINK, "../x", "l")) == (FILE_EVENT, "file_symlink", "../x", "/root/l")
    assert one(rr.file_rec(3, r.OP_MKDIR, "/m"))[:2] == (FILE_EVENT, "file_mkdir")


def test_network_connect_accept_sendto() -> None:
    host = FakeHost(sockets={
        (4, 5): SocketInfo("tcp", ("10.0.0.2", 40000), ("93.184.216.34", 443)),
        (4, 6): SocketInfo("tcp", ("10.0.0.2", 22), ("10.0.0.9", 51000)),
        (4, 8): SocketInfo("udp", ("0.0.0.0", 5353), None),
    }, routes={"10.0.0.1": "10.0.0.2"})
    d = _decoder(host)
    [out] = d.decode(rr.net_rec(r.EV_CONNECT, 4, 5, "93.184.216.34", 443))
    f = out.fields
    assert out.category == NETWORK_CONNECTION
    assert (f[F.INITIATED], f[F.PROTOCOL]) == ("true", "tcp")
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT], f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (
        "10.0.0.2", 40000, "93.184.216.34", 443)
    assert f[F.SOURCE_IS_IPV6] == f[F.DESTINATION_IS_IPV6] == "false"
    [inb] = d.decode(rr.net_rec(r.EV_ACCEPT, 4, 6, "10.0.0.9", 51000))
    g = inb.fields
    assert g[F.INITIATED] == "false"
    assert (g[F.SOURCE_IP], g[F.SOURCE_PORT], g[F.DESTINATION_IP], g[F.DESTINATION_PORT]) == (
        "10.0.0.9", 51000, "10.0.0.2", 22)
    [udp] = d.decode(rr.net_rec(r.EV_SENDTO, 4, 8, "10.0.0.1", 53))
    assert (udp.fields[F.PROTOCOL], udp.fields[F.SOURCE_IP]) == ("udp", "10.0.0.2")  # wildcard -> routed
    # TCP: the kernel captured both ends; the process need not exist any more
    [tcp] = d.decode(rr.net_rec(r.EV_CONNECT, 99, 3, "::ffff:8.8.8.8", 443, local=("::ffff:10.0.0.2", 41000),
                                proto=r.IPPROTO_TCP))
    t = tcp.fields
    assert (t[F.PROTOCOL], t[F.SOURCE_IP], t[F.SOURCE_PORT], t[F.DESTINATION_IP], t[F.DESTINATION_PORT]) == (
        "tcp", "10.0.0.2", 41000, "8.8.8.8", 443)
    assert t[F.DESTINATION_IS_IPV6] == "false"  # IPv4-mapped is reported as IPv4
    # the process is gone: what the kernel captured is still reported
    [gone] = d.decode(rr.net_rec(r.EV_CONNECT, 99, 3, "2001:db8::1", 8443))
    assert gone.fields[F.DESTINATION_IP] == "2001:db8::1" and gone.fields[F.DESTINATION_IS_IPV6] == "true"
    assert F.SOURCE_IP not in gone.fields and F.PROTOCOL not in gone.fields


def test_dns_query_paired_with_its_answer() -> None:
    d = _decoder()
    q = rr.dns_message("evil.example.com")
    a = rr.dns_message("evil.example.com", response=True,
                       answers=((5, 30, b"\x03cdn\xc0\x11"), (1, 120, bytes([1, 2, 3, 4])),
                                (28, 90, bytes(15) + b"\x01")))
    assert d.decode(rr.dns_rec(8, q, ts_ns=1_000_000_000)) == []
    [ev] = d.decode(rr.dns_rec(8, a, answer=True, ts_ns=1_050_000_000))
    assert ev.category == DNS_QUERY
    assert ev.timestamp == rr.BOOT_OFFSET + 1.0  # the query's time
    f = ev.fields
    assert (f[F.QUERY_NAME], f[F.QUERY_TYPE], f[F.QUERY_STATUS]) == ("evil.example.com", "A", "0")
    assert f[F.QUERY_RESULTS] == "type:  5 cdn.example.com;::ffff:1.2.3.4;::1;"
    assert ev.origin == {"dns.answers.ttl": 30}
    assert d.statistics()["dns_pending"] == 0


def test_unanswered_dns_query_is_reported_after_the_timeout() -> None:
    d = _decoder(dns_timeout=2.0)
    d.decode(rr.dns_rec(8, rr.dns_message("nx.example", qtype=28), ts_ns=1_000_000_000))
    assert d.flush(rr.BOOT_OFFSET + 2.5) == []
    [ev] = d.flush(rr.BOOT_OFFSET + 3.5)
    assert (ev.fields[F.QUERY_NAME], ev.fields[F.QUERY_TYPE]) == ("nx.example", "AAAA")
    assert F.QUERY_RESULTS not in ev.fields


def test_ignored_pids_are_dropped() -> None:
    d = _decoder(ignore_pids={42})
    assert d.decode(rr.exec_rec(42, "/bin/true", ["true"])) == []
    assert d.statistics()["ignored"] == 1


def test_malformed_records_never_raise() -> None:
    d = _decoder()
    bad = [b"", b"\x00" * 10, rr.hdr(99, 1), rr.hdr(r.EV_EXEC, 1),
           rr.hdr(r.EV_EXEC, 1) + struct.pack("<HHI", 1, 5000, 9000),
           rr.hdr(r.EV_CONNECT, 1) + b"\xff" * 3, rr.hdr(r.EV_DNS, 1) + b"\x01" * 60]
    for data in bad:
        assert d.decode(r.RawRecord(r.PROCESS, data)) == []
    assert d.statistics()["malformed"] >= len(bad) - 1


@settings(max_examples=300, deadline=None)
@given(typ=st.sampled_from([1, 2, 3, 4, 10, 11, 12, 20, 30, 7]), tail=st.binary(max_size=1200))
def test_random_record_bodies_never_raise(typ: int, tail: bytes) -> None:
    # every record is accounted for: it gives events, or a counter says why it gave none
    d = _decoder()
    before = sum(d.statistics().values())
    events = d.decode(r.RawRecord(r.FILE, rr.hdr(typ, 1234) + tail))
    assert all(isinstance(e, Event) for e in events)
    assert d.statistics()["decoded"] == len(events)
    if typ != r.EV_CHDIR:  # a chdir record only updates the working directory the decoder tracks
        assert events or sum(d.statistics().values()) > before, (typ, tail)


def _same_events(a: list[Event], b: list[Event]) -> bool:
    return [(e.category, e.fields, e.timestamp, e.seq, e.origin) for e in a] == \
        [(e.category, e.fields, e.timestamp, e.seq, e.origin) for e in b]


def test_a_batch_decodes_as_its_records_one_by_one() -> None:
    """decode_batch: the same events in the same order and the same counters as decode per record,
    malformed records (here a header alone and a truncated exec) counted and skipped in between."""
    host = FakeHost(cwds={10: "/srv"}, euids={11: 0}, cgroups={77: f"/system.slice/docker-{DOCKER}.scope"})
    answer = rr.dns_message("a.example", response=True, answers=((1, 60, bytes([192, 0, 2, 1])),))
    batch = [rr.fork_rec(10, 11), r.RawRecord(r.PROCESS, b"\x00" * 10), rr.exec_rec(11, "/bin/sh", ["sh"]),
             r.RawRecord(r.PROCESS, rr.hdr(r.EV_EXEC, 11)), rr.exit_rec(11, code=3),
             rr.dns_rec(11, rr.dns_message("a.example")),
             rr.dns_rec(11, answer, answer=True)]
    one, many = _decoder(host), _decoder(host)
    expected = [e for raw in batch for e in one.decode(raw)]
    got = many.decode_batch(batch)
    assert [e.category for e in got] == [PROCESS_FORK, PROCESS_CREATION, PROCESS_TERMINATION, DNS_QUERY]
    assert _same_events(got, expected)
    assert many.statistics() == one.statistics() and many.statistics()["malformed"] == 2


class CountingHost(FakeHost):
    def cgroup_path(self, pid: int, cgroup_id: int) -> str | None:
        self.calls.append(f"cgroup {pid}")
        return super().cgroup_path(pid, cgroup_id)


def test_cgroup_and_container_are_looked_up_once_per_cgroup_id() -> None:
    host = CountingHost(cgroups={77: f"/system.slice/docker-{DOCKER}.scope"})
    d = _decoder(host)
    events = d.decode_batch([rr.exec_rec(pid, "/bin/true", ["true"], comm=b"true") for pid in (40, 41, 42)])
    assert [(e.fields[F.CGROUP_PATH], e.fields[F.CONTAINER_ID], e.fields[F.COMM]) for e in events] == \
        [(f"/system.slice/docker-{DOCKER}.scope", DOCKER, "true")] * 3
    assert sum(call.startswith("cgroup") for call in host.calls) == 1
