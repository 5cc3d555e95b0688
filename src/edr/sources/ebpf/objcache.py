"""The compiled sensor, from the agent's cache when nothing it depends on changed, else from a compile child.

The cache is one file, ``ebpf-sensor.json`` in the agent's cache directory
(``[sigma] cache_dir``): a header line ``EDR-BPF-OBJECT <sha256 of the
rest>`` then a :class:`~edr.sources.ebpf.objfile.CompiledObject` as JSON,
data only (the digest catches a torn or damaged file before it is
decoded).  Root loads what it holds into the kernel, so it is trusted only
as far as the agent itself: it is read and written through
:class:`~edr.platform.private_files.PrivateDir` (a root-owned directory
not writable by others, every directory above it checked, the file opened
without following links, owned by root or the agent's user and not writable
by others; written atomically, 0600).  The kernel's verifier still checks
every program it holds.

The cache key (:func:`cache_key`) is a SHA-256 over everything the
instructions depend on: sensor.c's bytes, the compile flags, the kernel
(``uname -r`` and ``uname -v``), bcc's version, and the ``format`` file of
every tracepoint sensor.c names (bcc compiles each program's ``args->field``
into loads at that layout's offsets).  A file whose key differs, or that is
unreadable, foreign, a link, corrupt or inconsistent, is logged naming the
file and why, and the sensor is compiled again in a child
(:func:`edr.sources.ebpf.compile.compile_in_child`); it never stops the
agent.  Without a cache directory, every start compiles in a child.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from edr.platform.private_files import PrivateDir
from edr.sources.ebpf import loader, objfile

log = logging.getLogger(__name__)

CACHE_NAME = "ebpf-sensor.json"
#: The object of the whole sensor is about 1 MB; anything far larger is not one.
MAX_BYTES = 64 << 20
MAGIC = b"EDR-BPF-OBJECT "
_TRACEPOINT_PROBE = re.compile(rb"TRACEPOINT_PROBE\(\s*(\w+)\s*,\s*(\w+)\s*\)")


def bcc_version() -> str:
    """bcc's version, read from its ``version.py`` without importing bcc (which maps LLVM); "" when absent."""
    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        return ""
    if spec is None or not spec.submodule_search_locations:
        return ""
    for location in spec.submodule_search_locations:
        try:
            text = Path(location, "version.py").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
        if match:
            return match[1]
    return ""


def source_tracepoints(source: bytes) -> list[tuple[str, str]]:
    """Every ``TRACEPOINT_PROBE(category, event)`` the source names, sorted (compiled in or not)."""
    return sorted({(m[1].decode(), m[2].decode()) for m in _TRACEPOINT_PROBE.finditer(source)})


def _format_bytes(category: str, event: str, roots: Iterable[str]) -> bytes:
    for root in roots:
        try:
            with open(os.path.join(root, "events", category, event, "format"), "rb") as fh:
                return fh.read()
        except OSError:
            continue
    return b"(absent)"


def cache_key(source: bytes, cflags: list[str], *, release: str | None = None, version: str | None = None,
              bcc: str | None = None, roots: Iterable[str] = loader.TRACEFS_ROOTS) -> str:
    """SHA-256 (hex) of what the compiled instructions depend on (see the module's docstring)."""
    uname = os.uname()
    h = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        # length-prefixed, so no two different inputs hash the same stream
        h.update(f"{label}:{len(data)}:".encode())
        h.update(data)

    part("format", str(objfile.FORMAT_VERSION).encode())
    part("source", source)
    part("cflags", "\0".join(cflags).encode())
    part("release", (uname.release if release is None else release).encode())
    part("version", (uname.version if version is None else version).encode())
    part("bcc", (bcc_version() if bcc is None else bcc).encode())
    roots = tuple(roots)
    for category, event in source_tracepoints(source):
        part(f"tracepoint {category}/{event}", _format_bytes(category, event, roots))
    return h.hexdigest()


def pack(payload: bytes) -> bytes:
    """The header line (magic and the payload's SHA-256) and the payload."""
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _unpack(data: bytes) -> bytes:
    header, newline, payload = data.partition(b"\n")
    if not newline or not header.startswith(MAGIC):
        raise objfile.ObjectError("not a compiled sensor (no EDR-BPF-OBJECT header)")
    if header[len(MAGIC):] != hashlib.sha256(payload).hexdigest().encode():
        raise objfile.ObjectError("its SHA-256 does not match its header (corrupt or truncated)")
    return payload


def load(cache_dir: str, key: str) -> objfile.CompiledObject | None:
    """The cached object built for ``key``, or None (absent, stale or refused: logged naming the file).

    Never raises: a cache that cannot be used only means compiling again.
    """
    path = Path(cache_dir) / CACHE_NAME
    directory = PrivateDir(cache_dir, create=False)
    try:
        try:
            fd = directory.open_read(CACHE_NAME)
        except FileNotFoundError:
            return None   # no directory or no file yet: the first start
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            log.warning("ignoring the compiled BPF sensor %s: larger than %d bytes; compiling it again",
                        path, MAX_BYTES)
            return None
        obj = objfile.decode(_unpack(data))
    except OSError as exc:  # UnsafePath is an OSError naming the path, the problem and the fix
        log.warning("ignoring the compiled BPF sensor %s: %s; compiling it again", path, exc)
        return None
    except objfile.ObjectError as exc:
        log.warning("ignoring the compiled BPF sensor %s: %s; compiling it again", path, exc)
        return None
    finally:
        directory.close()
    if obj.key != key:
        log.info("the compiled BPF sensor %s was built for other sources, flags, kernel or bcc; "
                 "compiling it again", path)
        return None
    return obj


def store(cache_dir: str, obj: objfile.CompiledObject) -> None:
    """Write the object atomically (0600, private directory); failures are logged, not raised."""
    directory = PrivateDir(cache_dir)
    try:
        directory.write_atomic(CACHE_NAME, pack(objfile.encode(obj)))
    except OSError as exc:
        log.warning("not writing the compiled BPF sensor %s: %s", Path(cache_dir) / CACHE_NAME, exc)
    finally:
        directory.close()


def status(cache_dir: str, cflags: list[str]) -> tuple[bool, str]:
    """Whether a cached build matching this kernel and these flags exists, and a sentence saying so."""
    if not cache_dir:
        return False, "no cache directory ([sigma] cache_dir is empty): the sensor is compiled at every start"
    path = Path(cache_dir) / CACHE_NAME
    key = cache_key(loader.SOURCE_PATH.read_bytes(), cflags)
    obj = load(cache_dir, key)
    if obj is None:
        return False, f"no cached build of the sensor for this kernel and configuration in {path}"
    return True, f"{path} matches this kernel and configuration ({len(obj.programs)} programs)"


def compiled_object(cflags: list[str], cache_dir: str, *, refresh: bool = False,
                    ) -> tuple[objfile.CompiledObject, bool]:
    """The compiled sensor for ``cflags`` and whether it came from the cache.

    On a miss (or with ``refresh``: the cached build was refused by the
    kernel) the sensor is compiled in a child process (seconds; this
    process never imports bcc) and, with a cache directory, stored for the
    next start.  Raises :class:`~edr.sources.ebpf.errors.SensorUnavailable`
    when the child cannot compile it.
    """
    from edr.sources.ebpf.compile import compile_in_child

    key = cache_key(loader.SOURCE_PATH.read_bytes(), cflags)
    if cache_dir and not refresh:
        cached = load(cache_dir, key)
        if cached is not None:
            return cached, True
    obj = compile_in_child(cflags, key)
    if cache_dir:
        store(cache_dir, obj)
    return obj, False
