"""On-disk cache of compiled Sigma rules: data only, checked, private to root.

One cache file per rule configuration (the rule paths and placeholders),
``sigma-<digest>.rules`` in the cache directory. It holds a fixed header and
a msgpack payload (:mod:`edr.detect.sigma.codec`)::

    magic     16 bytes  b"EDR-SIGMA-RULES\\n"
    version    4 bytes  FORMAT_VERSION, big-endian
    engine    32 bytes  SHA-256 of this engine's code and the pySigma version
    length     8 bytes  payload length, big-endian
    digest    32 bytes  SHA-256 of the payload
    payload   msgpack   :class:`~edr.detect.sigma.codec.Payload`

Nothing in the file is executed: the payload is decoded by msgspec against
declared wire forms and every object is rebuilt through its constructor. The
file is read only through :class:`~edr.platform.private_files.PrivateDir`: the directory
and every one above it must be owned by root (or the agent's user) and not
writable by group or others, and the file must be a regular file (not a
link) with the same owner and not writable by others; it is written
atomically (a new 0600 file, fsync, rename). A file that fails any check (or
whose magic, version, length or digest is wrong) is ignored with a warning
naming the path and the reason, and the rules are compiled from source as if
there were no cache; a file written by another engine build is ignored
quietly. Writing failures are warnings too: the cache never stops the agent.

What is reused: when every rule file's path and content digest and the
configuration match (the payload's ``key``), the whole set; otherwise each
rule file whose path and content digest are unchanged, so editing one rule
file recompiles that file only (:func:`edr.detect.sigma.ruleset.compile_sources`).
The payload also records each rule file's status (device, inode, size,
modification and change times) when its digest was taken: a file found with
that status is not read to be digested again. That trusts the status as far
as the file itself is trusted: what could set a file's change time back
(the clock) or write it unnoticed could as well change the rules.
Each rule file's entry is a msgpack document of its own inside the payload:
it is checked and decoded on its own, and the entry of an unchanged file is
copied into the next cache file as it was read, not encoded again.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import stat
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import msgspec

from edr.detect.sigma import codec
from edr.detect.sigma.loader import find_rule_files
from edr.detect.sigma.logsources import Route
from edr.detect.sigma.ruleset import CompileProgress, RuleFile, RuleSet, Sources, assemble, compile_sources
from edr.platform.private_files import PrivateDir

log = logging.getLogger(__name__)

MAGIC: Final = b"EDR-SIGMA-RULES\n"
#: Bumped whenever the payload's wire forms change; 1 was the pickle of earlier versions.
FORMAT_VERSION: Final = 2
#: magic, format version, engine digest, payload length, payload SHA-256
HEADER: Final = struct.Struct(">16sI32sQ32s")
#: A payload larger than this is refused unread (the full SigmaHQ set takes about 10 MB).
MAX_PAYLOAD: Final = 1 << 30


class CacheError(Exception):
    """Why a cache file cannot be used; the message names the file."""


class StaleCache(CacheError):
    """A sound cache file of another engine build: not an error, just not reusable."""


def _pysigma_version() -> str:
    """pySigma's version, from the name of its ``.dist-info`` directory on ``sys.path`` (as pip installs it).

    Read so rather than with :mod:`importlib.metadata`, whose import (email,
    csv, zipfile...) cost 20-35 ms of every start from the cache; that is the
    fallback for an installation without such a directory.
    """
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            folded = name.lower()
            if folded.startswith("pysigma-") and folded.endswith(".dist-info"):
                return name[len("pysigma-"):-len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version("pysigma")
    except metadata.PackageNotFoundError:  # pragma: no cover - pySigma is a dependency
        return "unknown"


def engine_digest() -> bytes:
    """SHA-256 of this package's source code and the pySigma version.

    Any change of the compiler or of pySigma may change what a rule compiles
    to, so a cache written by another build is never reused.
    """
    digest = hashlib.sha256(f"{FORMAT_VERSION}\0{_pysigma_version()}\0".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0")
        digest.update(hashlib.sha256(source.read_bytes()).digest())
    return digest.digest()


def config_digest(paths: list[str], placeholders: dict[str, list[str]] | None) -> str:
    """Hex digest of what a configuration compiles its rules with: the rule paths and placeholders."""
    text = json.dumps({"paths": list(paths), "placeholders": placeholders or {}}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def set_key(config: str, sources: Sources) -> str:
    """Hex digest of a configuration and the path and content digest of each of its rule files."""
    digest = hashlib.sha256(config.encode() + b"\0")
    for path, content in zip(sources.files, sources.digests, strict=True):
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0" + content.encode() + b"\0")
    for missing in sources.missing:
        digest.update(b"missing\0" + missing.path.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def file_name(config: str) -> str:
    """The cache file of a configuration (see :func:`config_digest`)."""
    return f"sigma-{config[:32]}.rules"


def pack(payload: bytes, engine: bytes) -> bytes:
    """Header and ``payload``: the bytes of a cache file."""
    return HEADER.pack(MAGIC, FORMAT_VERSION, engine, len(payload), hashlib.sha256(payload).digest()) + payload


def unpack(data: bytes, engine: bytes) -> bytes:
    """The payload of cache file bytes ``data`` after checking its header (raises :class:`CacheError`).

    A sound file of another engine build raises :class:`StaleCache`.
    """
    if len(data) < HEADER.size:
        raise CacheError(f"truncated: {len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, version, written_by, length, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CacheError(f"not a Sigma rule cache (starts with {magic!r})")
    if version != FORMAT_VERSION:
        raise CacheError(f"format version {version}, this agent reads version {FORMAT_VERSION}")
    payload = data[HEADER.size:]
    if len(payload) != length:
        raise CacheError(f"truncated or padded: {len(payload)} payload bytes where the header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise CacheError("the payload's SHA-256 does not match the header's (corrupt)")
    if written_by != engine:
        raise StaleCache("written by another build of the Sigma engine or pySigma")
    return payload


def _read(directory: PrivateDir, name: str) -> bytes | None:
    """The bytes of ``name`` if the trust checks pass; None when absent (raises OSError otherwise)."""
    try:
        fd = directory.open_read(name)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > HEADER.size + MAX_PAYLOAD:
            raise CacheError(f"{size} bytes, more than a rule cache can be")
        return fh.read()


def load(cache_dir: str, name: str, engine: bytes) -> codec.Payload | None:
    """The checked payload of cache file ``name``, or None (absent, stale, or refused with a warning).

    Never raises: a cache that cannot be used only means compiling from source.
    """
    path = Path(cache_dir) / name
    directory = PrivateDir(cache_dir, create=False)
    try:
        data = _read(directory, name)
        if data is None:
            return None
        return codec.decode(unpack(data, engine))
    except FileNotFoundError:
        return None  # no cache directory yet
    except StaleCache as exc:
        log.info("Sigma rule cache %s %s; compiling the rules from source", path, exc)
    except (OSError, CacheError) as exc:  # UnsafePath is an OSError naming the path, the problem and the fix
        log.warning("ignoring Sigma rule cache %s: %s; compiling the rules from source", path, exc)
    except codec.CodecError as exc:
        log.warning("ignoring Sigma rule cache %s: undecodable payload: %s; compiling the rules from source",
                    path, exc)
    finally:
        directory.close()
    return None


def store(cache_dir: str, name: str, engine: bytes, payload: bytes) -> None:
    """Write cache file ``name`` atomically, 0600 in a private directory; failures are logged, not raised."""
    directory = PrivateDir(cache_dir)
    try:
        directory.write_atomic(name, pack(payload, engine))
        _remove_pickles(directory)
    except OSError as exc:
        log.warning("not writing Sigma rule cache %s: %s", Path(cache_dir) / name, exc)
    finally:
        directory.close()


def _remove_pickles(directory: PrivateDir) -> None:
    """Delete the pickled caches of earlier versions: code in a file is what this format replaces."""
    fd = directory.fd()
    for entry in os.listdir(fd):
        if entry.startswith("sigma-") and entry.endswith(".pickle"):
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                    os.unlink(entry, dir_fd=fd)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for building many long-lived objects at once.

    Rebuilding the full SigmaHQ set makes ~100,000 objects that live as long
    as the agent; the collector would traverse them again every few hundred
    allocations, which made decoding 3-5 times slower (measured). They hold
    no garbage cycles, so nothing is left for it to find afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_ruleset(paths: list[str], *, placeholders: dict[str, list[str]] | None, fed: Iterable[Route],
                 cache_dir: str, workers: int | None = None,
                 progress: CompileProgress | str | None = None) -> RuleSet:
    """The compiled rule set of ``paths``, from the cache in ``cache_dir`` where it is still valid.

    A full hit (every rule file unchanged) decodes the stored set; otherwise
    the unchanged files are reused and the others parsed and compiled (by
    ``workers`` processes when there are many, see
    :func:`~edr.detect.sigma.ruleset.compile_sources`), and the cache file is
    written again. A file whose status is the one the cache recorded with its
    digest is not read to be digested again. ``report.cached`` tells a full
    hit, ``report.files_parsed`` how many files were compiled; ``progress``
    hears how many (see :func:`~edr.detect.sigma.ruleset.compile_sources`).
    """
    found, missing = find_rule_files(paths)
    config = config_digest(paths, placeholders)
    name = file_name(config)
    engine = engine_digest()
    reuse: dict[tuple[str, str], RuleFile] = {}
    known: dict[tuple[str, str], msgspec.Raw] = {}
    with _collector_paused():
        stored = load(cache_dir, name, engine)
        if stored is not None and stored.config != config:
            stored = None
        sources = Sources.digested(found, missing, stored.statuses() if stored is not None else {})
        key = set_key(config, sources)
        if stored is not None:
            try:
                files, correlations, failures = stored.build()
            except codec.CodecError as exc:
                log.warning("ignoring Sigma rule cache %s: %s; compiling the rules from source",
                            Path(cache_dir) / name, exc)
            else:
                if stored.key == key:
                    ruleset = assemble(sources, files, correlations, failures, fed)
                    ruleset.report.cached = True
                    _record_statuses(cache_dir, name, engine, stored, sources)
                    return ruleset
                reuse = {(f.path, f.digest): f for f in files if f.digest}
                known = {(f.path, f.digest): raw for f, raw in zip(files, stored.files, strict=True) if f.digest}
        del stored  # the wire forms: only the objects built from them are kept
    ruleset, stable = compile_sources(sources, placeholders=placeholders, fed=fed, reuse=reuse, known=known,
                                      workers=workers, progress=progress)
    if not stable:
        log.info("Sigma rule files changed while they were compiled: not caching this rule set")
        return ruleset
    try:
        payload = codec.encode(codec.Payload.of(ruleset, config=config, key=key, known=known, sources=sources))
    except codec.CodecError as exc:
        log.warning("not writing Sigma rule cache %s: %s", Path(cache_dir) / name, exc)
        return ruleset
    store(cache_dir, name, engine, payload)
    return ruleset


def _record_statuses(cache_dir: str, name: str, engine: bytes, stored: codec.Payload, sources: Sources) -> None:
    """Write the cache file again if the files' statuses changed but not their content (``touch``, a checkout).

    Otherwise each later start would read and digest those files again.
    """
    statuses = codec.statuses_of(sources)
    if statuses != stored.stats:
        store(cache_dir, name, engine, codec.encode(msgspec.structs.replace(stored, stats=statuses)))
