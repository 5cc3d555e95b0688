"""The spool's framing: records come back whole or not at all, damage is skipped and never merged."""

from __future__ import annotations

import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from edr.alerts.sinks.spool_frames import HEADER_SIZE, MAGIC, MAX_RECORD, frame, frames, scan


def test_frames_round_trip() -> None:
    payloads = [b"", b"a", b'{"rule.id":"x"}', bytes(range(256)) * 3]
    data = frames(payloads)
    found = scan(data, final=True)
    assert found.payloads == payloads
    assert found.skipped == []
    assert found.consumed == len(data)
    assert found.records[0] == (0, HEADER_SIZE)
    assert found.records[-1][1] == len(data)


def test_a_frame_cut_short_waits_for_more_data_unless_final() -> None:
    data = frames([b"one", b"two"])
    cut = data[:-2]
    pending = scan(cut, final=False)
    assert pending.payloads == [b"one"]
    assert pending.skipped == []
    assert pending.consumed == len(frame(b"one"))
    torn = scan(cut, final=True)
    assert torn.payloads == [b"one"]
    assert torn.skipped == [(len(frame(b"one")), len(cut))]  # a torn write: skipped, counted by the spool


def test_a_partial_magic_at_the_end_is_undecided_not_garbage() -> None:
    data = frame(b"x") + MAGIC[:3]
    found = scan(data, final=False)
    assert found.payloads == [b"x"] and found.skipped == [] and found.consumed == len(frame(b"x"))
    assert scan(data, final=True).skipped == [(len(frame(b"x")), len(data))]


def test_a_damaged_payload_is_skipped_and_the_next_record_kept() -> None:
    a, b, c = frame(b"first record"), frame(b"second record"), frame(b"third record")
    data = bytearray(a + b + c)
    data[len(a) + HEADER_SIZE + 3] ^= 0x20  # one bit of the second payload
    found = scan(bytes(data), final=True)
    assert found.payloads == [b"first record", b"third record"]
    assert found.skipped == [(len(a), len(a) + len(b))]


def test_a_damaged_length_is_caught_by_the_checksum() -> None:
    a, b = frame(b"abcdef"), frame(b"ghijkl")
    data = bytearray(a + b)
    data[4:8] = struct.pack("<I", 3)  # a shorter length: the payload prefix must not pass as a record
    found = scan(bytes(data), final=True)
    assert found.payloads == [b"ghijkl"]
    assert found.skipped == [(0, len(a))]


def test_a_huge_length_is_damage_not_a_read_of_gigabytes() -> None:
    payload = b"p" * 10
    bad = MAGIC + struct.pack("<I", MAX_RECORD + 1) + struct.pack("<I", 0) + payload
    good = frame(b"after")
    found = scan(bad + good, final=False)
    assert found.payloads == [b"after"]
    assert found.skipped == [(0, len(bad))]


def test_garbage_between_records_and_a_fake_magic_inside_it() -> None:
    junk = b"\x00\x01garbage" + MAGIC + b"\xff\xff\xff\x00 not a frame"
    data = frame(b"one") + junk + frame(b"two")
    found = scan(data, final=True)
    assert found.payloads == [b"one", b"two"]
    assert found.skipped == [(len(frame(b"one")), len(frame(b"one")) + len(junk))]


def test_only_garbage() -> None:
    assert scan(b"\x00" * 100, final=True).skipped == [(0, 100)]
    assert scan(b"", final=True).consumed == 0


def test_a_valid_looking_header_with_a_wrong_checksum() -> None:
    payload = b"hello"
    length = struct.pack("<I", len(payload))
    wrong = MAGIC + length + struct.pack("<I", zlib.crc32(payload) ^ 1) + payload
    assert scan(wrong + frame(b"ok"), final=True).payloads == [b"ok"]


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=12),
       damage=st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=40)), max_size=4),
       cut=st.integers(min_value=0, max_value=50))
def test_whatever_the_damage_every_record_found_is_one_that_was_written(
        payloads: list[bytes], damage: list[tuple[int, bytes]], cut: int) -> None:
    """Overwrites anywhere and a torn tail: every record found was written (never a merge of two, never a
    fragment), in order, and every record no damage touched is found."""
    data = bytearray(frames(payloads))
    touched: set[int] = set()
    for where, junk in damage:
        if not data:
            break
        at = where % len(data)
        data[at:at + len(junk)] = junk[:len(data) - at]
        touched.update(range(at, min(at + len(junk), len(data))))
    if cut:
        del data[max(0, len(data) - cut):]
        touched.add(len(data))
    found = scan(bytes(data), final=True)
    # order preserved and nothing invented
    it = iter(payloads)
    assert all(any(p == q for q in it) for p in found.payloads)
    offset = 0
    for p in payloads:
        end = offset + HEADER_SIZE + len(p)
        if end <= len(data) and not any(offset <= t < end for t in touched):
            assert (offset, end) in found.records
        offset = end
    # skipped regions and records tile what was consumed
    spans = sorted(found.records + found.skipped)
    pos = 0
    for a, b in spans:
        assert a == pos
        pos = b
    assert pos == found.consumed == len(data)
