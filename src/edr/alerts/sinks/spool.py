"""A sink's disk spool: an append-only, crash-safe queue of records, bounded in bytes.

Layout of a spool directory (a :class:`~edr.platform.private_files.PrivateDir`: 0700, files 0600,
nothing followed through a link)::

    00000000000000000000.seg    segments: frames (edr.alerts.sinks.spool_frames), named by the
    00000000000004194432.seg    offset of their first byte in the spool's byte stream
    ack                         the offset up to which records were delivered, as decimal text
    lock                        flock(2)ed by the one process using the spool

**Offsets.** Every byte ever appended has an offset in one stream that runs
across segments; a segment's name is the offset of its first byte. A record
is delivered once the *ack offset* has passed its end. The ack file is
replaced atomically (a new file, fsync, rename), at most every
``ack_interval`` seconds and when the spool closes, so a crash redelivers at
most that much: delivery is *at least once*, and receivers deduplicate by
the alert's id (``event.id``).

**Crash safety.** Appends are whole batches, one ``write`` each. A process
killed in the middle of one (or a power cut) leaves at most a torn frame at
the end of the segment it was writing; a new run never appends to an old
segment (it starts a new one), so that frame is never merged with anything:
:func:`~edr.alerts.sinks.spool_frames.scan` skips it, and it is counted
(``torn_bytes``) and logged. A damaged region inside a segment (bit rot,
someone's editor) is skipped the same way, counted as ``corrupt_bytes``; the
records after it are delivered. Nothing is fsynced but the ack file: a record
survives the death of the process (kill -9) as soon as ``append`` returned,
and a power cut like the alert file does.

**Bound.** Records not yet delivered may take ``max_bytes`` (frames
included); what does not fit is refused and counted (``full``), never waited
for. Delivered segments are removed as soon as the ack offset passes their
end, so the directory holds at most ``max_bytes`` plus the part of the
segment being written that was delivered already.

Blocking I/O: the sink actor calls every method from a worker thread. The
methods take a lock, so intake and delivery may call them from two threads.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from edr.alerts.sinks.spool_frames import HEADER_SIZE, frame, scan
from edr.platform import current
from edr.platform.private_files import PrivateDir

ACK_NAME: Final = "ack"
LOCK_NAME: Final = "lock"
_SEGMENT: Final = re.compile(r"^(\d{20})\.seg$")
#: Bytes read per step when a segment is scanned at start or read for delivery.
_READ_STEP: Final = 1 << 20

_log = logging.getLogger("edr.sinks")


def segment_name(start: int) -> str:
    """The file name of the segment whose first byte has offset ``start``."""
    return f"{start:020d}.seg"


def default_segment_bytes(max_bytes: int) -> int:
    """A segment size for a spool of ``max_bytes``: an eighth of it, between 64 KiB and 4 MiB."""
    return max(64 << 10, min(4 << 20, max_bytes // 8))


class SpoolBusy(OSError):
    """Another process (or another spool object of this one) holds the spool's lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EBUSY, f"spool {path} is in use by another edr process (its {LOCK_NAME} file is "
                                      "locked); a spool serves one process at a time")
        self.path = path


@attrs.frozen
class Batch:
    """Records read from the spool: their payloads, and the offsets around them.

    ``end`` is what :meth:`Spool.ack` takes once they are delivered; ``start``
    is the first record's offset (after any damaged bytes that were skipped).
    """

    payloads: list[bytes]
    start: int
    end: int

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def size(self) -> int:
        """Payload bytes."""
        return sum(len(p) for p in self.payloads)


@attrs.frozen
class Appended:
    """What :meth:`Spool.append` did: ``accepted`` records stored, ``full`` refused for want of room."""

    accepted: int
    full: int


@attrs.define
class _Segment:
    start: int
    size: int
    name: str
    fd: int | None = None  # open for reading (or, the active one, for appending and reading)

    @property
    def end(self) -> int:
        return self.start + self.size


class Spool:
    """One sink destination's queue on disk (see the module's notes).

    ``clock`` (monotonic seconds) paces the ack file's writes. Call
    :meth:`open` before anything else and :meth:`close` at the end; both,
    like every method, do blocking I/O.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int, segment_bytes: int | None = None,
                 ack_interval: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < HEADER_SIZE + 1:
            raise ValueError(f"a spool needs room for a record: max_bytes must be more than {HEADER_SIZE}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes if segment_bytes is not None else default_segment_bytes(max_bytes)
        self.ack_interval = ack_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._dir = PrivateDir(self.directory)
        self._lock_fd: int | None = None
        self._segments: list[_Segment] = []
        self._starts: list[int] = []  # the segments' starts, for bisect
        self._ack = 0
        self._ack_written = 0
        self._ack_at = float("-inf")
        self._closed_disk_bytes = 0
        self.pending_records = 0
        # counters, for the sink's statistics
        self.appended = 0
        self.acked = 0
        self.full = 0
        self.torn_bytes = 0
        self.torn_records = 0
        self.corrupt_bytes = 0
        self.recovered = 0

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._lock_fd is not None

    @property
    def ack_offset(self) -> int:
        """Records before this offset were delivered."""
        return self._ack

    @property
    def end_offset(self) -> int:
        """The offset the next record will have."""
        return self._segments[-1].end if self._segments else self._ack

    @property
    def pending_bytes(self) -> int:
        """Bytes (frames, and any damaged bytes among them) not yet delivered."""
        return self.end_offset - self._ack

    @property
    def disk_bytes(self) -> int:
        """Bytes of the segment files in the directory (as they were at :meth:`close`, once closed)."""
        return sum(s.size for s in self._segments) if self._segments else self._closed_disk_bytes

    def statistics(self) -> dict[str, Any]:
        """Counters: records queued, appended, delivered (acked), refused (full), recovered at start, damage found."""
        return {
            "queued": self.pending_records,
            "spool_bytes": self.disk_bytes,
            "pending_bytes": self.pending_bytes,
            "appended": self.appended,
            "acked": self.acked,
            "full": self.full,
            "recovered": self.recovered,
            "torn_records": self.torn_records,
            "torn_bytes": self.torn_bytes,
            "corrupt_bytes": self.corrupt_bytes,
        }

    # -- open and recover --------------------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, find the segments and the ack offset, count what is left to deliver.

        Raises :class:`SpoolBusy` when another process uses the spool, and
        OSError (:class:`~edr.platform.private_files.UnsafePath` included)
        when the directory cannot be used. Damage found is counted and logged.
        """
        with self._lock:
            if self._lock_fd is not None:
                return
            fd = self._dir.open_append(LOCK_NAME)
            try:
                if not current().lock_file(fd):
                    raise SpoolBusy(self.directory)
                self._lock_fd = fd
                self._recover()
            except BaseException:
                self._close_files()
                if self._lock_fd is None:
                    os.close(fd)
                self._release()
                raise

    def _recover(self) -> None:
        dirfd = self._dir.fd()
        segments: list[_Segment] = []
        for name in os.listdir(dirfd):
            match = _SEGMENT.match(name)
            if match:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                segments.append(_Segment(int(match.group(1)), st.st_size, name))
            elif name.startswith(f".{ACK_NAME}.") and name.endswith(".tmp"):
                # an ack file half-replaced when a run died: the old one is still in place
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dirfd)
        segments.sort(key=lambda s: s.start)
        for before, after in itertools.pairwise(segments):
            if before.end > after.start:
                # Cannot happen through this class: a segment grown past the next one's start. What overlaps is
                # not trusted as records.
                self.corrupt_bytes += before.end - after.start
                _log.warning("spool %s: segment %s runs %d bytes into the next one; those bytes are skipped",
                             self.directory, before.name, before.end - after.start)
                before.size = after.start - before.start
        ack = self._read_ack(segments)
        keep: list[_Segment] = []
        for seg in segments:
            if seg.end <= ack and seg is not segments[-1]:
                self._unlink(seg)  # delivered; left behind when the last run ended between ack and removal
                continue
            keep.append(seg)
        self._segments = keep
        self._starts = [s.start for s in keep]
        for seg in keep:
            ack = self._scan_segment(seg, ack)
        self._ack = self._ack_written = ack
        self.recovered = self.pending_records
        if self.recovered:
            _log.info("spool %s: %d record(s) from an earlier run not yet delivered", self.directory,
                      self.recovered)
        last = self._segments[-1] if self._segments else None
        if last is not None and last.size == 0:
            self._open_for_append(last)
        else:
            self._new_segment(last.end if last is not None else ack)

    def _read_ack(self, segments: list[_Segment]) -> int:
        first = segments[0].start if segments else 0
        end = segments[-1].end if segments else 0
        try:
            fd = self._dir.open_read(ACK_NAME)
        except FileNotFoundError:
            return first
        try:
            text = os.read(fd, 64)
        finally:
            os.close(fd)
        try:
            ack = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            _log.warning("spool %s: %s holds %r, not an offset: delivering every record in the spool again",
                         self.directory, ACK_NAME, text[:40])
            return first
        if ack > end or ack < 0:
            _log.warning("spool %s: %s says %d, beyond the spool's end %d: delivering every record in the spool "
                         "again", self.directory, ACK_NAME, ack, end)
            return first
        return max(ack, first)

    def _scan_segment(self, seg: _Segment, ack: int) -> int:
        """Count the records of ``seg`` at or after ``ack`` and the damage in it; returns ``ack``, moved back to
        the start of a record when it points inside one (a damaged ack file: redeliver rather than lose)."""
        seg.fd = self._dir.open_read(seg.name)
        data = _pread_all(seg.fd, seg.size, 0)
        if len(data) < seg.size:
            seg.size = len(data)  # shrank since it was listed: what is there is what counts
        found = scan(data, final=True)
        for start, end in found.records:
            if seg.start + start < ack < seg.start + end:
                ack = seg.start + start
            if seg.start + start >= ack:
                self.pending_records += 1
        for start, end in found.skipped:
            if end == len(data):
                self.torn_bytes += end - start
                self.torn_records += 1
                _log.warning("spool %s: %s ends with %d bytes of a record cut short (a crash while it was "
                             "written); skipped", self.directory, seg.name, end - start)
            else:
                self.corrupt_bytes += end - start
                _log.warning("spool %s: %s has %d damaged bytes at offset %d; skipped, the records after them "
                             "are kept", self.directory, seg.name, end - start, start)
        return ack

    # -- append ------------------------------------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> Appended:
        """Store ``payloads`` at the end of the spool, as many as fit (the rest counted in ``full``).

        One write for the whole batch. Raises OSError when it fails; then
        nothing of the batch is stored (what a failed write left is cut off,
        or, if that fails too, the next append starts a new segment and the
        leftover is skipped as damage).
        """
        with self._lock:
            self._check_open()
            room = self.max_bytes - self.pending_bytes
            chunks = []
            size = 0
            full = 0
            for payload in payloads:
                f = frame(payload)
                if size + len(f) > room:
                    full += 1
                    continue
                chunks.append(f)
                size += len(f)
            if full:
                self.full += full
            if not chunks:
                return Appended(0, full)
            active = self._segments[-1]
            if active.size and active.size + size > self.segment_bytes:
                self._roll()
                active = self._segments[-1]
            data = b"".join(chunks)
            assert active.fd is not None
            written = 0
            try:
                while written < len(data):
                    written += os.write(active.fd, data[written:] if written else data)
            except OSError:
                self._undo_write(active, written)
                raise
            active.size += written
            self.appended += len(chunks)
            self.pending_records += len(chunks)
            return Appended(len(chunks), full)

    def _undo_write(self, active: _Segment, written: int) -> None:
        if not written:
            return
        try:
            assert active.fd is not None
            os.ftruncate(active.fd, active.size)
        except OSError:
            # The partial batch stays in this segment: count the segment as it is and never append to it again.
            with contextlib.suppress(OSError):
                active.size = os.fstat(active.fd).st_size
            self._roll()

    def _roll(self) -> None:
        """Start a new segment after the active one, and remove segments delivered entirely."""
        self._new_segment(self._segments[-1].end)
        self._remove_delivered()

    def _new_segment(self, start: int) -> None:
        name = segment_name(start)
        seg = _Segment(start, 0, name)
        fd = self._dir.open_append(name, readable=True)
        size = os.fstat(fd).st_size
        if size:
            # A file of this name with data in it: left by a run whose ack and segments disagree. Never append
            # to it; what it holds is scanned as the records it has.
            os.close(fd)
            seg.size = size
            self._segments.append(seg)
            self._starts.append(start)
            self._scan_segment(seg, self._ack)
            self._new_segment(seg.end)
            return
        seg.fd = fd
        self._segments.append(seg)
        self._starts.append(start)

    def _open_for_append(self, seg: _Segment) -> None:
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None
        seg.fd = self._dir.open_append(seg.name, readable=True)

    # -- read and acknowledge ----------------------------------------------------------------------------------

    def read(self, offset: int, max_records: int, max_bytes: int) -> Batch | None:
        """Up to ``max_records`` records from ``offset`` (at least one, else at most ``max_bytes`` of payload);
        None when there is nothing at or after ``offset``.

        ``offset`` is the ack offset or the ``end`` of a batch read before.
        Damaged bytes on the way are skipped (they were counted when the
        spool was opened).
        """
        with self._lock:
            self._check_open()
            pos = max(offset, self._segments[0].start) if self._segments else offset
            while pos < self.end_offset:
                seg = self._segment_at(pos)
                if pos >= seg.end:
                    pos = self._next_start(seg)
                    continue
                batch = self._read_from(seg, pos, max_records, max_bytes)
                if batch is None:
                    pos = seg.end  # only damage left in this segment
                    continue
                if batch.payloads:
                    return batch
                pos = batch.end
            return None

    def _segment_at(self, pos: int) -> _Segment:
        i = bisect_right(self._starts, pos) - 1
        return self._segments[max(i, 0)]

    def _next_start(self, seg: _Segment) -> int:
        i = self._segments.index(seg)
        return self._segments[i + 1].start if i + 1 < len(self._segments) else seg.end

    def _read_from(self, seg: _Segment, pos: int, max_records: int, max_bytes: int) -> Batch | None:
        if seg.fd is None:
            seg.fd = self._dir.open_read(seg.name)
        want = min(seg.end - pos, max(max_bytes + HEADER_SIZE * max_records, _READ_STEP))
        while True:
            data = os.pread(seg.fd, want, pos - seg.start)
            final = pos + len(data) >= seg.end
            found = scan(data, final=final)
            if found.records:
                break
            if found.consumed:
                return Batch([], pos, pos + found.consumed)  # damage skipped; the caller goes on from there
            if final:
                return None
            want = seg.end - pos  # a record longer than the window: read the rest of the segment
        payloads: list[bytes] = []
        end = 0
        total = 0
        first = found.records[0][0]
        for (_start, stop), payload in zip(found.records, found.payloads, strict=True):
            if payloads and (len(payloads) >= max_records or total + len(payload) > max_bytes):
                break
            payloads.append(payload)
            total += len(payload)
            end = stop
        return Batch(payloads, pos + first, pos + end)

    def ack(self, offset: int, records: int) -> None:
        """Records up to ``offset`` (``records`` of them) were delivered: forget them.

        Segments delivered entirely are removed; the ack file is written if
        ``ack_interval`` has passed since it last was (else at :meth:`flush`
        or :meth:`close`). An offset at or before the current one is ignored.
        """
        with self._lock:
            self._check_open()
            if offset <= self._ack:
                return
            if offset > self.end_offset:
                raise ValueError(f"ack offset {offset} beyond the spool's end {self.end_offset}")
            self._ack = offset
            self.pending_records = max(0, self.pending_records - records)
            self.acked += records
            self._remove_delivered()
            if self.clock() - self._ack_at >= self.ack_interval:
                self._write_ack()

    def flush(self) -> None:
        """Write the ack offset now if it moved since it was last written."""
        with self._lock:
            if self.is_open:
                self._write_ack()

    def _write_ack(self) -> None:
        if self._ack == self._ack_written:
            return
        self._dir.write_atomic(ACK_NAME, b"%d\n" % self._ack)
        self._ack_written = self._ack
        self._ack_at = self.clock()

    def _remove_delivered(self) -> None:
        while len(self._segments) > 1 and self._segments[0].end <= self._ack:
            self._unlink(self._segments.pop(0))
            self._starts.pop(0)

    def _unlink(self, seg: _Segment) -> None:
        if seg.fd is not None:
            with contextlib.suppress(OSError):
                os.close(seg.fd)
            seg.fd = None
        try:
            os.unlink(seg.name, dir_fd=self._dir.fd())
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("spool %s: cannot remove the delivered segment %s: %s", self.directory, seg.name, exc)

    # -- close -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Write the ack offset, close every file and release the lock (idempotent)."""
        with self._lock:
            if self._lock_fd is None:
                return
            try:
                self._write_ack()
            except OSError as exc:
                _log.warning("spool %s: cannot write the ack offset at close (%s): records delivered since it was "
                             "last written will be delivered again", self.directory, exc)
            finally:
                self._close_files()
                self._release()

    def _close_files(self) -> None:
        self._closed_disk_bytes = sum(s.size for s in self._segments)
        for seg in self._segments:
            if seg.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(seg.fd)
                seg.fd = None
        self._segments = []
        self._starts = []

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        self._dir.close()

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise ValueError(f"spool {self.directory} is not open")


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes from ``offset``, in steps (fewer if the file is shorter)."""
    parts = []
    done = 0
    while done < size:
        chunk = os.pread(fd, min(_READ_STEP * 4, size - done), offset + done)
        if not chunk:
            break
        parts.append(chunk)
        done += len(chunk)
    return b"".join(parts)
