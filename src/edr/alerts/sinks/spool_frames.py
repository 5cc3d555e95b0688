"""The record framing of a sink's spool: length + checksum per record, and a scanner that survives garbage, sans-IO.

A spool segment is a sequence of frames, each::

    magic    4 bytes  b"eSP1"
    length   4 bytes  little-endian, bytes of payload (at most MAX_RECORD)
    crc      4 bytes  little-endian CRC-32 of the 4 length bytes followed by the payload
    payload  `length` bytes

The checksum covers the length too, so a length damaged in any way fails it
(and a length beyond :data:`MAX_RECORD` is refused before anything is read).

:func:`scan` splits a buffer into records. What is not a valid frame is
*skipped*, never merged into a record: from a bad position it looks for the
next magic whose frame checks out and reports the bytes in between as one
skipped region. A frame that runs past the end of the buffer is undecided
until more data comes (``final=False``); at the real end of a segment
(``final=True``) it is a torn write, left by a crash in the middle of an
append, and is skipped like any other garbage. A torn frame is only ever the
last thing in a segment: the spool never appends to a segment it did not
create in this run, so nothing follows a crash's partial write.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Final

import attrs

MAGIC: Final = b"eSP1"
HEADER: Final = struct.Struct("<4sII")
HEADER_SIZE: Final = HEADER.size
_LENGTH: Final = struct.Struct("<I")
#: The largest payload a frame may carry; a longer length field is damage, not a record.
MAX_RECORD: Final = 16 << 20


def frame(payload: bytes) -> bytes:
    """One frame carrying ``payload`` (raises ValueError beyond :data:`MAX_RECORD`)."""
    n = len(payload)
    if n > MAX_RECORD:
        raise ValueError(f"a spool record holds at most {MAX_RECORD} bytes, not {n}")
    length = _LENGTH.pack(n)
    return b"%b%b%b%b" % (MAGIC, length, _LENGTH.pack(zlib.crc32(payload, zlib.crc32(length))), payload)


def frames(payloads: Iterable[bytes]) -> bytes:
    """The frames of ``payloads``, back to back."""
    return b"".join(frame(p) for p in payloads)


@attrs.frozen
class Scan:
    """What :func:`scan` found in a buffer.

    ``records``: ``(start, end)`` of each valid frame (start of its header,
    end of its payload), in order; ``payloads``: their payloads;
    ``skipped``: ``(start, end)`` of each region that is no frame (damage, a
    torn write); ``consumed``: the position up to which everything is
    decided (records and skipped regions end there or before; what follows
    needs more data). Positions are relative to the buffer.
    """

    records: list[tuple[int, int]]
    payloads: list[bytes]
    skipped: list[tuple[int, int]]
    consumed: int


def _frame_at(buf: bytes | memoryview, pos: int) -> int | None:
    """The end of a valid frame at ``pos``; -1 when it needs bytes beyond the buffer; None when it is no frame."""
    size = len(buf)
    if size - pos < HEADER_SIZE:
        # A prefix of the magic may be the start of a frame still being read.
        have = bytes(buf[pos:pos + 4])
        return -1 if MAGIC.startswith(have) else None
    magic, length, crc = HEADER.unpack_from(buf, pos)
    if magic != MAGIC or length > MAX_RECORD:
        return None
    end = pos + HEADER_SIZE + length
    if end > size:
        return -1
    if zlib.crc32(buf[pos + HEADER_SIZE:end], zlib.crc32(_LENGTH.pack(length))) != crc:
        return None
    return end


def _resync(buf: bytes | memoryview, start: int, final: bool) -> tuple[int, bool]:
    """The next position after ``start`` where a valid frame begins: ``(pos, True)``; ``(pos, False)`` when
    from ``pos`` on nothing can be decided without more data (or, at the end, nothing is left).

    With ``final``, a frame that would run past the end is no frame and the
    search goes on; without, it may be one still being read, so the search
    stops there (a record's payload is never searched for frames).
    """
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    pos = start + 1
    while True:
        found = data.find(MAGIC, pos)
        if found < 0:
            if not final:
                # The buffer may end in a prefix of the magic: keep those bytes undecided.
                for keep in range(min(3, len(data) - pos), 0, -1):
                    if MAGIC.startswith(data[len(data) - keep:]):
                        return len(data) - keep, False
            return len(data), False
        end = _frame_at(data, found)
        if end is None or (end == -1 and final):
            pos = found + 1
            continue
        return found, end > 0


def scan(buf: bytes | memoryview, *, final: bool) -> Scan:
    """Split ``buf`` into valid frames and skipped regions (see the module's notes).

    ``final``: ``buf`` runs to the end of its segment, so a frame cut short
    is a torn write (skipped) rather than one that needs more data.
    """
    records: list[tuple[int, int]] = []
    payloads: list[bytes] = []
    skipped: list[tuple[int, int]] = []
    size = len(buf)
    pos = 0
    while pos < size:
        end = _frame_at(buf, pos)
        if end is not None and end > 0:
            records.append((pos, end))
            payloads.append(bytes(buf[pos + HEADER_SIZE:end]))
            pos = end
            continue
        if end == -1 and not final:
            break  # cut short by the buffer: decided once the rest of the segment is read
        nxt, valid = _resync(buf, pos, final)
        if not valid and final:
            nxt = size
        if not valid and not final:
            # Garbage up to nxt, then bytes that may be the start of a frame: decide those later.
            if nxt > pos:
                skipped.append((pos, nxt))
            pos = nxt
            break
        skipped.append((pos, nxt))
        pos = nxt
    return Scan(records=records, payloads=payloads, skipped=skipped, consumed=pos)
