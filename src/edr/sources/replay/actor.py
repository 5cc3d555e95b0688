"""The replay source: recorded files in, raw records out, in file order.

File reading happens in worker threads (a chunk or a slice of records at a
time), so the event loop never blocks on disk; NDJSON is read one chunk
ahead. Cancellation (SIGTERM) stops between batches: everything already sent
downstream is still processed, so the alert file holds every alert of every
record read.

The source lets one batch into the graph at a time: after each send it waits
until the graph has settled (:mod:`edr.runtime.flight` says why).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import trio

from edr.runtime.actor import ActorBase, ActorContext, Ports
from edr.runtime.channel import OutPort
from edr.runtime.stages import NdjsonLines
from edr.sources.replay.formats import detect_format

#: Bytes per read. Every read is a round trip to a worker thread whose GIL
#: handoffs stall the event loop; 4 MiB reads replayed faster than 1 MiB
#: (bench_pipeline, 8 interleaved runs: median 212k against 188k events/s)
#: for 13 MB more peak memory.
CHUNK = 1 << 22


class ReplaySource(ActorBase):
    """Reads ``ctx.options['files']`` and emits ``(format, payload, path, number)`` batches."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str, files: list[str], batch_size: int, log: Any) -> None:
        super().__init__(name)
        self.files = files
        self.batch_size = batch_size
        self.log = log
        self.records = 0
        self.bytes_read = 0
        self.files_done = 0
        self.failed_files: list[str] = []

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> ReplaySource:
        """``ctx.options['files']``: the paths to replay."""
        return cls(name, list(ctx.options.get("files", [])), ctx.config.pipeline.batch_size, ctx.log)

    def total_bytes(self) -> int:
        """Sum of the input sizes (for progress)."""
        total = 0
        for f in self.files:
            with contextlib.suppress(OSError):
                total += Path(f).stat().st_size
        return total

    async def run(self, ports: Ports) -> None:
        """Replay every file in order; an unreadable file is reported and skipped."""
        out = ports.output("out")
        for path in self.files:
            try:
                fmt = await trio.to_thread.run_sync(detect_format, path)
                if fmt == "ndjson":
                    await self._lines(path, out, ports)
                else:
                    await self._records(path, fmt, out, ports)
            except OSError as exc:
                self.log.error("replay: %s: cannot read: %s", path, exc)
                self.failed_files.append(path)
            except ValueError as exc:
                self.log.error("replay: %s: cannot parse: %s", path, exc)
                self.failed_files.append(path)
            self.files_done += 1

    async def _lines(self, path: str, out: OutPort, ports: Ports) -> None:
        lineno = 0
        tail = b""
        failed: list[OSError] = []
        with open(path, "rb") as fh:
            async with trio.open_nursery() as nursery:
                chunks_in, chunks = trio.open_memory_channel[bytes](1)
                nursery.start_soon(self._read_ahead, fh, chunks_in, failed)
                async for chunk in chunks:
                    self.bytes_read += len(chunk)
                    lines = chunk.split(b"\n")
                    if tail:
                        lines[0] = tail + lines[0]  # not tail + chunk: that copies the whole chunk
                    tail = lines.pop()
                    size = self.batch_size
                    for start in range(0, len(lines), size):
                        part = lines[start:start + size]
                        await out.send(NdjsonLines(part, path, lineno + 1))
                        # Counted once sent: on cancellation `records` is exactly what went downstream.
                        lineno += len(part)
                        self.records += len(part)
                        await ports.settled()
        if failed:
            # Raised here, not in the reader task, where the nursery would wrap it in a group.
            raise failed[0]
        if tail.strip():
            lineno += 1
            await out.send(NdjsonLines([tail], path, lineno))
            self.records += 1

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

    async def _records(self, path: str, fmt: str, out: OutPort, ports: Ports) -> None:
        from edr.sources.replay import winlog

        reader: Iterator[dict[str, Any]] = winlog.iter_evtx(path) if fmt == "evtx" else winlog.iter_evtx_json(path)
        number = itertools.count(1)
        size = Path(path).stat().st_size
        while True:
            records = await trio.to_thread.run_sync(lambda: list(itertools.islice(reader, self.batch_size)))
            if not records:
                break
            await out.send([(fmt, r, path, next(number)) for r in records])
            self.records += len(records)
            await ports.settled()
        self.bytes_read += size

    def statistics(self) -> dict[str, Any]:
        """Records and bytes read so far."""
        return {"records": self.records, "bytes": self.bytes_read, "files_done": self.files_done}
