"""On-disk cache of a compiled rule set.

The key hashes the engine version, the pySigma version, every rule file's
path and content, the placeholder table and the fed logsources, so a restart
with unchanged rules unpickles the compiled set instead of running pySigma,
and any change to a rule file (or an upgrade) rebuilds it. Cache files are
written atomically (temp file + rename); an unreadable or stale-format cache
is ignored and rebuilt, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Names the compiled format; the key also hashes this package's source code,
#: so an upgrade of the engine never reads a cache written by another version.
ENGINE_VERSION = "edr-sigma-1"


def _pysigma_version() -> str:
    try:
        return metadata.version("pysigma")
    except metadata.PackageNotFoundError:  # pragma: no cover - pySigma is a dependency
        return "unknown"


def _code_digest() -> bytes:
    """Digest of this package's source: a code change invalidates old caches too."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.digest()


def cache_key(files: list[Path], placeholders: dict[str, list[str]] | None,
              fed: frozenset[Any], extra: str = "") -> str:
    """Hex digest identifying a compiled rule set."""
    digest = hashlib.sha256()
    digest.update(f"{ENGINE_VERSION}\0{_pysigma_version()}\0{extra}\0".encode())
    digest.update(_code_digest())
    for path in files:
        digest.update(str(path.resolve()).encode("utf-8", "surrogateescape") + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"<unreadable>")
    digest.update(json.dumps(placeholders or {}, sort_keys=True).encode())
    digest.update(repr(sorted(fed, key=lambda r: tuple(p or "" for p in r))).encode())
    return digest.hexdigest()


def load(cache_dir: str, key: str) -> Any | None:
    """The cached object for ``key``, or None when absent or unreadable."""
    path = Path(cache_dir) / f"sigma-{key[:32]}.pickle"
    try:
        with path.open("rb") as fh:
            stored_key, value = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a corrupt or foreign cache file must not stop the agent
        log.warning("ignoring unreadable Sigma cache %s: %s", path, exc)
        return None
    return value if stored_key == key else None


def store(cache_dir: str, key: str, value: Any) -> None:
    """Write ``value`` for ``key``; failures are logged, not raised."""
    directory = Path(cache_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sigma-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((key, value), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, directory / f"sigma-{key[:32]}.pickle")
    except (OSError, pickle.PicklingError, RecursionError) as exc:
        log.warning("cannot write Sigma cache in %s: %s", directory, exc)
