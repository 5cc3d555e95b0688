"""The replay normalizer: recorded records (NDJSON lines, Windows event records) -> Events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import orjson

from edr.event import RECORD_DECODER, Event, RecordError, RejectedRecord, event_from_record
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.errlog import ErrorLog
from edr.runtime.transform import transform
from edr.sources.replay.parallel import DecodeFailure

#: A decoder turns one raw record of its format into events; it may raise
#: ValueError (or a subclass, such as RecordError), KeyError or TypeError for
#: malformed input, which is reported with the reason and skipped.
Decoder = Callable[[Any, str, int], "Event | list[Event] | None"]
#: What a decoder raises for bad input: the record is rejected with the message as reason.
BAD_RECORD = (ValueError, KeyError, TypeError)
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
    from edr.sources.replay.winlog import winlog_record_to_event

    return winlog_record_to_event(record, path)


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
    path, number)`` tuples from the replay source (``number`` is the line of
    an NDJSON or evtx JSON file, the record of an EVTX file), or
    already-built Events (passed through). A payload that is a
    :class:`~edr.event.RejectedRecord` is a record its reader could not
    read (or a reader process's decoder refused); a
    :class:`~edr.sources.replay.parallel.DecodeFailure` is a decoder error
    of a reader process. Bad records are logged with file and line or record and the reason
    (the first ``MAX_REPORTED`` per file), counted in ``rejected`` and
    skipped. A decoder that raises anything but :data:`BAD_RECORD` has a bug
    the record revealed: the record is skipped all the same, counted in
    ``errors`` too and logged with its traceback, and decoding goes on.
    """

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, log: logging.Logger) -> None:
        super().__init__(name)
        self.log = log
        self.decoded = 0
        self.errors = 0
        # per file: the first MAX_REPORTED bad records are logged, the rest counted
        self._bad = ErrorLog(log, "bad records", MAX_REPORTED)
        # one origin per file, shared by its events (the line is Event.line)
        self._origins: dict[str, dict[str, Any]] = {}

    @property
    def rejected(self) -> int:
        """Records skipped (bad records and decoder errors)."""
        return self._bad.total

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
            if type(payload) is RejectedRecord:
                self._reject(fmt, path, number, payload.reason)
                continue
            if type(payload) is DecodeFailure:
                self._failed_in_worker(fmt, path, number, payload)
                continue
            try:
                result = decoders[fmt](payload, path, number)
            except BAD_RECORD as exc:
                self._reject(fmt, path, number, str(exc))
                continue
            except Exception as exc:
                self._error(fmt, path, number, exc)
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
            except (ValueError, RecursionError):
                # Blank, malformed or unusual: the full route says why, with file and line.
                # msgspec stops at Python's recursion limit (RecursionError) on deep nesting;
                # the full route's orjson has a fixed depth limit and says so.
                try:
                    slow = decode_ndjson(line, path, number)
                except BAD_RECORD as exc:
                    self._reject("ndjson", path, number, str(exc))
                except Exception as exc:
                    self._error("ndjson", path, number, exc)
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

    def _reject(self, fmt: str, path: str, number: int, reason: str) -> None:
        self._bad.report("replay: %s: skipped: %s", _where(fmt, path, number), reason, key=path,
                         level=logging.WARNING)

    def _error(self, fmt: str, path: str, number: int, exc: Exception) -> None:
        self.errors += 1
        self._bad.report("replay: %s: skipped: decoding failed: %s: %s", _where(fmt, path, number),
                         type(exc).__name__, exc, key=path, exc_info=True)

    def _failed_in_worker(self, fmt: str, path: str, number: int, failure: DecodeFailure) -> None:
        """A decoder error of a reader process (:mod:`~edr.sources.replay.parallel`), reported as :meth:`_error`."""
        self.errors += 1
        self._bad.report("replay: %s: skipped: decoding failed: %s: %s\n%s", _where(fmt, path, number),
                         failure.error, failure.message, failure.trace.rstrip(), key=path)

    async def run(self, ports: Ports) -> None:
        """Decode each batch and pass it on."""
        await transform(ports, self.decode)

    def statistics(self) -> dict[str, Any]:
        """Decoded and rejected records, and how many of the rejections were decoder errors."""
        return {"decoded": self.decoded, "rejected": self.rejected, "errors": self.errors}


def _where(fmt: str, path: str, number: int) -> str:
    """Where a record is: ``path:line``, or ``path: record N`` in an EVTX file (which has no lines)."""
    return f"{path}: record {number}" if fmt == "evtx" else f"{path}:{number}"

