"""MD5, SHA1 and SHA256 of a file in one read."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import BinaryIO, Final

CHUNK: Final = 1 << 20


class HashTimeout(TimeoutError):
    """Hashing ran past its deadline (a slow disk, a huge or growing file)."""


def hash_stream(stream: BinaryIO, *, deadline: float | None = None,
                max_bytes: int | None = None) -> dict[str, str]:
    """``{"md5", "sha1", "sha256"}`` hex digests of ``stream`` from its current position.

    ``deadline`` is a ``time.monotonic()`` value; past it :class:`HashTimeout`
    is raised between chunks. ``max_bytes`` stops a file that grows while it
    is read from holding a worker forever (``ValueError`` past the limit).
    """
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    total = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    readinto: Callable[[bytearray], int | None] = getattr(stream, "readinto")  # noqa: B009 - BinaryIO lacks it
    while True:
        n = readinto(buf)
        if not n:
            break
        chunk = view[:n]
        # hashlib releases the GIL for updates over 2 KiB, so other threads
        # (and the trio loop) keep running while a big file is hashed.
        md5.update(chunk)
        sha1.update(chunk)
        sha256.update(chunk)
        total += n
        if max_bytes is not None and total > max_bytes:
            raise ValueError(f"file grew past {max_bytes} bytes while hashing")
        if deadline is not None and time.monotonic() > deadline:
            raise HashTimeout(f"hashing exceeded its deadline after {total} bytes")
    return {"md5": md5.hexdigest(), "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest()}


def hash_path(path: str, *, deadline: float | None = None, max_bytes: int | None = None) -> dict[str, str]:
    """:func:`hash_stream` over the file at ``path``."""
    with open(path, "rb") as fh:
        return hash_stream(fh, deadline=deadline, max_bytes=max_bytes)
