"""EVTX chunks whose tables would make the parser spin for ever, and their repair.

Each 64 KiB chunk of an EVTX file holds a string table (64 buckets) and a
template table (32 buckets) in its header; each bucket starts a chain of
entries, the first 4 bytes of an entry being the chunk offset of the next
(0 ends the chain). The ``evtx`` parser follows those chains when it opens a
chunk and stops only at 0 or at a link to the entry itself: one flipped byte
that makes a chain loop through two entries or more (found by
``scripts/fuzz_replay.py``) makes it loop for ever, growing its memory and
holding the GIL, so that neither the replay nor its signal handling ever
runs again.

:func:`without_link_loops` finds such loops before the parser sees the file
and cuts each where it closes (the link is set to 0, the end of a chain), in
an in-memory copy: the chunk's records are then read as they would have been,
only the entries beyond the cut are missing from the table, and the parser
reads those from the records themselves.
"""

from __future__ import annotations

import io
from typing import BinaryIO, Final

FILE_HEADER: Final = 4096
CHUNK: Final = 65536
CHUNK_MAGIC: Final = b"ElfChnk\0"
#: (table, chunk offset of its first bucket, buckets)
_TABLES: Final = (("string", 0x80, 64), ("template", 0x180, 32))
_CHUNK_HEADER: Final = 512


def cut_link_loops(chunk: bytearray) -> list[str]:
    """Cut every loop of the string and template chains of ``chunk`` (in place); what was cut.

    A chunk without the chunk signature, or too short for its header, is left
    alone: the parser refuses it by itself. A link out of the chunk ends the
    walk there: the parser reports that one as an error too.
    """
    cuts: list[str] = []
    if len(chunk) < _CHUNK_HEADER or not chunk.startswith(CHUNK_MAGIC):
        return cuts
    for table, first, buckets in _TABLES:
        for bucket in range(buckets):
            link = first + 4 * bucket  # where the offset of the next entry is kept
            seen: set[int] = set()
            while (entry := int.from_bytes(chunk[link:link + 4], "little")) and entry + 4 <= len(chunk):
                if entry in seen:
                    chunk[link:link + 4] = bytes(4)
                    cuts.append(f"its {table} table links loop back to offset {entry}")
                    break
                seen.add(entry)
                link = entry
    return cuts


def without_link_loops(fh: BinaryIO) -> tuple[BinaryIO, list[str]]:
    """``fh`` (at its start) if no chunk of it has a looping chain; else a repaired copy, and what was cut.

    Reads the whole file once, a chunk at a time; only a damaged file is
    copied into memory.
    """
    repairs: list[tuple[int, bytearray]] = []
    notes: list[str] = []
    fh.seek(FILE_HEADER)
    index = 0
    while chunk := fh.read(CHUNK):
        data = bytearray(chunk)
        cuts = cut_link_loops(data)
        if cuts:
            repairs.append((FILE_HEADER + index * CHUNK, data))
            notes.extend(f"EVTX chunk {index}: {cut}; the loop is cut" for cut in cuts)
        index += 1
    fh.seek(0)
    if not repairs:
        return fh, notes
    copy = io.BytesIO(fh.read())
    fh.seek(0)
    for offset, data in repairs:
        copy.seek(offset)
        copy.write(data)
    copy.seek(0)
    return copy, notes
