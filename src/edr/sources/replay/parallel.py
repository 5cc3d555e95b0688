"""Windows event log files read and decoded by a pool of processes, handed back in file order.

``edr replay --workers N`` (N > 1): the replay source gives each file to a
worker process of a pool of N - 1 (:class:`PooledFiles`), a few files ahead of the
one it is replaying, consecutive small files together (:data:`GROUP_FILES`: a task
costs this process more than reading a small file costs the worker). A worker
(:func:`read_file`) does what the source and
the normalizer would do with an EVTX file or an evtx JSON dump: open it
(:func:`~edr.sources.replay.formats.open_recording`), read its records
(:mod:`~edr.sources.replay.winlog`) and decode each one into events with
the normalizer's own decoders, in batches of the source's batch size. This
process then sends those batches into the graph in file order, where the
normalizer passes the events on and reports the rejected records as if it
had decoded them: the router, the detection (correlations included) and the
writers see the very batches, in the very order, of a replay in one process.
Only reading and decoding, which depend on nothing but the file, run in
parallel.

What goes between the processes is data: msgpack (msgspec) of events,
record numbers, reasons, log lines, never a Python object of the file's
choosing; the batches stay encoded until the source sends them, so memory
holds at most the files read ahead (:data:`AHEAD` files, :data:`AHEAD_BYTES`
of them beyond one per worker) in that compact form.

Left to the source in this process: edr's NDJSON event stream (a
streamed, memory-bounded read of a file of any size, already decoded by
msgspec in C), files larger than :data:`MAX_POOLED_BYTES`, and every file
once the pool cannot work (it could not be started, or it broke twice on
the same file: then that file fails with the reason, the others go on).
"""

from __future__ import annotations

import gc
import logging
import os
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final

import msgspec

from edr.event import Event, RejectedRecord
from edr.runtime.process_pool import process_pool
from edr.sources.replay.formats import UnusableFile, open_recording

log = logging.getLogger(__name__)

#: Larger files are read by the source itself, a batch at a time: a worker hands a whole
#: file back at once (about a quarter of an EVTX file's size, encoded).
MAX_POOLED_BYTES: Final = 32 << 20
#: Files given to the pool ahead of the one being replayed, beyond one per worker, at most...
AHEAD: Final = 16
#: ... and only while the files given and not replayed yet, beyond one per worker, are at most
#: this large (a worker hands a file back as about a quarter of its size, encoded). Reading far
#: ahead lets a reader that falls behind on a run of large files catch up while this process
#: works on the small ones: with 2 files ahead, this process waited for the reader 24-26 times
#: on the 277 attack samples (0.1 s, 2 processors under load).
AHEAD_BYTES: Final = 16 << 20
#: Consecutive small files are given to a worker together, up to this many files of up to this many
#: bytes in all: each task costs this process ~0.2 ms of its threads (the submission, waking the pool's
#: manager thread, taking the result), 55 ms for the 277 attack samples one by one, 8 ms by eights.
GROUP_FILES: Final = 8
GROUP_BYTES: Final = 1 << 20


class WireEvent(msgspec.Struct, array_like=True, gc=False):
    """An :class:`~edr.event.Event` between processes (values as msgpack holds them: JSON's)."""

    category: str
    product: str
    fields: dict[str, Any]
    timestamp: float
    seq: int
    service: str | None
    origin: dict[str, Any] | None
    count: int
    line: int


class WireRecord(msgspec.Struct, array_like=True, gc=False):
    """One record of a file: its events, or why it was rejected, or how its decoder failed."""

    number: int
    events: list[WireEvent] = []
    #: why the record was rejected (unreadable, or its decoder refused it)
    rejected: str | None = None
    #: the decoder's unforeseen exception: (type name, message, traceback)
    failed: tuple[str, str, str] | None = None


class WireFile(msgspec.Struct, array_like=True, gc=False):
    """What a worker made of one file."""

    #: False: the source reads this file itself (NDJSON, or larger than MAX_POOLED_BYTES)
    pooled: bool
    fmt: str = ""
    #: bytes of the file read (counted once the whole file was read, as the source counts)
    size: int = 0
    #: the records in batches of the source's batch size, each encoded on its own (a list of WireRecord)
    batches: list[msgspec.Raw] = []
    #: why the file could not be (wholly) replayed: the source's failure reason
    failure: str | None = None
    #: the traceback of an exception of the reader nobody foresaw
    trace: str | None = None
    #: (level, logger name, message) of what the worker logged, in order
    logs: list[tuple[int, str, str]] = []


_ENCODER: Final = msgspec.msgpack.Encoder()
_FILE: Final = msgspec.msgpack.Decoder(WireFile)
_BATCH: Final = msgspec.msgpack.Decoder(list[WireRecord])


class DecodeFailure(msgspec.Struct, frozen=True, gc=False):
    """Stands in a batch for a record whose decoder raised what nobody foresaw, in a worker.

    The normalizer reports it like a decoder error of its own (counted in
    ``errors``), with the worker's traceback.
    """

    error: str
    message: str
    trace: str


# --- in a worker -------------------------------------------------------------------------------


class _Captured(logging.Handler):
    """Keeps what a worker logs, to be logged again by the process that replays."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        self.lines.append((record.levelno, record.name, message))


_captured = _Captured()


def start_worker(level: int) -> None:
    """A worker's start: what it logs is kept for its results (forked, it would write to this process's log).

    The cyclic collector runs in a worker even if the process that forked it had paused it for its start.
    """
    gc.enable()
    for logger in (logging.getLogger(), logging.getLogger("edr")):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)  # not closed: they belong to the parent
        logger.addHandler(_captured)
    logging.getLogger("edr").setLevel(level)
    logging.getLogger("edr").propagate = False


def read_files(paths: list[str], batch_size: int) -> list[bytes]:
    """In a worker: :func:`read_file` of each of ``paths``, in order."""
    return [read_file(path, batch_size) for path in paths]


def read_file(path: str, batch_size: int) -> bytes:
    """In a worker: ``path`` read and decoded into batches (an encoded :class:`WireFile`).

    Failures are the source's, word for word: a file that cannot be used,
    read or parsed is a failure with its reason; a failure ends the file
    where it happens, and the batch being filled then is not replayed (as
    when the source reads the file).
    """
    _captured.lines = []
    try:
        fh, fmt = open_recording(path)
    except UnusableFile as exc:
        return _encode(WireFile(True, failure=str(exc)))
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if fmt == "ndjson" or size > MAX_POOLED_BYTES:
            return _encode(WireFile(False, fmt))
        result = WireFile(True, fmt)
        try:
            _read(path, fh, fmt, size, batch_size, result)
        except Exception as exc:  # the file's failure (its reason is set); what came before is kept
            if result.failure is None:
                result.failure = f"reader failed: {type(exc).__name__}: {exc}"
                result.trace = traceback.format_exc()
    result.logs = _captured.lines
    try:
        return _encode(result)
    except msgspec.EncodeError:  # a value msgpack cannot hold: let the source read the file itself
        return _encode(WireFile(False, fmt))


def _read(path: str, fh: Any, fmt: str, size: int, batch_size: int, result: WireFile) -> None:
    from edr.sources.replay import winlog

    try:
        if fmt == "evtx":
            items = winlog.evtx_records(fh, path)
        else:
            data = fh.read()
            size = len(data)
            items = winlog.evtx_json_records(data)
            del data
        batch: list[WireRecord] = []
        for number, payload in items:
            batch.append(_decoded(fmt, payload, path, number))
            if len(batch) == batch_size:
                result.batches.append(msgspec.Raw(_ENCODER.encode(batch)))
                batch = []
        if batch:
            result.batches.append(msgspec.Raw(_ENCODER.encode(batch)))
        result.size = size
    except OSError as exc:
        result.failure = f"cannot read: {exc}"
        raise
    except winlog.UnreadableFile as exc:
        result.failure = f"cannot parse: {exc}"
        raise


def _decoded(fmt: str, payload: Any, path: str, number: int) -> WireRecord:
    """One record decoded as the normalizer decodes it (see :meth:`Normalizer.decode`)."""
    from edr.sources.replay.normalizer import BAD_RECORD, DECODERS

    if type(payload) is RejectedRecord:
        return WireRecord(number, rejected=payload.reason)
    try:
        result = DECODERS[fmt](payload, path, number)
    except BAD_RECORD as exc:
        return WireRecord(number, rejected=str(exc))
    except Exception as exc:
        return WireRecord(number, failed=(type(exc).__name__, str(exc), traceback.format_exc()))
    events = [] if result is None else result if type(result) is list else [result]
    return WireRecord(number, [WireEvent(e.category, e.product, e.fields, e.timestamp, e.seq, e.service, e.origin,
                                         e.count, e.line) for e in events])


def _encode(result: WireFile) -> bytes:
    return _ENCODER.encode(result)


# --- in the process that replays -----------------------------------------------------------------


def batch_items(raw: msgspec.Raw, fmt: str, path: str) -> tuple[list[Any], int]:
    """One encoded batch as the normalizer takes it, and how many records it holds.

    The items are events, and ``(fmt, payload, path, number)`` for a record
    that was rejected (payload a :class:`~edr.event.RejectedRecord`) or whose
    decoder failed (a :class:`DecodeFailure`).
    """
    items: list[Any] = []
    records = _BATCH.decode(raw)
    for record in records:
        if record.rejected is not None:
            items.append((fmt, RejectedRecord(record.rejected), path, record.number))
        elif record.failed is not None:
            items.append((fmt, DecodeFailure(*record.failed), path, record.number))
        else:
            items.extend(Event(category=e.category, product=e.product, fields=e.fields, timestamp=e.timestamp,
                               seq=e.seq, service=e.service, origin=e.origin, count=e.count, line=e.line)
                         for e in record.events)
    return items, len(records)


class PooledFiles:
    """``files`` read by a pool of ``workers`` processes, a few ahead of the one being replayed.

    Reading starts when this is made (the source is made before the rules
    are compiled, so both go on at once). :meth:`result` blocks until the
    given file is read; call it in file order, from a thread. :meth:`close`
    ends the pool (files still being read are finished, the others dropped).
    """

    def __init__(self, files: list[str], batch_size: int, workers: int,
                 pool_factory: Callable[[int, int], Any] | None = None) -> None:
        self.files = files
        self.batch_size = batch_size
        self.workers = max(1, min(workers, len(files)))
        self._factory = pool_factory or _start_pool
        #: file index -> the future of the files given with it (:data:`GROUP_FILES`), and its place among them
        self._pending: dict[int, tuple[Future[list[bytes]], int]] = {}
        self._next = 0
        self._sizes = [_size(path) for path in files]
        self._pool: Any = None
        self._start()
        self._fill(0)

    def _start(self) -> None:
        try:
            self._pool = self._factory(self.workers, logging.getLogger("edr").getEffectiveLevel())
        except (OSError, ValueError, RuntimeError) as exc:  # no processes here: the source reads every file
            log.warning("replay: cannot start %d reader processes (%s); reading the files in this process",
                        self.workers, exc)
            self._pool = None

    def _fill(self, index: int) -> None:
        """Submit the files from ``index`` on, up to the window, small consecutive ones together."""
        if self._pool is None:
            return
        self._next = max(self._next, index)
        own = index + self.workers  # the files from here on are read ahead
        end = min(len(self.files), own + AHEAD)
        if own <= self._next and self._next + GROUP_FILES > end < len(self.files):
            # every worker has its file and files ahead: wait until a whole group fits. Topping the
            # window up file by file made a task per file (271 for the 277 attack samples, not ~40),
            # each one this thread's GIL given away and waited for (0.04-0.27 s in all, measured).
            return
        ahead = sum(self._sizes[i] for i in self._pending if i >= own)
        while self._next < len(self.files) and self._next < own + AHEAD:
            group: list[int] = []
            size = 0
            for i in range(self._next, min(len(self.files), own + AHEAD, self._next + GROUP_FILES)):
                if group and size + self._sizes[i] > GROUP_BYTES:
                    break
                # the first file ahead is always given, however large
                if i > own and ahead + self._sizes[i] > AHEAD_BYTES:
                    break
                group.append(i)
                size += self._sizes[i]
                if i >= own:
                    ahead += self._sizes[i]
            if not group:
                return
            try:
                future = self._pool.submit(read_files, [self.files[i] for i in group], self.batch_size)
            except BrokenProcessPool:  # a worker died on a later file since the last look
                self._restart()
                if self._pool is None:
                    return
                self._next = index
                ahead = 0
                continue
            for place, i in enumerate(group):
                self._pending[i] = (future, place)
            self._next = group[-1] + 1

    def ready(self, index: int) -> bool:
        """Whether :meth:`result` of file ``index`` would return at once (it was read, or is not in the pool)."""
        pending = self._pending.get(index)
        return pending is None or pending[0].done()

    def result(self, index: int) -> WireFile:
        """What the pool made of file ``index``; ``pooled`` False when the source must read it itself."""
        pending = self._pending.pop(index, None)
        if pending is None:
            return WireFile(False)
        future, place = pending
        data: bytes | None
        try:
            data = future.result()[place]
        except BrokenProcessPool:  # each file given with it is read again alone, when its turn comes
            data = self._again(index)
        self._fill(index + 1)
        return _FILE.decode(data) if data is not None else WireFile(True, failure=(
            "the process reading it died (twice; the EVTX parser crashed on it?)"))

    def _again(self, index: int) -> bytes | None:
        """After a worker died: the file alone, in a new pool; None if it kills that one too."""
        for attempt in range(2):
            self._restart()
            if self._pool is None:
                return None
            future = self._pool.submit(read_files, [self.files[index]], self.batch_size)
            try:
                return future.result()[0]
            except BrokenProcessPool:
                log.warning("replay: %s: the process reading it died (attempt %d)", self.files[index], attempt + 1)
        self._restart()
        return None

    def _restart(self) -> None:
        """A new pool in place of a broken one; the files it was reading are read again."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()
        self._next = 0
        self._start()

    def close(self) -> None:
        """Stop the pool: nothing more is started; what a worker is reading is finished and dropped."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _size(path: str) -> int:
    """The size of ``path`` (0 if it cannot be known: the worker then finds what is wrong with it)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _start_pool(workers: int, level: int) -> Any:
    return process_pool(workers, preload=[__name__], initializer=start_worker, initargs=(level,))
