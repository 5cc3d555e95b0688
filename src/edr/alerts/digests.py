"""Digests of alert lines computed without letting go of the GIL.

hashlib lets other threads run while it hashes 2048 bytes or more in one
call (``HASHLIB_GIL_MINSIZE``), to take the GIL back once done. An alert
line is a few KB, hashed in microseconds; but while a replay's reader pool
has threads of its own in the process, taking the GIL back waits until
another thread lets go of it (up to the switch interval, 5 ms, or an OS
time slice on a busy machine): 1,206 alerts of the attack samples cost the
writer 0.08-0.7 s of waiting for 0.02 s of hashing. Fed in pieces below the
threshold, the hash keeps the GIL: the same digest, no waiting.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Protocol

#: The largest piece hashlib hashes without releasing the GIL (its threshold is 2048 bytes).
PIECE: Final = 2047


def sha256_hex(data: bytes) -> str:
    """``hashlib.sha256(data).hexdigest()``, the GIL kept throughout."""
    digest = hashlib.sha256()
    _feed(digest, data)
    return digest.hexdigest()


def hmac_sha256_hex(key: bytes, data: bytes) -> str:
    """``hmac.digest(key, data, "sha256").hex()``, the GIL kept throughout."""
    digest = hmac.new(key, digestmod="sha256")
    _feed(digest, data)
    return digest.hexdigest()


def blake2b_hex(data: bytes, digest_size: int) -> str:
    """``hashlib.blake2b(data, digest_size=digest_size).hexdigest()``, the GIL kept throughout."""
    digest = hashlib.blake2b(digest_size=digest_size)
    _feed(digest, data)
    return digest.hexdigest()


class _Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _feed(digest: _Digest, data: bytes) -> None:
    if len(data) <= PIECE:
        digest.update(data)
        return
    view = memoryview(data)
    for start in range(0, len(view), PIECE):
        digest.update(view[start:start + PIECE])
