"""bpf() and perf_event_open() through ctypes, against the real kernel: maps, programs, links, BTF."""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterator

import pytest

from edr.sources.ebpf import bpf_syscall as bpf

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating BPF maps and programs needs root"),
]

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


# --- a few instructions (struct bpf_insn: u8 code, u8 dst:4 src:4, s16 off, s32 imm) ----------------

def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def mov64_imm(dst: int, imm: int) -> bytes:
    return insn(0xB7, dst, imm=imm)


def mov64_reg(dst: int, src: int) -> bytes:
    return insn(0xBF, dst, src)


def exit_insn() -> bytes:
    return insn(0x95)


def ld_map_fd(dst: int, fd: int) -> bytes:
    # BPF_LD | BPF_DW | BPF_IMM with src BPF_PSEUDO_MAP_FD: two slots
    return insn(0x18, dst, 1, imm=fd) + insn(0)


def counter_program(map_fd: int, tgid: int) -> bytes:
    """Add one to element 0 (u64) of array ``map_fd`` when process ``tgid`` hits the tracepoint."""
    return b"".join([
        insn(0x85, imm=14),                 # call bpf_get_current_pid_tgid
        insn(0x77, 0, imm=32),              # r0 >>= 32
        insn(0x55, 0, off=9, imm=tgid),     # if r0 != tgid goto out
        insn(0x62, 10, off=-4, imm=0),      # *(u32 *)(r10 - 4) = 0
        ld_map_fd(1, map_fd),               # r1 = map
        mov64_reg(2, 10),                   # r2 = r10
        insn(0x07, 2, imm=-4),              # r2 += -4
        insn(0x85, imm=1),                  # call bpf_map_lookup_elem
        insn(0x15, 0, off=2, imm=0),        # if r0 == 0 goto out
        mov64_imm(1, 1),                    # r1 = 1
        insn(0xDB, 0, 1, off=0, imm=0),     # lock *(u64 *)(r0 + 0) += r1
        mov64_imm(0, 0),                    # out: r0 = 0
        exit_insn(),
    ])


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """File descriptors to close after the test."""
    opened: list[int] = []
    yield opened
    for fd in reversed(opened):
        os.close(fd)


# --- maps ------------------------------------------------------------------------------------------

def test_hash_map_update_lookup_delete(fds: list[int]) -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 8, 8, name="edr_test_hash")
    fds.append(fd)
    bpf.map_update(fd, U32.pack(7), U64.pack(0xDEADBEEF))
    assert bpf.map_lookup(fd, U32.pack(7), 8) == U64.pack(0xDEADBEEF)
    assert bpf.map_lookup(fd, U32.pack(8), 8) is None
    bpf.map_update(fd, U32.pack(7), U64.pack(2), bpf.BPF_EXIST)
    assert bpf.map_lookup(fd, U32.pack(7), 8) == U64.pack(2)
    assert bpf.map_next_key(fd, None, 4) == U32.pack(7)
    assert bpf.map_next_key(fd, U32.pack(7), 4) is None
    assert bpf.map_delete(fd, U32.pack(7)) is True
    assert bpf.map_delete(fd, U32.pack(7)) is False
    assert bpf.map_lookup(fd, U32.pack(7), 8) is None


def test_update_errors_name_the_operation_and_errno(fds: list[int]) -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 8, 1, name="edr_test_full")
    fds.append(fd)
    with pytest.raises(bpf.BpfError) as missing:
        bpf.map_update(fd, U32.pack(1), U64.pack(1), bpf.BPF_EXIST)
    assert missing.value.errno == errno.ENOENT
    assert f"BPF_MAP_UPDATE_ELEM fd {fd}" in str(missing.value)
    assert "No such file or directory" in str(missing.value)
    bpf.map_update(fd, U32.pack(1), U64.pack(1))
    with pytest.raises(bpf.BpfError) as full:
        bpf.map_update(fd, U32.pack(2), U64.pack(1))
    assert full.value.errno == errno.E2BIG
    assert isinstance(full.value, OSError)
    with pytest.raises(bpf.BpfError) as exists:
        bpf.map_update(fd, U32.pack(1), U64.pack(1), bpf.BPF_NOEXIST)
    assert exists.value.errno == errno.EEXIST


def test_map_create_error_names_the_map() -> None:
    with pytest.raises(bpf.BpfError) as err:
        bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 8, 8, 4, name="edr_bad_array")   # arrays take u32 keys
    assert err.value.errno == errno.EINVAL
    assert "BPF_MAP_CREATE edr_bad_array" in str(err.value)


def test_array_map(fds: list[int]) -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 16, 4, name="edr_test_array")
    fds.append(fd)
    assert bpf.map_lookup(fd, U32.pack(3), 16) == bytes(16)   # arrays are preallocated, zeroed
    bpf.map_update(fd, U32.pack(3), b"0123456789abcdef")
    assert bpf.map_lookup(fd, U32.pack(3), 16) == b"0123456789abcdef"
    assert bpf.map_lookup(fd, U32.pack(4), 16) is None         # past max_entries
    with pytest.raises(bpf.BpfError) as err:
        bpf.map_update(fd, U32.pack(9), bytes(16))
    assert err.value.errno == errno.E2BIG


def test_percpu_array_holds_a_value_per_possible_cpu(fds: list[int]) -> None:
    cpus = bpf.possible_cpus()
    with open("/sys/devices/system/cpu/possible", encoding="ascii") as f:
        last = f.read().strip().split(",")[-1].split("-")[-1]
    assert cpus == int(last) + 1 >= (os.cpu_count() or 1)
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 2, name="edr_test_pcpu")
    fds.append(fd)
    size = bpf.percpu_value_size(4)
    assert size == 8 * cpus                                     # 4 bytes padded to 8, per CPU
    values = b"".join(U32.pack(100 + cpu) + bytes(4) for cpu in range(cpus))
    bpf.map_update(fd, U32.pack(1), values)
    got = bpf.map_lookup(fd, U32.pack(1), size)
    assert got is not None
    assert [U32.unpack_from(got, 8 * cpu)[0] for cpu in range(cpus)] == [100 + cpu for cpu in range(cpus)]


def test_lru_hash_evicts_instead_of_refusing(fds: list[int]) -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_LRU_HASH, 4, 4, 128, name="edr_test_lru")
    fds.append(fd)
    for key in range(2000):
        bpf.map_update(fd, U32.pack(key), U32.pack(key * 3))
    present = [k for k in range(2000) if bpf.map_lookup(fd, U32.pack(k), 4) is not None]
    assert 0 < len(present) <= 128 + 64 * bpf.possible_cpus()   # LRU keeps per-CPU free lists
    assert 1999 in present                                      # the newest survives
    assert bpf.map_lookup(fd, U32.pack(1999), 4) == U32.pack(1999 * 3)


def test_map_info(fds: list[int]) -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 12, 33, bpf.BPF_F_NO_PREALLOC, name="edr_info_map")
    fds.append(fd)
    info = bpf.map_info(fd)
    assert (info.type, info.key_size, info.value_size, info.max_entries, info.flags, info.name) == (
        bpf.BPF_MAP_TYPE_HASH, 4, 12, 33, bpf.BPF_F_NO_PREALLOC, "edr_info_map")
    assert info.id > 0
    other = bpf.map_create(bpf.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, name="edr_info_ring")
    fds.append(other)
    ring = bpf.map_info(other)
    assert (ring.type, ring.max_entries, ring.name) == (bpf.BPF_MAP_TYPE_RINGBUF, 4096, "edr_info_ring")
    assert ring.id != info.id


def test_a_long_name_is_cut_to_what_the_kernel_keeps(fds: list[int]) -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="edr_a_rather_long_map_name")
    fds.append(fd)
    assert bpf.map_info(fd).name == "edr_a_rather_lo"


def test_info_of_a_closed_fd_names_the_operation() -> None:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    os.close(fd)
    with pytest.raises(bpf.BpfError) as err:
        bpf.map_info(fd)
    assert err.value.errno in (errno.EBADF, errno.EBADFD)   # EBADFD since 6.x
    assert f"BPF_OBJ_GET_INFO_BY_FD fd {fd}" in str(err.value)


# --- BTF (socket storage maps need it) ------------------------------------------------------------

def one_int_btf() -> bytes:
    """A BTF object with one type, id 1: ``int`` (32 bits, signed)."""
    strings = b"\0int\0"
    types = struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", (1 << 24) | 32)   # BTF_KIND_INT; BTF_INT_SIGNED
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_btf_for_a_socket_storage_map(fds: list[int]) -> None:
    blob = one_int_btf()
    btf = bpf.btf_load(blob)
    fds.append(btf)
    with pytest.raises(bpf.BpfError):   # the kernel wants to know the types of socket storage
        bpf.map_create(bpf.BPF_MAP_TYPE_SK_STORAGE, 4, 4, 0, bpf.BPF_F_NO_PREALLOC, name="edr_sk_nobtf")
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_SK_STORAGE, 4, 4, 0, bpf.BPF_F_NO_PREALLOC, name="edr_sk",
                        btf_fd=btf, btf_key_type_id=1, btf_value_type_id=1)
    fds.append(fd)
    info = bpf.map_info(fd)
    assert (info.type, info.btf_key_type_id, info.btf_value_type_id) == (bpf.BPF_MAP_TYPE_SK_STORAGE, 1, 1)
    again = bpf.btf_get_fd_by_id(info.btf_id)
    fds.append(again)
    assert bpf.btf_data(again) == blob


def test_refused_btf_carries_the_kernel_log() -> None:
    with pytest.raises(bpf.BpfError) as err:
        bpf.btf_load(one_int_btf()[:-2])
    assert err.value.errno == errno.EINVAL
    assert "Total section length too long" in err.value.log
    assert "BPF_BTF_LOAD" in str(err.value) and "Total section length too long" in str(err.value)


# --- programs --------------------------------------------------------------------------------------

def test_prog_load_of_a_tiny_program(fds: list[int]) -> None:
    fd = bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, mov64_imm(0, 0) + exit_insn(), name="edr_tiny")
    fds.append(fd)
    info = bpf.prog_info(fd)
    assert (info.type, info.name) == (bpf.BPF_PROG_TYPE_TRACEPOINT, "edr_tiny")
    assert info.id > 0 and len(info.tag) == 8


def test_the_verifiers_refusal_is_in_the_error() -> None:
    reads_r2 = mov64_reg(0, 2) + exit_insn()   # r2 was never written
    with pytest.raises(bpf.BpfError) as err:
        bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, reads_r2, name="edr_bad")
    assert err.value.errno == errno.EACCES
    assert "R2 !read_ok" in err.value.log
    text = str(err.value)
    assert text.startswith("BPF_PROG_LOAD edr_bad (type 5)") and "R2 !read_ok" in text


def test_a_refusal_without_a_log_keeps_the_first_errno() -> None:
    with pytest.raises(bpf.BpfError) as err:
        bpf.prog_load(9999, mov64_imm(0, 0) + exit_insn(), name="edr_badtype")
    assert err.value.errno == errno.EINVAL
    assert err.value.log == ""


def test_prog_load_rejects_a_partial_instruction() -> None:
    with pytest.raises(ValueError, match="not a whole number of instructions"):
        bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, exit_insn()[:5])


def test_tracepoint_id_matches_tracefs() -> None:
    tp = bpf.tracepoint_id("syscalls", "sys_enter_getppid")
    assert tp > 0
    with pytest.raises(bpf.BpfError) as err:
        bpf.tracepoint_id("syscalls", "sys_enter_no_such_call")
    assert err.value.errno == errno.ENOENT and "syscalls:sys_enter_no_such_call" in str(err.value)


def _counter(fd: int) -> int:
    value = bpf.map_lookup(fd, U32.pack(0), 8)
    assert value is not None
    return int(U64.unpack(value)[0])


def test_a_program_on_a_syscall_tracepoint_runs_until_its_link_is_closed(fds: list[int]) -> None:
    counts = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="edr_test_cnt")
    fds.append(counts)
    prog = bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, counter_program(counts, os.getpid()), name="edr_count")
    fds.append(prog)
    perf = bpf.perf_event_open_tracepoint(bpf.tracepoint_id("syscalls", "sys_enter_getppid"))
    fds.append(perf)
    assert _counter(counts) == 0
    link = bpf.attach_perf_event(prog, perf)
    assert link is not None, "this kernel has perf links (5.15+)"
    try:
        for _ in range(25):
            os.getppid()
        assert _counter(counts) == 25
    finally:
        os.close(link)
    # detached at once, though the perf event is still open
    for _ in range(25):
        os.getppid()
    assert _counter(counts) == 25


def test_link_create_errors_name_both_fds(fds: list[int]) -> None:
    prog = bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, mov64_imm(0, 0) + exit_insn())
    fds.append(prog)
    with pytest.raises(bpf.BpfError) as err:
        bpf.link_create(prog, 0, bpf.BPF_PERF_EVENT)   # stdin is no perf event
    assert f"BPF_LINK_CREATE prog fd {prog} to fd 0" in str(err.value)


def test_counting_is_exact_across_threads(fds: list[int]) -> None:
    # the program counts per process, whatever the thread or CPU
    import threading

    counts = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1)
    fds.append(counts)
    prog = bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, counter_program(counts, os.getpid()))
    fds.append(prog)
    perf = bpf.perf_event_open_tracepoint(bpf.tracepoint_id("syscalls", "sys_enter_getppid"))
    fds.append(perf)
    link = bpf.attach_perf_event(prog, perf)
    assert link is not None
    fds.append(link)

    def calls() -> None:
        for _ in range(500):
            os.getppid()

    threads = [threading.Thread(target=calls) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 30
    assert _counter(counts) == 2000


SEND_FROM_CGROUP = """
import socket, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as f:
    f.write("0")                      # this process moves into the test's cgroup
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", ("127.0.0.1", 9))
except PermissionError:
    sys.exit(3)
"""


def test_a_cgroup_link_holds_while_its_fd_is_open(fds: list[int]) -> None:
    import subprocess
    import sys

    from edr.sources.ebpf.host import find_cgroup2_mount

    root = find_cgroup2_mount()
    if not root:
        pytest.skip("no cgroup v2 hierarchy")
    group = os.path.join(root, f"edr-test-bpfsys-{os.getpid()}")
    os.mkdir(group)
    try:
        cg = os.open(group, os.O_RDONLY | os.O_DIRECTORY)
        fds.append(cg)
        drop = bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_SKB, mov64_imm(0, 0) + exit_insn(), name="edr_drop")
        fds.append(drop)

        def send() -> int:
            return subprocess.run([sys.executable, "-c", SEND_FROM_CGROUP, group], timeout=30).returncode

        assert send() == 0
        link = bpf.link_create(drop, cg, bpf.BPF_CGROUP_INET_EGRESS)
        try:
            assert send() == 3, "egress from the cgroup was not dropped"
        finally:
            os.close(link)
        assert send() == 0, "the program stayed attached after its link was closed"
    finally:
        os.rmdir(group)


def test_without_perf_links_the_program_is_set_on_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    # kernels before 5.15 refuse BPF_LINK_CREATE on a perf event with EINVAL
    def no_perf_links(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
        raise bpf.BpfError("BPF_LINK_CREATE", errno.EINVAL)

    monkeypatch.setattr(bpf, "link_create", no_perf_links)
    counts = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1)
    try:
        prog = bpf.prog_load(bpf.BPF_PROG_TYPE_TRACEPOINT, counter_program(counts, os.getpid()))
        try:
            perf = bpf.perf_event_open_tracepoint(bpf.tracepoint_id("syscalls", "sys_enter_getppid"))
            try:
                assert bpf.attach_perf_event(prog, perf) is None
                for _ in range(10):
                    os.getppid()
                assert _counter(counts) == 10
            finally:
                os.close(perf)   # the program goes with the event
            for _ in range(10):
                os.getppid()
            assert _counter(counts) == 10
        finally:
            os.close(prog)
    finally:
        os.close(counts)
