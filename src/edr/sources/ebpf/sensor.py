"""The live sensor: load the programs, poll one ring buffer per family, count losses."""

from __future__ import annotations

import bisect
import ctypes
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edr.sources.ebpf import loader
from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.ebpf.host import find_cgroup2_mount
from edr.sources.ebpf.pacing import BatchPacer
from edr.sources.ebpf.records import FAMILIES, FAMILY_INDEX, NETWORK, RawRecord, record_time

#: Records stamped this close to a drain's start may still be on their way
#: into their ring (stamped, not yet committed): they wait for the next drain.
HOLD_NS = 2_000_000


class EbpfSensor:
    """Kernel telemetry through bcc: process, network, file and dns families.

    Blocking; meant to be driven from one worker thread (``poll``), with
    ``statistics`` safe to call from another.  The pids in ``ignore_pids``
    (default: this process) are filtered in the kernel so the agent does not
    observe itself into a feedback loop.  Kernel-side losses (ring buffer
    full) are counted per family in a BPF array: ring buffers have no lost
    callback, the program counts its failed ``bpf_ringbuf_output`` instead.
    Call ``close`` only once ``poll`` has returned (from the polling thread
    or after joining it): bcc frees the rings ``poll`` reads.

    With the network family, UDP is observed through cgroup socket hooks
    linked to the cgroup v2 root (both ends from the kernel, see sensor.c);
    when they cannot be attached, ``udp_hooks_error`` says why and UDP is
    reported from the syscalls, its source end then read from the live
    process by the decoder.
    """

    def __init__(self, *, families: set[str] | None = None, max_args: int = 32,
                 max_arg_bytes: int = 4096, page_count: int = 64,
                 ignore_pids: set[int] | None = None, batch_window_ms: int = 25) -> None:
        self.families = frozenset(FAMILIES if families is None else families)
        self._flags = loader.cflags(self.families, max_args, max_arg_bytes, page_count)
        self.ignore_pids: set[int] = {os.getpid()} if ignore_pids is None else set(ignore_pids)
        self._bpf: Any = None
        self._batches: dict[str, list[RawRecord]] = {f: [] for f in FAMILIES if f in self.families}
        self._events: dict[str, int] = dict.fromkeys(self.families, 0)
        self._callbacks: list[Callable[[Any, int, int], int]] = []
        self._window = max(batch_window_ms, 0) / 1000
        self._pacer = BatchPacer(max(batch_window_ms, 0) * 1_000_000)
        self._held: list[RawRecord] = []
        self._links: list[int] = []
        self.udp_hooks_error: str | None = None

    def open(self) -> None:
        """Check the host, compile and attach the programs; raises SensorUnavailable."""
        if self._bpf is not None:
            return
        bcc = loader.preflight()
        bpf = loader.compile_programs(bcc, self._flags)
        try:
            ignored = bpf[b"ignored"]
            for pid in self.ignore_pids:
                ignored[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
            for fam in self.families:
                bpf[f"rb_{fam}".encode()].open_ring_buffer(self._callback(fam))
            if NETWORK in self.families:
                self._attach_udp_hooks(bcc, bpf)
        except Exception:
            self._close_links()
            bpf.cleanup()
            raise
        self._bpf = bpf

    def _attach_udp_hooks(self, bcc: Any, bpf: Any) -> None:
        try:
            self._links = loader.attach_cgroup_hooks(bcc, bpf, find_cgroup2_mount())
        except SensorUnavailable as exc:
            self.udp_hooks_error = str(exc)
            return
        # from now on the syscall programs leave UDP to the hooks
        bpf[b"net_cfg"][ctypes.c_int(0)] = ctypes.c_uint32(1)

    def _close_links(self) -> None:
        links, self._links = self._links, []
        for fd in links:
            os.close(fd)

    def _callback(self, family: str) -> Callable[[Any, int, int], int]:
        append = self._batches[family].append
        string_at = ctypes.string_at

        # the hot path: one call per record, so keep it to a copy and an append
        def on_record(_ctx: Any, data: int, size: int) -> int:
            append(RawRecord(family, string_at(data, size)))
            return 0

        self._callbacks.append(on_record)
        return on_record

    def ignore(self, pids: Iterable[int]) -> None:
        """Filter more pids in the kernel (e.g. helper processes the agent starts)."""
        for pid in pids:
            self.ignore_pids.add(pid)
            if self._bpf is not None:
                self._bpf[b"ignored"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def poll(self, timeout_ms: int) -> list[RawRecord]:
        """Wait up to ``timeout_ms`` for records, then drain every family's buffer."""
        bpf = self._bpf
        if bpf is None:
            raise RuntimeError("EbpfSensor.poll before open")
        # The kernel wakes us for the first record written into a drained
        # ring (adaptive wake-ups, sensor.c), so a lone record is seen at once;
        # records held back by the last drain are due once the hold has passed.
        held = self._held
        wait_ms = max(timeout_ms, 0)
        if held:
            wait_ms = min(wait_ms, HOLD_NS // 1_000_000 + 1)
        bpf.ring_buffer_poll(wait_ms)
        batches = self._batches.values()
        if any(batches):
            # While records keep coming, let the rings fill for one window and hand
            # over one larger batch (at most 1/window batches per second); on a quiet
            # host, go at once (see edr.sources.ebpf.pacing).
            pause = self._pacer.pause_ns(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
            if pause:
                time.sleep(pause / 1e9)
        # The rings are drained one after the other, so a record stamped after
        # the drain began may be missing from a ring drained earlier while a
        # later record of another ring is here (an exec in the process ring, the
        # file its program then writes in the file ring).  Only records stamped
        # before the drain began go out now; the others are merged into the
        # next batch, so every batch is in kernel time order across families.
        cut = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - HOLD_NS
        bpf.ring_buffer_consume()
        out: list[RawRecord] = held
        for fam, batch in self._batches.items():
            if batch:
                self._events[fam] += len(batch)
                out.extend(batch)
                batch.clear()
        out.sort(key=record_time)
        ready = bisect.bisect_right(out, cut, key=record_time)
        self._held = out[ready:]
        del out[ready:]
        self._pacer.drained(cut + HOLD_NS, len(out) + len(self._held))
        return out

    def held(self) -> list[RawRecord]:
        """Take the records the last poll held back (at shutdown, after the last poll)."""
        out, self._held = self._held, []
        return out

    def statistics(self) -> dict[str, dict[str, int]]:
        """Per family: records received (``events``) and records the kernel could not queue (``lost``)."""
        lost = dict.fromkeys(self.families, 0)
        if self._bpf is not None:
            table = self._bpf[b"lost"]
            for fam in self.families:
                lost[fam] = int(sum(table[ctypes.c_int(FAMILY_INDEX[fam])]))
        return {fam: {"events": self._events[fam], "lost": lost[fam]} for fam in self.families}

    def close(self) -> None:
        """Detach the programs and free the maps."""
        bpf = self._bpf
        if bpf is not None:
            # closing a link detaches its cgroup hook
            self._close_links()
            # Each detach waits for the kernel to retire the tracepoint (~70 ms
            # here, ~80 of them): done one by one that is seconds of shutdown.
            # bcc's detach is a ctypes call that releases the GIL, so detaching
            # concurrently overlaps those waits; cleanup() then frees the rest.
            points = list(getattr(bpf, "tracepoint_fds", {}))
            if points:
                with ThreadPoolExecutor(max_workers=min(32, len(points))) as pool:
                    list(pool.map(bpf.detach_tracepoint, points))
            bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> EbpfSensor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
