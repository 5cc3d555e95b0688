#!/usr/bin/env python3
"""Records/s of draining a BPF ring buffer: bcc's ``ring_buffer_consume`` against ``edr.sources.ebpf.ringbuf``.

A real program on ``sys_enter_pwrite64`` fills a real ring: each ``pwrite``
of this process to /dev/null becomes ``offset`` records (up to 256) of the
written bytes, so a few hundred system calls queue tens of thousands of
records.  The ring is filled, then drained by one consumer while its CPU
time is measured (``time.thread_time``: the drain is one thread and makes
no system call, so other tenants' load barely shows in it, unlike wall
time); fills and drains alternate between the consumers, round after round.

The consumers, each building what EbpfSensor batches, a RawRecord:

* ``bcc``: today's path (EbpfSensor._callback): libbpf's ring_buffer__consume
  calls a ctypes callback per record, which copies it with ctypes.string_at;
* ``ringbuf``: RingBuffer.consume with a sink building the RawRecord;
* ``ringbuf+map``: RingBuffer.consume into list.append, then the RawRecords
  built in one ``map`` over the payloads;
* ``ringbuf-bytes``: RingBuffer.consume straight into list.append (the floor).

    sudo python scripts/bench_ringbuf.py [--records 60000] [--size 64,256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from edr.sources.ebpf.records import RawRecord
from edr.sources.ebpf.ringbuf import RingBuffer

RING_PAGES = 8192   # 32 MiB
MAX_PAYLOAD = 512

PROGRAM = r"""
struct blob { char b[MAX_PAYLOAD]; };
BPF_RINGBUF_OUTPUT(rb, RING_PAGES);
BPF_ARRAY(cfg, u32, 2);
BPF_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(scratch, struct blob, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_pwrite64) {
    int zero = 0, one = 1;
    u32 *pid = cfg.lookup(&zero), *fd = cfg.lookup(&one);
    if (!pid || !fd || bpf_get_current_pid_tgid() >> 32 != *pid || args->fd != *fd)
        return 0;
    struct blob *sb = scratch.lookup(&zero);
    if (!sb)
        return 0;
    u64 n = args->count;
    if (n == 0 || n > MAX_PAYLOAD)
        return 0;
    char *buf = sb->b;
    if (bpf_probe_read_user(buf, n, args->buf))
        return 0;
    u64 reps = args->pos;
    for (int i = 0; i < 256; i++) {
        if (i >= reps)
            break;
        // no per-path state (a failure counter) here: the verifier could not prune
        if (rb.ringbuf_output(buf, n, 0)) {
            u64 *l = lost.lookup(&zero);
            if (l)
                __sync_fetch_and_add(l, 1);
        }
    }
    return 0;
}
"""


class Rig:
    """The program, its ring and the /dev/null fd whose pwrites become records."""

    def __init__(self) -> None:
        from bcc import BPF

        self.bpf: Any = BPF(text=PROGRAM.encode(), cflags=[f"-DRING_PAGES={RING_PAGES}",
                                                          f"-DMAX_PAYLOAD={MAX_PAYLOAD}"])
        self.fd = os.open("/dev/null", os.O_WRONLY)
        cfg = self.bpf[b"cfg"]
        cfg[ctypes.c_int(0)] = ctypes.c_uint32(os.getpid())
        cfg[ctypes.c_int(1)] = ctypes.c_uint32(self.fd)
        self.size = RING_PAGES * os.sysconf("SC_PAGE_SIZE")
        self.ring = RingBuffer(self.bpf[b"rb"].map_fd, self.size)
        self.bcc_batch: list[RawRecord] = []
        append = self.bcc_batch.append
        string_at = ctypes.string_at

        # EbpfSensor._callback, as it is
        def on_record(_ctx: Any, data: int, size: int) -> int:
            append(RawRecord("process", string_at(data, size)))
            return 0

        self.bpf[b"rb"].open_ring_buffer(on_record)

    def lost(self) -> int:
        return int(self.bpf[b"lost"][ctypes.c_int(0)].value)

    def fill(self, records: int, payload: bytes) -> None:
        left = records
        while left:
            reps = min(left, 256)
            os.pwrite(self.fd, payload, reps)
            left -= reps

    def close(self) -> None:
        self.ring.close()
        os.close(self.fd)
        self.bpf.cleanup()


def drain_bcc(rig: Rig) -> int:
    rig.bpf.ring_buffer_consume()
    n = len(rig.bcc_batch)
    rig.bcc_batch.clear()
    return n


def drain_ringbuf(rig: Rig) -> int:
    batch: list[RawRecord] = []
    append = batch.append
    n = rig.ring.consume(lambda data: append(RawRecord("process", data)))
    assert n == len(batch)
    return n


def drain_ringbuf_then_wrap(rig: Rig) -> int:
    payloads: list[bytes] = []
    rig.ring.consume(payloads.append)
    batch = list(map(RawRecord, repeat("process", len(payloads)), payloads))
    return len(batch)


def drain_ringbuf_bytes(rig: Rig) -> int:
    batch: list[bytes] = []
    return rig.ring.consume(batch.append)


CONSUMERS: dict[str, Callable[[Rig], int]] = {
    "bcc": drain_bcc, "ringbuf": drain_ringbuf, "ringbuf+map": drain_ringbuf_then_wrap,
    "ringbuf-bytes": drain_ringbuf_bytes,
}


def check_same_records(rig: Rig, payload: bytes) -> None:
    """Both consumers hand over the same bytes (else the comparison means nothing)."""
    rig.fill(300, payload)
    rig.bpf.ring_buffer_consume()
    theirs = [r.data for r in rig.bcc_batch]
    rig.bcc_batch.clear()
    rig.fill(300, payload)
    ours: list[bytes] = []
    rig.ring.consume(ours.append)
    if theirs != ours or len(ours) != 300:
        raise SystemExit(f"consumers disagree: bcc {len(theirs)} records, ringbuf {len(ours)}")


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000, help="records per fill (default 60000)")
    parser.add_argument("--size", default="64,256", help="payload sizes in bytes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_ringbuf loads a BPF program: run it as root")
    rig = Rig()
    try:
        print(f"load average {loadavg()}; ring {rig.size >> 20} MiB; "
              f"{args.records:,} records per fill, {args.rounds} rounds, median of CPU-time rates")
        for size in (int(s) for s in args.size.split(",")):
            payload = (bytes(range(256)) * (size // 256 + 1))[:size]
            if (size + 8 + 7) // 8 * 8 * args.records >= rig.size:
                raise SystemExit(f"{args.records:,} records of {size} bytes do not fit in the ring")
            check_same_records(rig, payload)
            rates: dict[str, list[float]] = {name: [] for name in CONSUMERS}
            lost = rig.lost()
            for _ in range(args.rounds):
                for name, drain in CONSUMERS.items():
                    rig.fill(args.records, payload)
                    cpu = time.thread_time()
                    got = drain(rig)
                    cpu = time.thread_time() - cpu
                    if got != args.records:
                        raise SystemExit(f"{name}: drained {got:,} of {args.records:,} records")
                    rates[name].append(got / cpu)
            if rig.lost() != lost:
                raise SystemExit(f"the ring lost {rig.lost() - lost} records: make --records smaller")
            base = statistics.median(rates["bcc"])
            for name, values in rates.items():
                med = statistics.median(values)
                print(f"  {size:4d} B  {name:14s} {med:12,.0f} records/s  ({med / base:4.2f}x bcc; "
                      f"{1e9 / med:5.0f} ns/record; runs {', '.join(f'{v:,.0f}' for v in values)})")
        print(f"load average {loadavg()}")
    finally:
        rig.close()


if __name__ == "__main__":
    main()
