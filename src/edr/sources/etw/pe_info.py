"""PE metadata and hashes of process images, as Sysmon reports them, cached by file identity.

Sysmon's process_creation carries ``Hashes`` (``MD5=...,SHA1=...,SHA256=...,IMPHASH=...``)
and, from the image's version resource, ``OriginalFileName``, ``Description``
(FileDescription), ``Product`` (ProductName) and ``Company`` (CompanyName).
:func:`read_pe_info` computes them with pefile (platform independent, so this
is tested on Linux with a real PE file). Reading and hashing is disk I/O:
:class:`PeInfoCache` runs it in its own worker threads and remembers the
result under the file's identity (device, inode/file index, size, mtime), so
a binary started a thousand times is read once and a replaced binary is read
again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Final

import attrs

from edr.sources.etw.caches import BoundedMap

log = logging.getLogger("edr.etw")

_CHUNK: Final = 1 << 20
#: version-resource key -> Sysmon field
_VERSION_FIELDS: Final = {
    "OriginalFilename": "OriginalFileName",
    "FileDescription": "Description",
    "ProductName": "Product",
    "CompanyName": "Company",
    "FileVersion": "FileVersion",
}


@attrs.frozen
class PeInfo:
    """What Sysmon adds about an image: hashes and version-resource strings (unknown ones absent)."""

    md5: str
    sha1: str
    sha256: str
    imphash: str = ""
    version: dict[str, str] = attrs.field(factory=dict)

    @property
    def hashes(self) -> str:
        """Sysmon's ``Hashes`` value (``IMPHASH`` only when the image has an import table)."""
        text = f"MD5={self.md5.upper()},SHA1={self.sha1.upper()},SHA256={self.sha256.upper()}"
        return f"{text},IMPHASH={self.imphash.upper()}" if self.imphash else text

    def fields(self) -> dict[str, str]:
        """The Sysmon fields this info fills."""
        out = {"Hashes": self.hashes}
        out.update(self.version)
        return out


class PeError(ValueError):
    """A file that could not be read or hashed; the message names it."""


def read_pe_info(path: str, max_bytes: int = 64 << 20) -> PeInfo:
    """Hash ``path`` and read its version resource (blocking I/O; raises :class:`PeError`)."""
    import pefile

    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise PeError(f"{path}: {size} bytes, over the {max_bytes}-byte limit")
        md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise PeError(f"{path}: {exc.strerror or exc}") from None
    for h in (md5, sha1, sha256):
        h.update(data)
    imphash = ""
    version: dict[str, str] = {}
    try:
        pe = pefile.PE(data=data, fast_load=True)
        pe.parse_data_directories(directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"],
        ])
        imphash = pe.get_imphash() or ""
        for info in getattr(pe, "FileInfo", None) or []:
            for entry in info:
                for table in getattr(entry, "StringTable", ()):
                    for key, value in table.entries.items():
                        name = _VERSION_FIELDS.get(key.decode("utf-8", "replace"))
                        text = value.decode("utf-8", "replace").strip()
                        if name and text and name not in version:
                            version[name] = text
        pe.close()
    except pefile.PEFormatError:
        pass  # not a PE image (a script): the hashes still count
    return PeInfo(md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest(), imphash, version)


#: A file's identity: (device, inode / file index, size, mtime in ns).
Identity = tuple[int, int, int, int]


def file_identity(path: str) -> Identity | None:
    """``os.stat`` identity of ``path`` (None when it cannot be stat'ed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PeInfoCache:
    """PE info per file identity, computed in worker threads; :meth:`lookup` waits at most a deadline.

    ``local_path`` maps an event's path to one this host can open (identity on
    Windows; a test maps ``C:\\...`` into a directory). A lookup first stats
    the file (cheap), answers from the cache, else starts the read in a
    worker and waits up to ``wait`` seconds: an answer that comes later still
    fills the cache for the next start of that image, and the event goes on
    without it (counted in ``late``). Never raises.
    """

    def __init__(self, *, capacity: int = 4096, workers: int = 2, max_bytes: int = 64 << 20,
                 local_path: Callable[[str], str | None] = lambda p: p,
                 reader: Callable[[str, int], PeInfo] = read_pe_info) -> None:
        self._cache: BoundedMap[Identity, PeInfo | None] = BoundedMap(capacity)
        self._pending: dict[Identity, concurrent.futures.Future[PeInfo | None]] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edr-pe")
        self._local_path = local_path
        self._reader = reader
        self._max = max_bytes
        self.hits = 0
        self.computed = 0
        self.late = 0
        self.errors = 0
        self.unreadable = 0

    def lookup(self, path: str, wait: float) -> PeInfo | None:
        """The info of ``path``, waiting at most ``wait`` seconds for a first read."""
        local = self._local_path(path)
        if not local:
            self.unreadable += 1
            return None
        ident = file_identity(local)
        if ident is None:
            self.unreadable += 1
            return None
        with self._lock:
            if ident in self._cache:
                self.hits += 1
                return self._cache.get(ident)
            future = self._pending.get(ident)
            if future is None:
                future = self._pool.submit(self._compute, ident, local)
                self._pending[ident] = future
        try:
            return future.result(timeout=max(wait, 0.0))
        except concurrent.futures.TimeoutError:
            self.late += 1
            return None

    def _compute(self, ident: Identity, local: str) -> PeInfo | None:
        try:
            info: PeInfo | None = self._reader(local, self._max)
            self.computed += 1
        except PeError as exc:
            log.debug("pe info: %s", exc)
            self.errors += 1
            info = None
        except Exception:
            log.exception("pe info: %s: unexpected failure", local)
            self.errors += 1
            info = None
        with self._lock:
            self._cache.set(ident, info)
            self._pending.pop(ident, None)
        return info

    def close(self) -> None:
        """Stop the workers (reads in progress finish; nothing new starts)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def statistics(self) -> dict[str, int]:
        """Cache counters."""
        return {**self._cache.statistics(), "hits": self.hits, "computed": self.computed, "late": self.late,
                "errors": self.errors, "unreadable": self.unreadable}
