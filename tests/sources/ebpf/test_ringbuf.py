"""The mmap ring buffer consumer, fed by a real program on ``sys_enter_write``.

The program (compiled with bcc here, in the test only) copies what this
process writes to /dev/null into a ring: ``write`` on one fd into the small
ring (one page), ``pwrite`` on another into the large one.  A write whose first
byte is ``D`` is reserved then discarded; a record the ring has no room for
is counted in ``lost``.  So the test decides every record's exact payload.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import random
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from edr.sources.ebpf.ringbuf import RingBuffer, RingPoller

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root"),
    pytest.mark.skipif(importlib.util.find_spec("bcc") is None, reason="the test programs are compiled with bcc"),
]

SMALL_PAGES = 1
LARGE_PAGES = 64
PAGE = os.sysconf("SC_PAGE_SIZE")

PROBE = r"""
TRACEPOINT_PROBE(syscalls, SYSCALL) {
    int zero = 0, ring = INDEX;
    struct conf *c = cfg.lookup(&zero);
    if (!c || bpf_get_current_pid_tgid() >> 32 != c->pid || args->fd != c->FD)
        return 0;
    struct blob *sb = scratch.lookup(&zero);
    if (!sb)
        return 0;
    u64 n = args->count;
    if (n == 0 || n > sizeof(sb->b))
        return 0;
    // a pointer, not the array: bcc's rewriter aborts on an array argument
    char *buf = sb->b;
    if (bpf_probe_read_user(buf, n, args->buf))
        return 0;
    int failed = 0;
    if (buf[0] == 'D') {
        struct blob16 *r = RING.ringbuf_reserve(sizeof(struct blob16));
        if (r) {
            __builtin_memcpy(r->b, buf, 16);
            RING.ringbuf_discard(r, 0);
        } else {
            failed = 1;
        }
    } else if (RING.ringbuf_output(buf, n, 0)) {
        failed = 1;
    }
    if (failed) {
        u64 *l = lost.lookup(&ring);
        if (l)
            __sync_fetch_and_add(l, 1);
    }
    return 0;
}
"""
PROGRAM = r"""
struct conf { u32 pid; u32 small_fd; u32 large_fd; };
struct blob { char b[512]; };
struct blob16 { char b[16]; };
BPF_RINGBUF_OUTPUT(rb_small, SMALL_PAGES);
BPF_RINGBUF_OUTPUT(rb_large, LARGE_PAGES);
BPF_ARRAY(cfg, struct conf, 1);
BPF_ARRAY(lost, u64, 2);
BPF_PERCPU_ARRAY(scratch, struct blob, 1);
""" + "".join(
    PROBE.replace("SYSCALL", call).replace("INDEX", index).replace("RING", ring).replace("FD", fd)
    for call, index, ring, fd in (("sys_enter_write", "0", "rb_small", "small_fd"),
                                  ("sys_enter_pwrite64", "1", "rb_large", "large_fd")))


@dataclass
class Rig:
    """The program and its two rings (records: ``os.write(small_fd)``, ``os.pwrite(large_fd)``)."""

    bpf: Any
    small_fd: int
    large_fd: int
    small: RingBuffer
    large: RingBuffer

    def lost(self, ring: int) -> int:
        return int(self.bpf[b"lost"][ctypes.c_int(ring)].value)

    def drain(self) -> None:
        self.small.consume(lambda _b: None)
        self.large.consume(lambda _b: None)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    from bcc import BPF

    bpf = BPF(text=PROGRAM.encode(), cflags=[f"-DSMALL_PAGES={SMALL_PAGES}", f"-DLARGE_PAGES={LARGE_PAGES}"])
    small_fd = os.open("/dev/null", os.O_WRONLY)
    large_fd = os.open("/dev/null", os.O_WRONLY)
    conf = bpf[b"cfg"]
    conf[ctypes.c_int(0)] = conf.Leaf(os.getpid(), small_fd, large_fd)
    small = RingBuffer(bpf[b"rb_small"].map_fd, SMALL_PAGES * PAGE)
    large = RingBuffer(bpf[b"rb_large"].map_fd, LARGE_PAGES * PAGE)
    try:
        yield Rig(bpf, small_fd, large_fd, small, large)
    finally:
        small.close()
        large.close()
        os.close(small_fd)
        os.close(large_fd)
        bpf.cleanup()


def _no_fence() -> None:
    """Stands for aarch64's ``dmb ish`` (x86 needs none): runs the two-pass fenced drain here."""


@pytest.fixture(params=["plain", "fenced"])
def fresh(rig: Rig, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The rig drained, its rings read by the plain (x86) drain or by the fenced (aarch64) one."""
    rig.drain()
    fence = _no_fence if request.param == "fenced" else None
    for ring in (rig.small, rig.large):
        ring._fence = fence
    yield rig
    for ring in (rig.small, rig.large):
        ring._fence = None


def payloads(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    # each starts with 'R', never 'D' (the discard marker)
    return [b"R" + rng.randbytes(rng.randint(0, 511)) for _ in range(count)]


def test_every_record_arrives_in_order_with_its_exact_payload(fresh: Rig) -> None:
    sent = payloads(300, seed=1)
    for p in sent:
        os.pwrite(fresh.large_fd, p, 0)
    got: list[bytes] = []
    assert fresh.large.consume(got.append) == 300
    assert got == sent
    assert fresh.large.consumer_pos == fresh.large.producer_pos
    assert fresh.large.consume(got.append) == 0


def test_a_record_that_wraps_past_the_end_is_intact(fresh: Rig) -> None:
    ring = fresh.small
    wrapped = 0
    for i in range(30):
        start = ring.consumer_pos & (ring.size - 1)
        payload = bytes([0x61 + i]) * 200   # a, b, ...: never the discard marker D
        payload += i.to_bytes(4, "little") + bytes(range(256))[: 250 - i] + bytes(40)
        os.write(fresh.small_fd, payload)
        got: list[bytes] = []
        assert ring.consume(got.append) == 1
        assert got == [payload]
        if start + 8 + len(payload) > ring.size:
            wrapped += 1
    assert wrapped >= 2


def test_a_discarded_record_is_skipped(fresh: Rig) -> None:
    before = fresh.large.producer_pos
    for p in (b"first", b"D-discard me please", b"second"):
        os.pwrite(fresh.large_fd, p, 0)
    got: list[bytes] = []
    assert fresh.large.consume(got.append) == 2
    assert got == [b"first", b"second"]
    # the discarded record took its room (8 + 16 bytes) and was read past
    assert fresh.large.producer_pos - before == 16 + 24 + 16
    assert fresh.large.consumer_pos == fresh.large.producer_pos


def test_an_overfull_ring_loses_the_newest_and_the_count_matches(fresh: Rig) -> None:
    ring = fresh.small
    lost_before = fresh.lost(0)
    # 500 bytes + the 8-byte header: 512 a record; the kernel keeps the records
    # in flight below the ring's size, so 7 fit in 4096 bytes, not 8
    fit = (ring.size - 1) // 512
    sent = [bytes([0x30 + i % 40]) * 500 for i in range(20)]
    for p in sent:
        os.write(fresh.small_fd, p)
    got: list[bytes] = []
    assert ring.consume(got.append) == fit
    assert got == sent[:fit]
    assert fresh.lost(0) - lost_before == len(sent) - len(got)
    # caught up: the next records all arrive
    more = [b"after-%d" % i for i in range(5)]
    for p in more:
        os.write(fresh.small_fd, p)
    got.clear()
    assert ring.consume(got.append) == 5
    assert got == more
    assert fresh.lost(0) - lost_before == len(sent) - fit


def test_a_record_whose_sink_raises_is_consumed_and_the_rest_stay(fresh: Rig) -> None:
    for p in (b"one", b"two", b"three"):
        os.pwrite(fresh.large_fd, p, 0)
    seen: list[bytes] = []

    def sink(b: bytes) -> None:
        seen.append(b)
        if b == b"two":
            raise ValueError("broken record")

    with pytest.raises(ValueError, match="broken record"):
        fresh.large.consume(sink)
    assert seen == [b"one", b"two"]
    assert fresh.large.consume(seen.append) == 1
    assert seen == [b"one", b"two", b"three"]


def test_a_concurrent_writer_every_record_read_or_counted_lost(fresh: Rig) -> None:
    lost_before = fresh.lost(1)
    total = 20_000
    done = threading.Event()

    def writer() -> None:
        fd = fresh.large_fd
        for i in range(total):
            os.pwrite(fd, b"S" + i.to_bytes(4, "little") + bytes(i % 100), 0)
        done.set()

    got: list[bytes] = []
    poller: RingPoller[str] = RingPoller()
    poller.add(fresh.large, "large")
    t = threading.Thread(target=writer)
    t.start()
    try:
        while not done.is_set():
            poller.poll(20)
            poller.consume(lambda _tag: got.append)
    finally:
        t.join()
        poller.close()
    fresh.large.consume(got.append)
    seqs = [int.from_bytes(b[1:5], "little") for b in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(len(b) == 5 + seq % 100 for b, seq in zip(got, seqs, strict=True))
    assert len(got) + fresh.lost(1) - lost_before == total


def test_the_poller_routes_each_ring_to_its_tags_sink(fresh: Rig) -> None:
    poller: RingPoller[int] = RingPoller()
    poller.add(fresh.small, 0)
    poller.add(fresh.large, 1)
    try:
        os.write(fresh.small_fd, b"to small")
        os.pwrite(fresh.large_fd, b"to large", 0)
        os.pwrite(fresh.large_fd, b"to large again", 0)
        sinks: dict[int, list[bytes]] = {0: [], 1: []}
        assert poller.poll(1000) is True
        assert poller.consume(lambda tag: sinks[tag].append) == 3
        assert sinks == {0: [b"to small"], 1: [b"to large", b"to large again"]}
    finally:
        poller.close()


def test_a_quiet_poller_times_out(fresh: Rig) -> None:
    poller: RingPoller[str] = RingPoller()
    poller.add(fresh.large, "large")
    try:
        start = time.monotonic()
        assert poller.poll(50) is False
        assert time.monotonic() - start >= 0.045
    finally:
        poller.close()


def _write_later(fd: int, payload: bytes, written: list[float]) -> None:
    time.sleep(0.05)
    written.append(time.perf_counter())
    os.pwrite(fd, payload, 0)


def test_a_lone_record_wakes_the_poller_at_once(fresh: Rig) -> None:
    # the program writes with flags 0: the kernel wakes a consumer that has caught up
    poller: RingPoller[str] = RingPoller()
    poller.add(fresh.large, "large")
    delays: list[float] = []
    try:
        for i in range(7):
            written: list[float] = []
            t = threading.Thread(target=_write_later, args=(fresh.large_fd, b"lone %d" % i, written))
            t.start()
            woke = poller.poll(2000)
            awake = time.perf_counter()
            t.join()
            assert woke, "no wake-up for a lone record"
            got: list[bytes] = []
            poller.consume(lambda _tag, sink=got.append: sink)
            assert got == [b"lone %d" % i]
            delays.append(awake - written[0])
    finally:
        poller.close()
    assert statistics.median(delays) < 0.005, delays


def test_rejects_a_size_that_is_not_a_power_of_two(rig: Rig) -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        RingBuffer(rig.bpf[b"rb_small"].map_fd, 3 * PAGE)


def test_close_unmaps_and_is_idempotent(rig: Rig) -> None:
    ring = RingBuffer(rig.bpf[b"rb_small"].map_fd, SMALL_PAGES * PAGE)
    assert ring.fileno() == rig.bpf[b"rb_small"].map_fd
    ring.close()
    ring.close()
    os.fstat(rig.bpf[b"rb_small"].map_fd)   # the map's fd is the caller's, still open


def test_a_map_that_is_no_ring_buffer_is_named_in_the_error() -> None:
    from edr.sources.ebpf import bpf_syscall as bpf

    fd = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 4)
    try:
        with pytest.raises(OSError, match=f"ring buffer fd {fd}: cannot map its consumer page"):
            RingBuffer(fd, PAGE)
    finally:
        os.close(fd)


def test_a_size_larger_than_the_ring_is_named_in_the_error(rig: Rig) -> None:
    fd = rig.bpf[b"rb_small"].map_fd
    with pytest.raises(OSError, match=f"ring buffer fd {fd}: cannot map {4 * PAGE} bytes of data"):
        RingBuffer(fd, 4 * PAGE)


def test_wake_ends_a_poll_without_a_timeout_from_another_thread() -> None:
    import threading

    poller: RingPoller[str] = RingPoller()
    try:
        timer = threading.Timer(0.1, poller.wake)
        timer.start()
        assert poller.poll(-1) is True   # would block for ever without the wake-up
        timer.join()
        assert poller.poll(0) is False   # the wake-up was taken: the next poll waits again
        poller.wake()                    # a wake-up while nobody polls ends the next poll
        assert poller.poll(-1) is True
    finally:
        poller.close()
    poller.close()  # idempotent
