"""The live sensor: load the compiled programs, poll one ring buffer per family, count losses."""

from __future__ import annotations

import bisect
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from itertools import repeat

from edr.sources.ebpf import bpf_syscall, loader, objcache, objfile
from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.ebpf.host import find_cgroup2_mount
from edr.sources.ebpf.objload import LoadedObject
from edr.sources.ebpf.pacing import BatchPacer
from edr.sources.ebpf.records import FAMILIES, FAMILY_INDEX, NETWORK, RawRecord, record_time
from edr.sources.ebpf.ringbuf import RingBuffer, RingPoller

#: Records stamped this close to a drain's start may still be on their way
#: into their ring (stamped, not yet committed): they wait for the next drain.
HOLD_NS = 2_000_000
log = logging.getLogger(__name__)
_U32 = struct.Struct("<I")
#: a record's kernel stamp, its first 8 bytes (as records.record_time reads it)
_TIME = struct.Struct("<Q")
_U8_ONE = b"\x01"


class EbpfSensor:
    """Kernel telemetry from sensor.c's programs: process, network, file and dns families.

    ``open`` gets the compiled programs from the agent's cache
    (``cache_dir``, see :mod:`edr.sources.ebpf.objcache`) or, when that is
    missing or stale, from a child process that compiles them with bcc, and
    loads them itself through ``bpf()``: this process never imports bcc.

    Blocking; meant to be driven from one worker thread (``poll``), with
    ``statistics`` and ``wake`` safe to call from another.  The pids in ``ignore_pids``
    (default: this process) are filtered in the kernel so the agent does not
    observe itself into a feedback loop.  Kernel-side losses (ring buffer
    full) are counted per family in a BPF array: ring buffers have no lost
    callback, the program counts its failed ``bpf_ringbuf_output`` instead.
    Call ``close`` only once ``poll`` has returned (from the polling thread
    or after joining it): it unmaps the rings ``poll`` reads.

    With the network family, UDP is observed through cgroup socket hooks
    linked to the cgroup v2 root (both ends from the kernel, see sensor.c);
    when they cannot be attached, ``udp_hooks_error`` says why and UDP is
    reported from the syscalls, its source end then read from the live
    process by the decoder.
    """

    def __init__(self, *, families: set[str] | None = None, max_args: int = 32,
                 max_arg_bytes: int = 4096, page_count: int = 64,
                 ignore_pids: set[int] | None = None, batch_window_ms: int = 25, cache_dir: str = "") -> None:
        self.families = frozenset(FAMILIES if families is None else families)
        self._flags = loader.cflags(self.families, max_args, max_arg_bytes, page_count)
        self.cache_dir = cache_dir
        self.ignore_pids: set[int] = {os.getpid()} if ignore_pids is None else set(ignore_pids)
        self._obj: LoadedObject | None = None
        self._poller: RingPoller[str] | None = None
        self._rings: list[RingBuffer] = []
        # each family's payloads as the rings hand them over; RawRecords are built per batch (below)
        self._batches: dict[str, list[bytes]] = {f: [] for f in FAMILIES if f in self.families}
        self._sinks: dict[str, Callable[[bytes], object]] = {f: b.append for f, b in self._batches.items()}
        self._events: dict[str, int] = dict.fromkeys(self.families, 0)
        self._pacer = BatchPacer(max(batch_window_ms, 0) * 1_000_000)
        self._held: list[RawRecord] = []
        self._lost_value_size = 0
        self.udp_hooks_error: str | None = None
        #: whether the last open found the compiled programs in the cache
        self.cache_hit = False

    def open(self) -> None:
        """Check the host, get the compiled programs, load and attach them; raises SensorUnavailable.

        Blocks: milliseconds to load from the cache, seconds when the
        programs must be compiled (in a child process).
        """
        if self._obj is not None:
            return
        started = time.monotonic()
        loader.preflight()
        compiled, self.cache_hit = objcache.compiled_object(self._flags, self.cache_dir)
        try:
            self._load(compiled)
        except SensorUnavailable as exc:
            if not self.cache_hit:
                raise
            # same key, yet the kernel refused it: rebuild it rather than trust the file again
            log.warning("the kernel refused the cached build of the sensor in %s (%s); compiling it again",
                        self.cache_dir, exc)
            compiled, self.cache_hit = objcache.compiled_object(self._flags, self.cache_dir, refresh=True)
            self._load(compiled)
        log.info("ebpf: %d programs loaded and attached in %.2f s (%s)", len(compiled.programs),
                 time.monotonic() - started,
                 "cached build" if self.cache_hit else "compiled in a child process")

    def _load(self, compiled: objfile.CompiledObject) -> None:
        obj = LoadedObject(compiled)
        poller: RingPoller[str] = RingPoller()
        try:
            try:
                obj.create_maps()
                ignored = obj.maps["ignored"]
                for pid in self.ignore_pids:
                    bpf_syscall.map_update(ignored, _U32.pack(pid), _U8_ONE)
                obj.attach_tracepoints()
            except (SensorUnavailable, OSError) as exc:
                # the words `edr run` has always used for a sensor the kernel will not take
                raise SensorUnavailable(f"the BPF programs failed to compile or load ({exc})") from exc
            for fam in self.families:
                name = f"rb_{fam}"
                ring = RingBuffer(obj.maps[name], compiled.map(name).max_entries)
                self._rings.append(ring)
                poller.add(ring, fam)
            if NETWORK in self.families:
                self._attach_udp_hooks(obj)
        except BaseException:
            self._close_rings()
            poller.close()
            obj.close()
            raise
        lost = compiled.map("lost")
        self._lost_value_size = bpf_syscall.percpu_value_size(lost.value_size)
        self._obj, self._poller = obj, poller

    def _attach_udp_hooks(self, obj: LoadedObject) -> None:
        try:
            obj.links.extend(loader.attach_cgroup_hooks(obj.load_program, find_cgroup2_mount()))
        except SensorUnavailable as exc:
            self.udp_hooks_error = str(exc)
            return
        # from now on the syscall programs leave UDP to the hooks
        bpf_syscall.map_update(obj.maps["net_cfg"], _U32.pack(0), _U32.pack(1))

    def _close_rings(self) -> None:
        rings, self._rings = self._rings, []
        for ring in rings:
            ring.close()

    def ignore(self, pids: Iterable[int]) -> None:
        """Filter more pids in the kernel (e.g. helper processes the agent starts)."""
        for pid in pids:
            self.ignore_pids.add(pid)
            if self._obj is not None:
                bpf_syscall.map_update(self._obj.maps["ignored"], _U32.pack(pid), _U8_ONE)

    def wake(self) -> None:
        """Make a :meth:`poll` under way return at once, or else the next one (from any thread; a no-op once
        closed): how a poll waiting without a timeout is ended for shutdown."""
        poller = self._poller
        if poller is not None:
            poller.wake()

    def _opened(self) -> RingPoller[str]:
        poller = self._poller
        if poller is None:
            raise RuntimeError("EbpfSensor used before open")
        return poller

    def wait_ns(self) -> int | None:
        """How long the next wait for a wake-up may last: None for as long as it takes, 0 or more when records
        held back by the last drain become due (they go out once the hold has passed since their stamp)."""
        held = self._held
        if not held:
            return None
        # the earliest held record goes out once the hold has passed since its stamp, not a whole
        # hold after the next poll began (a lone exec held by one drain lost ~5 ms that way)
        return max(0, record_time(held[0]) + HOLD_NS - time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    def collect(self) -> int:
        """Take what the rings hold (never blocks); how long (ns) to let them fill before :meth:`drain`.

        The kernel wakes the poller for the first record written into a
        drained ring (adaptive wake-ups, sensor.c), so a lone record is seen
        at once. While records keep coming, the rings fill for one window
        and one larger batch goes over (at most 1/window batches a second);
        on a quiet host the pause is short (see :mod:`edr.sources.ebpf.pacing`),
        at least until the earliest record's hold has passed.
        """
        self._opened().consume(self._sinks.__getitem__)
        firsts = [batch[0] for batch in self._batches.values() if batch]
        if not firsts:
            return 0
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        # The drain hands over only what was stamped a hold before it: the pause also lets the earliest
        # record's hold pass (at most one hold), so that a lone burst goes in one drain, not in a drain that
        # holds it back and a second one a millisecond later (a wake-up and a drain saved per quiet burst).
        earliest = min(_TIME.unpack_from(data)[0] if len(data) >= 8 else 0 for data in firsts)
        return max(self._pacer.pause_ns(now), min(earliest + HOLD_NS - now, HOLD_NS))

    def drain(self) -> list[RawRecord]:
        """The records due now, in kernel time order across families (never blocks).

        The rings are drained one after the other, so a record stamped after
        the drain began may be missing from a ring drained earlier while a
        later record of another ring is here (an exec in the process ring, the
        file its program then writes in the file ring). Only records stamped
        before the drain began go out now; the others are held (see
        :meth:`wait_ns`) and merged into the next batch.
        """
        cut = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - HOLD_NS
        self._opened().consume(self._sinks.__getitem__)
        out = self._merge()
        ready = bisect.bisect_right(out, cut, key=record_time)
        self._held = out[ready:]
        del out[ready:]
        self._pacer.drained(cut + HOLD_NS, len(out) + len(self._held))
        return out

    def _merge(self) -> list[RawRecord]:
        """The held records and those collected since, as one list in kernel time order."""
        out: list[RawRecord] = self._held
        self._held = []
        for fam, batch in self._batches.items():
            if batch:
                self._events[fam] += len(batch)
                # one map over the batch: the hot path, no Python-level call per record
                out.extend(map(RawRecord, repeat(fam, len(batch)), batch))
                batch.clear()
        out.sort(key=record_time)
        return out

    def poll(self, timeout_ms: int) -> list[RawRecord]:
        """Wait up to ``timeout_ms`` (negative: without limit) for records, then drain every family's buffer.

        Blocks: meant for a worker thread's loop; :meth:`wake` ends the wait
        from another thread. :meth:`wait_ns`, :meth:`collect` and
        :meth:`drain` with the waits in this thread: ``wait_ns`` shortens
        the wait when held records fall due, the pause :meth:`collect` asks
        for is slept here.
        """
        poller = self._opened()
        wait_ms = timeout_ms
        due_ns = self.wait_ns()
        if due_ns is not None:
            due_ms = -(-due_ns // 1_000_000)
            wait_ms = due_ms if wait_ms < 0 else min(wait_ms, due_ms)
        poller.poll(wait_ms)
        pause = self.collect()
        if pause:
            time.sleep(pause / 1e9)
        return self.drain()

    def held(self) -> list[RawRecord]:
        """Take the records not handed over yet, in kernel time order (at shutdown, after the last drain):
        those the last drain held back and those collected by a :meth:`collect` no :meth:`drain` followed."""
        return self._merge()

    def statistics(self) -> dict[str, dict[str, int]]:
        """Per family: records received (``events``) and records the kernel could not queue (``lost``)."""
        lost = dict.fromkeys(self.families, 0)
        obj = self._obj
        if obj is not None:
            fd, size = obj.maps["lost"], self._lost_value_size
            for fam in self.families:
                value = bpf_syscall.map_lookup(fd, _U32.pack(FAMILY_INDEX[fam]), size)
                if value:
                    # one u64 per possible CPU
                    lost[fam] = sum(struct.unpack(f"<{size // 8}Q", value))
        return {fam: {"events": self._events[fam], "lost": lost[fam]} for fam in self.families}

    def close(self) -> None:
        """Detach the programs and free the maps and rings (a tenth of a second).

        The BPF links are closed first, concurrently, so no program of ours
        runs any more when this returns (see
        :meth:`edr.sources.ebpf.objload.LoadedObject.close`).
        """
        obj, self._obj = self._obj, None
        poller, self._poller = self._poller, None
        if obj is not None:
            obj.close()
        if poller is not None:
            poller.close()
        self._close_rings()

    def __enter__(self) -> EbpfSensor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
