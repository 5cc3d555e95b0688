"""BPF ring buffer consumers over ``mmap``: no bcc, no libbpf.

A ring buffer map (``BPF_MAP_TYPE_RINGBUF``) is shared with user space as
three mappings of the map's fd:

* offset 0, one page, read-write: the consumer page, whose first 8 bytes
  are ``consumer_pos``, the position up to which user space has read;
* offset one page, read-only: the producer page (``producer_pos``, where
  the next record will be reserved) followed by the data area, which the
  kernel maps twice in a row, so a record that wraps past the end of the
  ring is still contiguous in memory.

Positions only grow; ``pos & (size - 1)`` is the offset in the data area.
Each record starts with an 8-byte header: a u32 length whose bit 31 (BUSY)
is set while the record is reserved but not yet committed and bit 30
(DISCARD) when the program discarded it, and a u32 page offset the kernel
uses to find the ring from the record.  Records are 8-byte aligned.  This
is ``kernel/bpf/ringbuf.c`` and libbpf's ``ringbuf_process_ring``, in Python.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import platform
import select
from collections.abc import Callable
from typing import Generic, TypeVar

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
_LEN_MASK = DISCARD_BIT - 1
_FLAGS = BUSY_BIT | DISCARD_BIT

T = TypeVar("T")

# Memory ordering.  The kernel publishes a record in three steps: it reserves
# it (header with BUSY set, then producer_pos moved on with a release store),
# writes the payload, then clears BUSY with an xchg (a full barrier).  The
# consumer must read producer_pos before the headers, and a header before
# its payload (acquire), and must be done with the payloads before it moves
# consumer_pos on, after which the kernel may overwrite them (release).
#
# On x86-64 (TSO) loads are not reordered with other loads, nor stores with
# earlier loads, so the plain loads and stores Python makes (memoryview
# items: single aligned 4- and 8-byte accesses) already have acquire and
# release semantics, and the interpreter's opaque calls between them keep
# the C compiler from reordering anything.  aarch64 reorders loads, so there
# each stretch of records is read in two passes with a ``dmb ish`` (a
# two-instruction function mapped executable through ctypes, _arm64_fence)
# after reading producer_pos, one between the headers and the payloads, and
# one before storing consumer_pos: three fences a stretch, not per record.
_MACHINE = platform.machine().lower()


def _arm64_fence() -> Callable[[], None]:
    """A C function doing ``dmb ish; ret``, callable through ctypes (aarch64 only)."""
    import ctypes

    code = (0xD5033BBF).to_bytes(4, "little") + (0xD65F03C0).to_bytes(4, "little")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    buf = (ctypes.c_char * len(code)).from_buffer(page)
    fence = ctypes.CFUNCTYPE(None)(ctypes.addressof(buf))
    # the page must outlive the function: keep it on the function object
    fence._page = page  # type: ignore[attr-defined]
    fence._buf = buf  # type: ignore[attr-defined]
    return fence


def _fence_for(machine: str) -> Callable[[], None] | None:
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return None
    if machine in ("aarch64", "arm64"):
        return _arm64_fence()
    raise OSError(f"BPF ring buffers: no memory fence known for the {machine} machine")


class RingBuffer:
    """One BPF ring buffer map, read through ``mmap``.

    ``map_fd`` stays the caller's (it is not closed here); ``size`` is the
    map's ``max_entries``, its data size in bytes (a power of two).  Not
    thread-safe: one consumer at a time, as the kernel expects.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer fd {map_fd}: size {size} is not a power of two")
        self._fd = map_fd
        self.size = size
        self._mask = size - 1
        page = mmap.PAGESIZE
        try:
            self._consumer_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise OSError(exc.errno, f"ring buffer fd {map_fd}: cannot map its consumer page "
                                     f"(is it a BPF ring buffer map?): {exc.strerror}") from None
        try:
            self._producer_map = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                           offset=page)
        except OSError as exc:
            self._consumer_map.close()
            raise OSError(exc.errno, f"ring buffer fd {map_fd}: cannot map {size} bytes of data "
                                     f"(is that the map's size?): {exc.strerror}") from None
        self._consumer = memoryview(self._consumer_map).cast("Q")
        self._producer = memoryview(self._producer_map).cast("Q")
        # the data area (twice over) as u32 words, for the headers
        self._words = memoryview(self._producer_map)[page:].cast("I")
        self._data_offset = page
        self._fence = _fence_for(_MACHINE)

    def fileno(self) -> int:
        """The map's fd (for ``select``/``epoll``: readable when records wait)."""
        return self._fd

    @property
    def consumer_pos(self) -> int:
        """Where the consumer is (bytes since the ring was created)."""
        return int(self._consumer[0])

    @property
    def producer_pos(self) -> int:
        """Where the next record will be reserved."""
        return int(self._producer[0])

    def pending(self) -> int:
        """Bytes reserved in the ring and not consumed yet (headers and padding included)."""
        return int(self._producer[0]) - int(self._consumer[0])

    def consume(self, sink: Callable[[bytes], object]) -> int:
        """Hand every committed record's payload to ``sink``, oldest first; how many.

        Discarded records are skipped; the first record still being written
        (BUSY) ends the call, as its followers, even committed, must wait
        for it.  The space read is given back to the kernel every quarter
        ring and at the end, so a burst larger than the ring keeps flowing
        while it is read.  When ``sink`` raises, its record counts as
        consumed (a record that breaks the sink is not handed again) and the
        exception propagates.  Never blocks.
        """
        consumer = self._consumer
        producer = self._producer
        drain = self._drain_plain if self._fence is None else self._drain_fenced
        quarter = self.size >> 2
        total = 0
        pos = int(consumer[0])
        # After each store of consumer_pos, producer_pos is read again (as
        # libbpf does): a record committed while the kernel still saw the old
        # consumer_pos got no wake-up, so it must be read now.
        while True:
            prod = int(producer[0])
            if pos >= prod:
                return total
            # at most a quarter ring between two stores of consumer_pos
            got, pos, busy = drain(sink, pos, min(prod, pos + quarter))
            total += got
            if busy:
                return total

    def _drain_plain(self, sink: Callable[[bytes], object], pos: int, limit: int) -> tuple[int, int, bool]:
        """Records from ``pos`` to ``limit`` on a machine that keeps loads and stores in order (x86).

        Returns how many went to ``sink``, the new position (stored in
        consumer_pos, also when ``sink`` raises), and whether a busy
        record stopped the walk.
        """
        words = self._words
        data = self._producer_map
        base = self._data_offset + HEADER_SIZE
        mask = self._mask
        count = 0
        busy = False
        try:
            while pos < limit:
                off = pos & mask
                length = words[off >> 2]
                if length & _FLAGS:
                    if length & BUSY_BIT:
                        busy = True
                        break
                    pos += ((length & _LEN_MASK) + HEADER_SIZE + 7) & ~7   # discarded
                    continue
                start = base + off
                pos += (length + HEADER_SIZE + 7) & ~7
                count += 1
                sink(data[start:start + length])
        finally:
            self._consumer[0] = pos
        return count, pos, busy

    def _drain_fenced(self, sink: Callable[[bytes], object], pos: int, limit: int) -> tuple[int, int, bool]:
        """:meth:`_drain_plain` for machines that reorder loads: headers first, then one fence, then payloads."""
        fence = self._fence
        assert fence is not None
        words = self._words
        data = self._producer_map
        base = self._data_offset + HEADER_SIZE
        mask = self._mask
        busy = False
        ready: list[tuple[int, int, int]] = []   # start, length, position after it
        fence()   # producer_pos (read by the caller) before the headers
        while pos < limit:
            off = pos & mask
            length = words[off >> 2]
            if length & BUSY_BIT:
                busy = True
                break
            pos += ((length & _LEN_MASK) + HEADER_SIZE + 7) & ~7
            if not length & DISCARD_BIT:
                ready.append((base + off, length, pos))
        fence()   # the committed headers before their payloads
        count = 0
        try:
            for start, length, _after in ready:
                count += 1
                sink(data[start:start + length])
        finally:
            fence()   # done reading the payloads before the kernel may reuse their room
            # when the sink raised, the records after the one it raised on stay
            self._consumer[0] = pos if count == len(ready) else ready[count - 1][2]
        return count, pos, busy

    def close(self) -> None:
        """Unmap the ring (the map's fd stays open); idempotent."""
        if self._consumer_map.closed:
            return
        self._consumer.release()
        self._producer.release()
        self._words.release()
        self._consumer_map.close()
        self._producer_map.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RingPoller(Generic[T]):
    """Several ring buffers behind one ``epoll``, each known by a tag.

    The kernel's wake-ups are adaptive when the programs output with flags 0
    (as sensor.c does): a record wakes the poller only when it is written
    where the consumer stands, i.e. into a ring the consumer has caught up
    with.  So a lone record on a quiet host wakes ``poll`` at once, while a
    burst costs one wake-up, not one per record.  Because of that, after a
    wake-up every ring is drained, not only the one that woke the poller.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        # written by wake() from any thread: the poll under way (or the next) returns at once
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._rings: list[tuple[RingBuffer, T]] = []

    def add(self, ring: RingBuffer, tag: T) -> None:
        """Watch ``ring``; its records will go to the sink of ``tag``."""
        self._epoll.register(ring.fileno(), select.EPOLLIN)
        self._rings.append((ring, tag))

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` (negative: without limit) for a wake-up; whether one came.

        Blocks the calling thread in ``epoll_wait`` (with the GIL released);
        :meth:`wake` (from another thread) or a signal handler that raises
        interrupts it.
        """
        events = self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
        for fd, _mask in events:
            if fd == self._wake_fd:
                with contextlib.suppress(BlockingIOError):  # another poll took it
                    os.eventfd_read(self._wake_fd)
        return bool(events)

    def wake(self) -> None:
        """Make the poll under way, or else the next one, return at once (thread-safe; the fd stays open
        until :meth:`close`)."""
        os.eventfd_write(self._wake_fd, 1)

    def consume(self, sink_for_tag: Callable[[T], Callable[[bytes], object]]) -> int:
        """Drain every ring into the sink ``sink_for_tag`` gives for its tag; how many records."""
        return sum(ring.consume(sink_for_tag(tag)) for ring, tag in self._rings)

    def fileno(self) -> int:
        """The epoll fd (readable when a ring woke it), to nest in another loop."""
        return self._epoll.fileno()

    def close(self) -> None:
        """Close the epoll fd and the wake-up eventfd (the rings stay open: their owners close them); idempotent."""
        if self._epoll.closed:
            return
        self._epoll.close()
        os.close(self._wake_fd)
