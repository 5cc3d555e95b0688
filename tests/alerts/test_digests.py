"""Digests of alert lines: hashlib's, fed in pieces small enough that hashing never lets go of the GIL."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from edr.alerts import digests
from edr.alerts.chain import link_hash
from edr.alerts.sinks.document import alert_id

SIZES = (0, 1, 2046, 2047, 2048, 2049, 4094, 4095, 13_605, 100_000)


@pytest.mark.parametrize("size", SIZES)
def test_the_digests_are_hashlibs(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert digests.sha256_hex(data) == hashlib.sha256(data).hexdigest()
    assert digests.hmac_sha256_hex(b"k" * 32, data) == hmac.digest(b"k" * 32, data, "sha256").hex()
    assert digests.blake2b_hex(data, 16) == hashlib.blake2b(data, digest_size=16).hexdigest()


class Recorder:
    def __init__(self) -> None:
        self.pieces: list[int] = []

    def update(self, data: bytes | memoryview, /) -> None:
        self.pieces.append(len(data))


@pytest.mark.parametrize("size", SIZES)
def test_no_piece_is_large_enough_for_hashlib_to_release_the_gil(size: int) -> None:
    recorder = Recorder()
    digests._feed(recorder, b"x" * size)
    assert sum(recorder.pieces) == size
    assert all(piece < 2048 for piece in recorder.pieces)  # hashlib's HASHLIB_GIL_MINSIZE


def test_an_alert_lines_hash_and_id_are_what_they_were() -> None:
    # the chain's link and the alert id of a line larger than one piece: the values hashlib gives in one call
    canonical = b'{"rule.name":"' + b"x" * 5000 + b'"}'
    assert link_hash("0" * 64, canonical) == hashlib.sha256(b"0" * 64 + canonical).hexdigest()
    assert link_hash("0" * 64, canonical, b"key" * 11) == hmac.digest(b"key" * 11, b"0" * 64 + canonical,
                                                                      "sha256").hex()
    doc = {"rule.name": "x" * 5000, "event.created": "now"}
    assert alert_id(doc) == hashlib.blake2b(b'{"rule.name":"' + b"x" * 5000 + b'"}\n', digest_size=16).hexdigest()
