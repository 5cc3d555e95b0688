"""The replay source: recorded files in, raw records out, in file order.

File reading happens in worker threads (a chunk or a slice of records at a
time), so the event loop never blocks on disk; NDJSON is read one chunk
ahead. Cancellation (SIGTERM) stops between batches: everything already sent
downstream is still processed, so the alert file holds every alert of every
record read.

The source lets one batch into the graph at a time: after each send it waits
until the graph has settled (:mod:`edr.runtime.flight` says why).

With ``workers`` > 1 a pool of ``workers`` - 1 processes reads and decodes the
Windows event log files ahead of the one being replayed (:mod:`edr.sources.replay.parallel`);
this source then sends what they decoded in file order, batch by batch, so
that everything after it sees what a replay in one process sees.

A bad file never stops the next one. A file that cannot be used at all (not
a regular file, no recognised format, unreadable, an EVTX header the parser
refuses) is reported with the reason and counted in ``failures``; a bad
record inside a usable file is passed on as a
:class:`~edr.event.RejectedRecord` for the normalizer to report and count.
An exception a reader raises that nobody foresaw is reported with its
traceback and fails that file only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar

import trio

from edr.event import RejectedRecord
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import OutPort
from edr.sources.replay.formats import UnusableFile, open_recording
from edr.sources.replay.normalizer import NdjsonLines
from edr.sources.replay.parallel import PooledFiles, WireFile, batch_items
from edr.sources.replay.winlog import UnreadableFile

#: Bytes per read. Every read is a round trip to a worker thread whose GIL
#: handoffs stall the event loop; 4 MiB reads replayed faster than 1 MiB
#: (bench_pipeline, 8 interleaved runs: median 212k against 188k events/s)
#: for 13 MB more peak memory.
CHUNK = 1 << 22
#: An NDJSON line longer than this is rejected without being held in memory
#: whole (a file without newlines must not grow one line without bound).
MAX_LINE = 1 << 24

_T = TypeVar("_T")


class _ReaderFailed(Exception):
    """A reader raised what no bad data was expected to make it raise (a bug the file revealed)."""


class _Records:
    """The records of one EVTX or ``evtx_dump`` JSON file, a batch at a time; used in worker threads only."""

    __slots__ = ("batch_size", "ended", "fh", "fmt", "items", "path", "size")

    def __init__(self, fh: BinaryIO, fmt: str, path: str, batch_size: int) -> None:
        self.fh = fh
        self.fmt = fmt
        self.path = path
        self.batch_size = batch_size
        self.items: Iterator[tuple[Any, Any]] | None = None
        #: the file's size (EVTX) or the bytes read (JSON), known once reading started
        self.size = 0
        #: True once a batch came back short: the records are all read
        self.ended = False

    def take(self) -> list[tuple[Any, Any]]:
        """The next batch of ``(number, record)``; shorter than ``batch_size`` (perhaps empty) when it is the last."""
        if self.items is None:
            from edr.sources.replay import winlog

            if self.fmt == "evtx":
                self.size = os.fstat(self.fh.fileno()).st_size
                self.items = winlog.evtx_records(self.fh, self.path)
            else:
                data = self.fh.read()
                self.size = len(data)
                self.items = winlog.evtx_json_records(data)
                del data
        batch = list(itertools.islice(self.items, self.batch_size))
        # islice stops early only when the generator is exhausted: asking again would only return []
        self.ended = len(batch) < self.batch_size
        return batch


#: What :meth:`ReplaySource._start` read of a file besides opening it: the reader, its first
#: batch, and what that first read raised (then the batch is empty).
_Start = tuple[_Records, list[tuple[Any, Any]], Exception | None]


class ReplaySource(ActorBase):
    """Reads ``files`` in order and emits ``(format, payload, path, number)`` batches."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str, files: list[str], batch_size: int, log: Any, workers: int = 1) -> None:
        """``workers`` > 1: this process and ``workers`` - 1 others, which read and decode the files
        ahead of it (started now, so that they read while the rest of the graph is built, rules
        compiled included). This process counts as one: everything after the decoding (detection,
        alerts) runs here and is the larger part, so a reader process per processor would take
        processor time from it (277 EVTX files on 2 processors, load 6: 1 reader 0.99-1.17 s, 2 readers
        1.10-1.29 s wall)."""
        super().__init__(name)
        self.files = files
        self.batch_size = batch_size
        self.log = log
        self._pool: PooledFiles | None = None
        if workers > 1 and len(files) > 1:
            self._pool = PooledFiles(files, batch_size, workers - 1)
        self.records = 0
        self.bytes_read = 0
        self.files_done = 0
        #: files read and decoded by reader processes (the others were read here)
        self.files_pooled = 0
        #: (path, reason) of each file that could not be (wholly) replayed
        self.failures: list[tuple[str, str]] = []

    @property
    def failed_files(self) -> list[str]:
        """The paths of :attr:`failures`."""
        return [path for path, _ in self.failures]

    def total_bytes(self) -> int:
        """Sum of the input sizes (for progress)."""
        total = 0
        for f in self.files:
            with contextlib.suppress(OSError):
                total += Path(f).stat().st_size
        return total

    async def run(self, ports: Ports) -> None:
        """Replay every file in order; an unusable file is reported and skipped."""
        out = ports.output("out")
        pool, self._pool = self._pool, None
        try:
            for index, path in enumerate(self.files):
                done = None
                if pool is not None and pool.ready(index):
                    done = pool.result(index)  # no thread round trip: most files are read ahead
                elif pool is not None:
                    # a worker may still be reading it: waiting is abandoned on cancellation (close() ends it)
                    done = await trio.to_thread.run_sync(pool.result, index, abandon_on_cancel=True)
                if done is not None and done.pooled:
                    await self._pooled(path, done, out, ports)
                else:
                    await self._open(path, out, ports)
                self.files_done += 1
        finally:
            if pool is not None:
                pool.close()

    def close(self) -> None:
        """End the reader processes of a source that was built but never run."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def _open(self, path: str, out: OutPort, ports: Ports) -> None:
        try:
            fh, fmt, start = await trio.to_thread.run_sync(self._start, path)
        except UnusableFile as exc:
            self._fail(path, str(exc))
        else:
            with fh:
                await self._replay(path, fh, fmt, start, out, ports)

    def _start(self, path: str) -> tuple[BinaryIO, str, _Start | None]:
        """In a worker thread: open ``path`` and, unless it is NDJSON, read its first batch.

        One thread round trip then replays a file of up to one batch (most
        recordings: 277 attack samples made 417 batches); what the first read
        raises is kept for :meth:`_records` to raise in the event loop, where
        the file's failure is reported.
        """
        fh, fmt = open_recording(path)
        if fmt == "ndjson":
            return fh, fmt, None
        records = _Records(fh, fmt, path, self.batch_size)
        try:
            return fh, fmt, (records, records.take(), None)
        except Exception as exc:
            return fh, fmt, (records, [], exc)

    async def _pooled(self, path: str, done: WireFile, out: OutPort, ports: Ports) -> None:
        """Send what a worker read and decoded of ``path``, batch by batch, as :meth:`_records` sends them."""
        for level, name, message in done.logs:  # what the worker logged, under the logger it used
            logging.getLogger(name).log(level, "%s", message)
        self.files_pooled += 1
        for raw in done.batches:
            items, records = batch_items(raw, done.fmt, path)
            await out.send(items)
            self.records += records
            await ports.settled()
        if done.failure is not None:
            if done.trace:
                self.log.error("replay: %s: %s\n%s", path, done.failure, done.trace.rstrip())
                self.failures.append((path, done.failure))
            else:
                self._fail(path, done.failure)
        else:
            self.bytes_read += done.size

    async def _replay(self, path: str, fh: BinaryIO, fmt: str, start: _Start | None, out: OutPort,
                      ports: Ports) -> None:
        try:
            if start is None:
                await self._lines(path, fh, out, ports)
            else:
                await self._records(path, start, out, ports)
        except OSError as exc:
            self._fail(path, f"cannot read: {exc}")
        except UnreadableFile as exc:
            self._fail(path, f"cannot parse: {exc}")
        except _ReaderFailed as exc:
            cause = exc.__cause__
            self._fail(path, f"reader failed: {type(cause).__name__}: {cause}", cause)

    def _fail(self, path: str, reason: str, cause: BaseException | None = None) -> None:
        """Report ``path`` as failed; an unforeseen ``cause`` is logged with its traceback."""
        self.log.error("replay: %s: %s", path, reason, exc_info=cause)
        self.failures.append((path, reason))

    @staticmethod
    async def _pull(read: Callable[[], _T]) -> _T:
        """``read()`` in a worker thread; what it raises but OSError or UnreadableFile becomes _ReaderFailed.

        Only reads are guarded so: an exception of the graph (a send) is never
        taken for a bad file.
        """
        try:
            return await trio.to_thread.run_sync(read)
        except (OSError, UnreadableFile):
            raise
        except Exception as exc:
            raise _ReaderFailed from exc

    async def _lines(self, path: str, fh: BinaryIO, out: OutPort, ports: Ports) -> None:
        lineno = 0
        # the start of a line that goes on in the next chunk, and its size so far (beyond
        # MAX_LINE only the size is kept: the line is rejected when it ends)
        pending: list[bytes] = []
        pending_size = 0
        failed: list[OSError] = []

        async def send(lines: list[bytes]) -> None:
            nonlocal lineno
            size = self.batch_size
            for start in range(0, len(lines), size):
                part = lines[start:start + size]
                await out.send(NdjsonLines(part, path, lineno + 1))
                # Counted once sent: on cancellation `records` is exactly what went downstream.
                lineno += len(part)
                self.records += len(part)
                await ports.settled()

        async def reject_long_line() -> None:
            nonlocal lineno
            reason = f"line of {pending_size} bytes, longer than the {MAX_LINE} a line may have"
            await out.send([("ndjson", RejectedRecord(reason), path, lineno + 1)])
            lineno += 1
            self.records += 1
            await ports.settled()

        async with trio.open_nursery() as nursery:
            chunks_in, chunks = trio.open_memory_channel[bytes](1)
            nursery.start_soon(self._read_ahead, fh, chunks_in, failed)
            async for chunk in chunks:
                self.bytes_read += len(chunk)
                lines = chunk.split(b"\n")
                last = lines.pop()  # the start of the next line; b"" when the chunk ends a line
                if lines and pending_size:
                    pending_size += len(lines[0])
                    if pending_size > MAX_LINE:
                        await reject_long_line()
                        del lines[0]
                    else:
                        pending.append(lines[0])
                        lines[0] = b"".join(pending)  # not tail + chunk: that copies the whole chunk
                    pending, pending_size = [], 0
                if lines:
                    await send(lines)
                if last:
                    pending_size += len(last)
                    if pending_size <= MAX_LINE:
                        pending.append(last)
                    else:
                        pending.clear()
        if failed:
            # Raised here, not in the reader task, where the nursery would wrap it in a group.
            raise failed[0]
        if pending_size > MAX_LINE:
            await reject_long_line()
        elif pending_size:
            tail = b"".join(pending)
            if tail.strip():
                await send([tail])

    @staticmethod
    async def _read_ahead(fh: BinaryIO, chunks: trio.MemorySendChannel[bytes], failed: list[OSError]) -> None:
        """Read ``fh`` into ``chunks`` while the graph works on the previous chunk.

        A read error ends the stream and is left in ``failed``; what was read
        before it is still replayed.
        """
        async with chunks:
            try:
                while chunk := await trio.to_thread.run_sync(fh.read, CHUNK):
                    await chunks.send(chunk)
            except OSError as exc:
                failed.append(exc)

    async def _records(self, path: str, start: _Start, out: OutPort, ports: Ports) -> None:
        """Send the batches of an EVTX or ``evtx_dump`` JSON file, the first one read by :meth:`_start`.

        A batch shorter than the batch size ends the file (no round trip to
        find out that nothing follows). A failure ends the file where it
        happens; the batches before it are sent, the one being filled is not.
        """
        records, batch, error = start
        while True:
            if error is not None:
                if isinstance(error, (OSError, UnreadableFile)):
                    raise error
                raise _ReaderFailed from error
            if batch:
                await out.send([(records.fmt, record, path, number) for number, record in batch])
                self.records += len(batch)
                await ports.settled()
            if records.ended:
                break
            batch = await self._pull(records.take)
        self.bytes_read += records.size

    def statistics(self) -> dict[str, Any]:
        """Records and bytes read so far, files done and files that failed."""
        return {"records": self.records, "bytes": self.bytes_read, "files_done": self.files_done,
                "files_failed": len(self.failures)}
