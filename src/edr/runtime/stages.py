"""Small pipeline stages: the normalizer (raw records -> Events) and a null sink."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import orjson

from edr.event import RECORD_DECODER, Event, RecordError, event_from_record
from edr.runtime.actor import ActorBase, ActorContext, Ports

#: A decoder turns one raw record of its format into events; it may raise
#: ValueError (or a subclass) for malformed input, which is reported and skipped.
Decoder = Callable[[Any, str, int], "Event | list[Event] | None"]
MAX_REPORTED = 20


def decode_ndjson(line: bytes, path: str, lineno: int) -> Event | None:
    """One line of edr's NDJSON event format."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if not line.strip():  # a blank line (checked only here: the hot path never strips)
            return None
        raise RecordError(f"invalid JSON: {exc}") from None
    event = event_from_record(record)
    event.origin = {"log.file.path": path}
    event.line = lineno
    return event


def _decode_evtx(record: Any, path: str, recno: int) -> Event | None:
    from edr.sources.replay.winlog import winlog_to_event

    return winlog_to_event(record, path)


class NdjsonLines(list[bytes]):
    """A batch of raw lines of one NDJSON file, the first numbered ``first``.

    The replay source's batch for NDJSON: one object per batch instead of a
    tuple per line, because this is the hot path of a replay.
    """

    __slots__ = ("first", "path")

    def __init__(self, lines: list[bytes], path: str, first: int) -> None:
        super().__init__(lines)
        self.path = path
        self.first = first


DECODERS: dict[str, Decoder] = {
    "ndjson": decode_ndjson,
    "evtx": _decode_evtx,
    "evtx_json": _decode_evtx,
}


class Normalizer(ActorBase):
    """Decodes raw source records into Events.

    Input batches are :class:`NdjsonLines`, or hold ``(format, payload,
    path, number)`` tuples from the replay source, or already-built Events
    (passed through). Bad records are
    logged with file and line (the first ``MAX_REPORTED`` per file), counted
    and skipped.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, log: Any) -> None:
        super().__init__(name)
        self.log = log
        self.decoded = 0
        self.rejected = 0
        self._reported: dict[str, int] = {}
        # one origin per file, shared by its events (the line is Event.line)
        self._origins: dict[str, dict[str, Any]] = {}

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> Normalizer:
        """No configuration."""
        return cls(name, ctx.log)

    def decode(self, batch: Sequence[Any]) -> list[Event]:
        """Sans-IO core: one batch of raw records to events."""
        if type(batch) is NdjsonLines:
            return self._decode_lines(batch)
        out: list[Event] = []
        append = out.append
        decoders = DECODERS
        for item in batch:
            if type(item) is Event:
                append(item)
                continue
            fmt, payload, path, number = item
            try:
                result = decoders[fmt](payload, path, number)
            except (ValueError, KeyError, TypeError) as exc:
                self._reject(path, number, str(exc))
                continue
            if result is None:
                continue
            if type(result) is list:
                out.extend(result)
            else:
                append(result)
        self.decoded += len(out)
        return out

    def _decode_lines(self, batch: NdjsonLines) -> list[Event]:
        out: list[Event] = []
        append = out.append
        decode = RECORD_DECODER.decode
        path = batch.path
        origin = self._origins.get(path)
        if origin is None:
            origin = self._origins[path] = {"log.file.path": path}
        number = batch.first
        for line in batch:
            try:
                event = decode(line)
            except ValueError:
                # blank, malformed or unusual: the full route says why, with file and line
                try:
                    slow = decode_ndjson(line, path, number)
                except (ValueError, KeyError, TypeError) as exc:
                    self._reject(path, number, str(exc))
                else:
                    if slow is not None:
                        slow.origin = origin
                        append(slow)
            else:
                event.origin = origin
                event.line = number
                append(event)
            number += 1
        self.decoded += len(out)
        return out

    def _reject(self, path: str, number: int, reason: str) -> None:
        self.rejected += 1
        n = self._reported.get(path, 0) + 1
        self._reported[path] = n
        if n <= MAX_REPORTED:
            self.log.warning("replay: %s:%d: skipped: %s", path, number, reason)
        elif n == MAX_REPORTED + 1:
            self.log.warning("replay: %s: more bad records; counting without reporting each", path)

    async def run(self, ports: Ports) -> None:
        """Decode each batch and pass it on."""
        out = ports.output("out")
        async for batch in ports.input("in"):
            events = self.decode(batch)
            if events:
                await out.send(events)
            del batch, events  # freed before the wait for the next: see edr.runtime.flight

    def statistics(self) -> dict[str, Any]:
        """Decoded and rejected records."""
        return {"decoded": self.decoded, "rejected": self.rejected}


class NullSink(ActorBase):
    """Drains its input (benchmarks, graphs without a consumer)."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    @classmethod
    def build(cls, ctx: ActorContext, name: str) -> NullSink:
        """No configuration."""
        return cls(name)

    async def run(self, ports: Ports) -> None:
        """Receive and discard."""
        async for _ in ports.input("in"):
            pass
