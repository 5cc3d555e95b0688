"""The scan job run in a worker thread: one file (or one process's memory) in, a verdict out.

Synchronous and trio-free: the dispatcher runs :meth:`FileScanner.scan_file`
through ``trio.to_thread``; benchmarks and tests call it directly.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import Counter
from typing import Any, Final

import attrs
import yara

from edr.detect.yara_rules import YaraHit, YaraRuleSet
from edr.platform import current as current_platform
from edr.scan.allowlist import PrefixAllowlist
from edr.scan.hashing import HashTimeout, hash_stream
from edr.scan.identity import FileIdentity, IdentityCache

MB: Final = 1024 * 1024
_ELF: Final = b"\x7fELF"
_SHEBANG: Final = b"#!"
_PE: Final = b"MZ"


@attrs.define
class ScanLimits:
    """Size limits and the per-scan timeout."""

    yara_max_bytes: int = 64 * MB
    hash_max_bytes: int = 50 * MB
    timeout: float = 10.0
    memory_max_bytes: int = 256 * MB


@attrs.define
class FileVerdict:
    """What scanning one file found.

    ``status``: ``scanned``, ``allowlisted``, ``missing``, ``denied``,
    ``not_regular``, ``not_executable``, ``error``. Per engine, ``yara_skip``
    / ``hash_skip`` say why it did not run (``allowlisted``, ``too_large``,
    ``timeout``, ``error``, ``not_needed``, ``no_rules``) or are None if it did.
    """

    path: str
    status: str
    identity: FileIdentity | None = None
    hits: tuple[YaraHit, ...] = ()
    hashes: dict[str, str] | None = None
    yara_skip: str | None = None
    hash_skip: str | None = None
    cached: bool = False
    error: str = ""


@attrs.define
class MemoryVerdict:
    """What scanning one process's memory found; ``status`` as for files plus ``too_large``, ``self``."""

    pid: int
    status: str
    hits: tuple[YaraHit, ...] = ()
    error: str = ""


def looks_executable(head: bytes, mode: int) -> bool:
    """An ELF or PE image, or a script with a shebang and an exec bit."""
    if head.startswith((_ELF, _PE)):
        return True
    return head.startswith(_SHEBANG) and bool(mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))


class FileScanner:
    """YARA-scans and hashes files, caching verdicts by file identity; safe to call from many threads.

    ``want_hashes`` (the IOC set lists hashes) decides whether every file is
    hashed; a file with a YARA hit is hashed regardless, for the alert.
    """

    def __init__(self, rules: YaraRuleSet | None, *, want_hashes: bool, limits: ScanLimits,
                 yara_allowlist: PrefixAllowlist, hash_allowlist: PrefixAllowlist,
                 cache: IdentityCache[FileVerdict], debug: bool = False) -> None:
        self.rules = rules if rules is not None and rules.rules is not None else None
        self.want_hashes = want_hashes
        self.limits = limits
        self.yara_allowlist = yara_allowlist
        self.hash_allowlist = hash_allowlist
        self.cache = cache
        self.debug = debug
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self.counts[key] += 1

    def allowlisted(self, path: str) -> bool:
        """True when ``path`` is allowlisted for every engine: nothing to do, no job needed (not counted)."""
        return (self.rules is None or self.yara_allowlist.match(path)) and self.hash_allowlist.match(path)

    def skips(self, path: str) -> bool:
        """:meth:`allowlisted`, counted (as ``allowlisted`` in :attr:`counts`) when True."""
        if self.allowlisted(path):
            self._count("allowlisted")
            return True
        return False

    def scan_file(self, path: str, *, require_executable: bool = False) -> FileVerdict:
        """Scan ``path`` (never raises on a bad file: vanished, unreadable, special)."""
        if self.skips(path):
            return FileVerdict(path, "allowlisted")
        do_yara = self.rules is not None and not self.yara_allowlist.match(path)
        do_hash = not self.hash_allowlist.match(path)
        try:
            # O_NONBLOCK: opening a FIFO planted at an executable's path must not hang a worker.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_BINARY", 0))
            fh = os.fdopen(fd, "rb")
        except IsADirectoryError:
            self._count("not_regular")
            return FileVerdict(path, "not_regular")
        except FileNotFoundError:
            self._count("missing")
            return FileVerdict(path, "missing")
        except PermissionError as exc:
            self._count("denied")
            return FileVerdict(path, "denied", error=str(exc))
        except OSError as exc:
            self._count("errors")
            return FileVerdict(path, "error", error=str(exc))
        try:
            return self._scan_open(path, fh, do_yara, do_hash, require_executable)
        except OSError as exc:
            self._count("errors")
            return FileVerdict(path, "error", error=str(exc))
        finally:
            fh.close()

    def _scan_open(self, path: str, fh: Any, do_yara: bool, do_hash: bool,
                   require_executable: bool) -> FileVerdict:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            self._count("not_regular")
            return FileVerdict(path, "not_regular")
        if require_executable and not looks_executable(fh.read(4), st.st_mode):
            self._count("not_executable")
            return FileVerdict(path, "not_executable")
        identity = FileIdentity.of(st)
        cached = self.cache.get(identity)
        if cached is not None:
            self._count("cache_hits")
            return attrs.evolve(cached, path=path, cached=True)
        verdict = FileVerdict(path, "scanned", identity=identity)
        deadline = time.monotonic() + self.limits.timeout
        if not do_yara:
            verdict.yara_skip = "allowlisted" if self.rules is not None else "no_rules"
        elif st.st_size > self.limits.yara_max_bytes:
            verdict.yara_skip = "too_large"
            self._count("yara_too_large")
        else:
            # Scan the very file we opened (not whatever the path names by now).
            target = current_platform().scan_target(fh.fileno(), path)
            try:
                assert self.rules is not None
                verdict.hits = tuple(self.rules.scan_file(target, self.limits.timeout, debug=self.debug))
                self._count("yara_scanned")
            except yara.TimeoutError:
                verdict.yara_skip = "timeout"
                self._count("yara_timeouts")
            except yara.Error as exc:
                verdict.yara_skip = "error"
                verdict.error = str(exc)
                self._count("yara_errors")
        if not do_hash:
            verdict.hash_skip = "allowlisted"
        elif not (self.want_hashes or verdict.hits):
            verdict.hash_skip = "not_needed"
        elif st.st_size > self.limits.hash_max_bytes:
            verdict.hash_skip = "too_large"
            self._count("hash_too_large")
        else:
            fh.seek(0)
            try:
                verdict.hashes = hash_stream(fh, deadline=max(deadline, time.monotonic() + 1.0),
                                             max_bytes=self.limits.hash_max_bytes)
                self._count("hashed")
            except HashTimeout:
                verdict.hash_skip = "timeout"
                self._count("hash_timeouts")
            except ValueError:
                verdict.hash_skip = "too_large"
                self._count("hash_too_large")
        after = os.fstat(fh.fileno())
        # Changed while we read it: the verdict is for bytes that no longer exist; don't cache.
        if FileIdentity.of(after) == identity:
            self.cache.put(identity, verdict)
        return verdict

    def scan_memory(self, pid: int) -> MemoryVerdict:
        """YARA-scan process ``pid``'s memory within the size limit (never raises)."""
        if self.rules is None:
            return MemoryVerdict(pid, "no_rules")
        if pid in (os.getpid(), 0):
            return MemoryVerdict(pid, "self")
        rss = current_platform().resident_bytes(pid)
        if rss is None:
            self._count("memory_missing")
            return MemoryVerdict(pid, "missing")
        if rss > self.limits.memory_max_bytes:
            self._count("memory_too_large")
            return MemoryVerdict(pid, "too_large")
        try:
            hits = self.rules.scan_pid(pid, self.limits.timeout, debug=self.debug)
        except yara.TimeoutError:
            self._count("memory_timeouts")
            return MemoryVerdict(pid, "timeout")
        except yara.Error as exc:
            # The process exited, is a kernel thread, or we may not ptrace it.
            self._count("memory_errors")
            return MemoryVerdict(pid, "error", error=str(exc))
        self._count("memory_scanned")
        return MemoryVerdict(pid, "scanned", hits=tuple(hits))
