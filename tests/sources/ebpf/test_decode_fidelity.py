"""Decoder (sans-IO) for what the kernel now states itself: exit status, both socket ends, create vs write.

Records are built byte for byte as ``bpf/sensor.c`` writes them (tests/sources/ebpf/rawrec.py);
the host is a fake whose processes may be gone (tests/sources/ebpf/fakehost.py).
"""

from __future__ import annotations

import pytest

from edr.event import FILE_CHANGE, FILE_EVENT, NETWORK_CONNECTION, PROCESS_TERMINATION, F
from edr.sources.ebpf import records as r
from edr.sources.ebpf.decode import EXIT_CODE, EXIT_SIGNAL, Decoder, signal_name
from edr.sources.ebpf.host import SocketInfo
from tests.sources.ebpf import rawrec as rr
from tests.sources.ebpf.fakehost import FakeHost

O_WRONLY, O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o1, 0o100, 0o200, 0o1000, 0o2000
SLACK = 5_000_000  # a 4 ms kernel tick and a millisecond


def _decoder(host: FakeHost | None = None) -> Decoder:
    return Decoder(host=host or FakeHost(), boot_offset=rr.BOOT_OFFSET, clock_ticks=100, birth_slack=SLACK)


# --------------------------------------------------------------- exit status --
@pytest.mark.parametrize(("record", "code", "signal"), [
    (rr.exit_rec(5, code=7), 7, None),            # sh -c 'exit 7'
    (rr.exit_rec(5, code=0), 0, None),
    (rr.exit_rec(5, code=255), 255, None),
    (rr.exit_rec(5, signal=9), 137, "SIGKILL"),   # as $? says it: 128 + 9
    (rr.exit_rec(5, signal=15), 143, "SIGTERM"),
    (rr.exit_rec(5, signal=13), 141, "SIGPIPE"),
    (rr.exit_rec(5, signal=11), 139, "SIGSEGV"),
])
def test_exit_status(record: r.RawRecord, code: int, signal: str | None) -> None:
    [ev] = _decoder().decode(record)
    assert ev.category == PROCESS_TERMINATION
    assert ev.fields[EXIT_CODE] == code and type(ev.fields[EXIT_CODE]) is int
    assert ev.fields.get(EXIT_SIGNAL) == signal


def test_exit_without_a_status_has_none_and_is_counted() -> None:
    d = _decoder()
    [ev] = d.decode(rr.exit_rec(5))
    assert EXIT_CODE not in ev.fields and EXIT_SIGNAL not in ev.fields
    assert d.statistics()["exit_status_unknown"] == 1


def test_signal_names() -> None:
    assert [signal_name(n) for n in (1, 9, 31, 35, 64, 32, 99)] == [
        "SIGHUP", "SIGKILL", "SIGSYS", "SIGRTMIN+1", "SIGRTMAX", "SIG32", "SIG99"]


# ---------------------------------------------------------------- network --
def _net(d: Decoder, rec: r.RawRecord) -> dict[str, object]:
    [ev] = d.decode(rec)
    assert ev.category == NETWORK_CONNECTION
    return ev.fields


def test_udp_with_both_ends_from_the_kernel_never_asks_the_process() -> None:
    host = FakeHost()  # the process is gone: /proc knows nothing
    d = _decoder(host)
    f = _net(d, rr.net_rec(r.EV_CONNECT, 40, -1, "127.0.0.1", 5353, local=("127.0.0.1", 40001),
                           proto=r.IPPROTO_UDP))
    assert (f[F.PROTOCOL], f[F.INITIATED]) == ("udp", "true")
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT], f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (
        "127.0.0.1", 40001, "127.0.0.1", 5353)
    g = _net(d, rr.net_rec(r.EV_SENDTO, 40, -1, "::1", 53, local=("::1", 40002), proto=r.IPPROTO_UDP))
    assert (g[F.PROTOCOL], g[F.SOURCE_IP], g[F.SOURCE_PORT], g[F.SOURCE_IS_IPV6]) == ("udp", "::1", 40002, "true")
    assert not [c for c in host.calls if c.startswith("socket")]
    assert d.statistics()["socket_from_proc"] == d.statistics()["socket_unknown"] == 0


def test_udp_sent_from_a_wildcard_bound_socket_takes_the_routed_source() -> None:
    d = _decoder(FakeHost(routes={"10.0.0.1": "10.0.0.2"}))
    f = _net(d, rr.net_rec(r.EV_SENDTO, 40, -1, "10.0.0.1", 53, local=("0.0.0.0", 40003), proto=r.IPPROTO_UDP))
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT]) == ("10.0.0.2", 40003)


def test_udp_connected_and_closed_without_a_datagram_has_its_destination_only() -> None:
    host = FakeHost(sockets={(40, 3): SocketInfo("udp", ("127.0.0.1", 1), None)})
    d = _decoder(host)
    f = _net(d, rr.net_rec(r.EV_CONNECT, 40, 3, "192.0.2.7", 443, proto=r.IPPROTO_UDP, xflags=r.XF_NET_UNSENT))
    assert (f[F.PROTOCOL], f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == ("udp", "192.0.2.7", 443)
    assert F.SOURCE_IP not in f and F.SOURCE_PORT not in f
    assert host.calls == []  # the socket is closed: /proc would answer for whatever has its fd now


def test_accept_with_both_ends_from_the_kernel() -> None:
    host = FakeHost()
    d = _decoder(host)
    f = _net(d, rr.net_rec(r.EV_ACCEPT, 41, 5, "10.0.0.9", 51000, local=("10.0.0.2", 22), proto=r.IPPROTO_TCP))
    assert (f[F.INITIATED], f[F.PROTOCOL]) == ("false", "tcp")
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT], f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (
        "10.0.0.9", 51000, "10.0.0.2", 22)
    assert host.calls == []


def test_accept_the_kernel_could_not_see_falls_back_to_the_live_process_counted() -> None:
    host = FakeHost(sockets={(41, 6): SocketInfo("tcp", ("10.0.0.2", 22), ("10.0.0.9", 51000))})
    d = _decoder(host)
    # accept(fd, NULL, NULL): no peer address from the kernel
    f = _net(d, rr.net_rec(r.EV_ACCEPT, 41, 6, None))
    assert (f[F.SOURCE_IP], f[F.SOURCE_PORT], f[F.DESTINATION_IP], f[F.DESTINATION_PORT]) == (
        "10.0.0.9", 51000, "10.0.0.2", 22)
    assert d.statistics()["socket_from_proc"] == 1
    # and once the process is gone there is nothing left to report
    assert d.decode(rr.net_rec(r.EV_ACCEPT, 41, 7, None)) == []
    assert d.statistics()["socket_unknown"] == 1


# ------------------------------------------------------------------- files --
def _op(d: Decoder, rec: r.RawRecord) -> tuple[str, str, str]:
    [ev] = d.decode(rec)
    return ev.category, ev.fields[F.OPERATION], ev.fields[F.TARGET_FILENAME]


START = 4_999_000_000  # the open's entry, boot-clock ns


@pytest.mark.parametrize(("flags", "born", "operation"), [
    (O_WRONLY | O_APPEND, None, "file_write"),                      # no O_CREAT: the file existed
    (O_WRONLY | O_TRUNC, None, "file_write"),
    (O_WRONLY | O_CREAT | O_APPEND, START - 3_600 * 10**9, "file_write"),  # echo x >> f, f an hour old
    (O_WRONLY | O_CREAT | O_TRUNC, START - 10**9, "file_write"),    # echo x > f, f a second old
    (O_WRONLY | O_CREAT | O_APPEND, START + 200_000, "file_create"),  # born inside the open
    (O_WRONLY | O_CREAT | O_TRUNC, START - 3_000_000, "file_create"),  # within a coarse-clock tick of it
    (O_WRONLY | O_CREAT | O_EXCL, START - 10**9, "file_create"),     # O_EXCL succeeds only by creating
])
def test_open_is_a_create_only_when_it_created_the_file(flags: int, born: int | None, operation: str) -> None:
    host = FakeHost(births={"/srv/f": born} if born is not None else {})
    d = _decoder(host)
    assert _op(d, rr.file_rec(7, r.OP_OPEN, "/srv/f", flags=flags, start_ns=START, aux=3)) == (
        FILE_EVENT, operation, "/srv/f")
    assert d.statistics()["create_unverified"] == 0


def test_o_creat_open_of_a_file_gone_before_decoding_is_a_create_counted() -> None:
    d = _decoder()
    assert _op(d, rr.file_rec(7, r.OP_OPEN, "/tmp/gone", flags=O_WRONLY | O_CREAT, aux=3))[1] == "file_create"
    assert d.statistics()["create_unverified"] == 1


def test_o_tmpfile_is_a_create_in_its_directory() -> None:
    d = _decoder()
    assert _op(d, rr.file_rec(7, r.OP_OPEN, "/tmp", flags=0o20200000 | O_WRONLY, aux=3))[1:] == (
        "file_create", "/tmp")


def test_files_under_dev_are_reported_device_nodes_are_not() -> None:
    host = FakeHost(special={"/dev/sda", "/dev/shm/fifo"})
    d = _decoder(host)
    assert _op(d, rr.file_rec(7, r.OP_OPEN, "/dev/shm/x.edr-ioc-demo", flags=O_WRONLY | O_CREAT, aux=3))[2] == (
        "/dev/shm/x.edr-ioc-demo")
    assert _op(d, rr.file_rec(7, r.OP_OPEN, "/dev/mqueue/q", flags=O_WRONLY | O_CREAT, aux=4))[2] == "/dev/mqueue/q"
    assert d.decode(rr.file_rec(7, r.OP_OPEN, "/dev/sda", flags=O_WRONLY, aux=5)) == []
    assert d.decode(rr.file_rec(7, r.OP_OPEN, "/dev/shm/fifo", flags=O_WRONLY, aux=5)) == []
    assert d.statistics()["device_opens"] == 2
    # a change of a device node is not a write through it: still reported
    assert _op(d, rr.file_rec(7, r.OP_CHMOD, "/dev/sda"))[1:] == ("file_chmod", "/dev/sda")


def test_fchmod_of_a_file_opened_for_writing_names_it_after_the_process_is_gone() -> None:
    host = FakeHost(cwds={7: "/opt"})
    d = _decoder(host)
    d.decode(rr.file_rec(7, r.OP_OPEN, "bin/tool", flags=O_WRONLY | O_CREAT | O_TRUNC, aux=4))
    host.cwds.clear()  # install(1) has exited
    # the kernel says fd 4 is still the one that open returned
    assert _op(d, rr.file_rec(7, r.OP_CHMOD, "", dfd=4, xflags=r.XF_FD_WRITTEN)) == (
        FILE_CHANGE, "file_chmod", "/opt/bin/tool")
    # without the kernel's word the remembered fd may be stale: only /proc may answer, and it cannot
    assert d.decode(rr.file_rec(7, r.OP_CHMOD, "", dfd=4)) == []
    assert d.statistics()["path_unresolved"] == 1


def test_fd_based_change_asks_proc_when_the_kernel_did_not_flag_the_fd() -> None:
    host = FakeHost(fds={(7, 9): "/etc/shadow"})
    d = _decoder(host)
    assert _op(d, rr.file_rec(7, r.OP_CHOWN, "", dfd=9))[1:] == ("file_chown", "/etc/shadow")
    # /proc answering with something that is not a path (a pipe, an anonymous inode) is no path
    host.fds[(7, 10)] = "pipe:[1234]"
    assert d.decode(rr.file_rec(7, r.OP_CHOWN, "", dfd=10)) == []


def test_write_fds_are_forgotten_when_the_process_exits() -> None:
    d = _decoder()
    d.decode(rr.file_rec(7, r.OP_OPEN, "/srv/a", flags=O_WRONLY, aux=4))
    d.decode(rr.exit_rec(7, code=0))
    # a new process with the same pid and the same fd number
    assert d.decode(rr.file_rec(7, r.OP_CHMOD, "", dfd=4, xflags=r.XF_FD_WRITTEN)) == []


def test_rename_and_link_with_an_unknown_base_are_dropped_whole() -> None:
    d = _decoder(FakeHost(cwds={7: "/srv"}))
    assert d.decode(rr.file_rec(7, r.OP_RENAME, "a", "b", dfd=5)) == []
    assert d.decode(rr.file_rec(7, r.OP_LINK, "a", "b", dfd2=5)) == []
    [ev] = d.decode(rr.file_rec(7, r.OP_SYMLINK, "../x", "l"))
    assert (ev.fields[F.SOURCE_FILENAME], ev.fields[F.TARGET_FILENAME]) == ("../x", "/srv/l")


def test_file_record_layout_matches_the_c_struct() -> None:
    """struct file_rec: hdr (56), op, pad, dfd, dfd2, flags, mode, arg, start_ns (u64 at 80), path1 at 88."""
    assert (r.FILE_TAIL.size, r.FILE_PATH1_OFF, r.FILE_PATH2_OFF) == (32, 88, 600)
    raw = rr.file_rec(7, r.OP_OPEN, "/x", start_ns=0x0102030405060708)
    assert raw.data[80:88] == bytes.fromhex("0807060504030201")
    assert raw.data[88:91] == b"/x\0"
