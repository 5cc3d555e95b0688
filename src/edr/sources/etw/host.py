"""What the Windows normalizer asks of its host, behind small injectable interfaces.

- :class:`DeviceMap`: NT device paths to drive letters (``\\Device\\HarddiskVolume3\\x``
  -> ``C:\\x``), from a ``QueryDosDevice`` table.
- :class:`SidResolver`: SID -> ``DOMAIN\\user`` through ``LookupAccountSid``,
  bounded cache, failures remembered as the SID itself.
- :class:`ProcessFacts`: what ETW's process events do not carry (command line,
  current directory, user, image of a process started before the session),
  read from the live process.

The Windows implementations import pywin32/psutil/ctypes lazily, so this
module imports anywhere; tests pass tables and functions instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

from edr.sources.etw.caches import BoundedMap
from edr.sources.etw.pe_info import PeInfoCache

if TYPE_CHECKING:
    from edr.config import EtwConfig

log = logging.getLogger("edr.etw")


class DeviceMap:
    """Rewrites NT device paths to DOS paths from a ``{device: drive}`` table.

    ``table`` maps ``\\Device\\HarddiskVolume3`` to ``C:`` as ``QueryDosDevice``
    reports it for each drive letter. Matching is case-insensitive and on a
    path-component boundary; a path under no known device is returned as is
    and counted in ``misses`` (``\\Device\\Mup\\server\\share`` becomes the UNC
    path ``\\\\server\\share``).
    """

    #: Where ``\\SystemRoot`` points (driver image paths use it).
    system_root = "C:\\Windows"

    def __init__(self, table: Mapping[str, str]) -> None:
        # longest device first, so \Device\HarddiskVolume10 is not taken for ...Volume1
        self._table = sorted(((dev.rstrip("\\"), drive.rstrip("\\")) for dev, drive in table.items()),
                             key=lambda item: -len(item[0]))
        self._lower = [(dev.lower(), drive) for dev, drive in self._table]
        # \Device\<name> -> drive, for the one-lookup path taken by nearly every file name
        self._by_device = {dev: drive for dev, drive in self._lower if dev.count("\\") == 2}
        self.misses = 0

    def to_dos(self, path: str) -> str:
        """``path`` with its device prefix replaced by the drive letter, when one matches."""
        if not path or path[0] != "\\":
            return path
        end = path.find("\\", 8)
        drive = self._by_device.get(path[:end].lower() if end > 0 else path.lower())
        if drive is not None:
            return drive + path[end:] if end > 0 else drive
        lower = path.lower()
        if lower.startswith("\\device\\"):
            for dev, drive in self._lower:
                if lower.startswith(dev) and (len(path) == len(dev) or path[len(dev)] == "\\"):
                    return drive + path[len(dev):]
            if lower.startswith("\\device\\mup\\"):
                return "\\" + path[len("\\device\\mup"):]
            self.misses += 1
            return path
        if lower.startswith("\\??\\"):
            return path[4:]
        if lower.startswith("\\systemroot\\"):
            return self.system_root + path[len("\\systemroot"):]
        return path

    def to_device(self, path: str) -> str:
        """The inverse, ``C:\\x`` -> ``\\Device\\HarddiskVolume3\\x``: what ETW reports for a DOS path."""
        for dev, drive in self._table:
            if path[:len(drive)].lower() == drive.lower() and path[len(drive):len(drive) + 1] == "\\":
                return dev + path[len(drive):]
        return path


def query_dos_devices() -> dict[str, str]:
    """The live ``{device: drive}`` table (Windows: ``QueryDosDeviceW`` for A: to Z:)."""
    if sys.platform != "win32":
        return {}
    import ctypes

    out: dict[str, str] = {}
    buf = ctypes.create_unicode_buffer(1024)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        drive = f"{letter}:"
        if kernel32.QueryDosDeviceW(drive, buf, len(buf)):
            out[buf.value] = drive
    return out


#: ``LookupAccountSid`` as the resolver calls it: SID string -> ``DOMAIN\\user`` or None.
SidLookup = Callable[[str], "str | None"]


def lookup_account_sid(sid: str) -> str | None:
    """``DOMAIN\\user`` of a SID through pywin32 (Windows only; None when unknown)."""
    if sys.platform != "win32":
        return None
    import win32security  # type: ignore[import-not-found]

    try:
        name, domain, _kind = win32security.LookupAccountSid(None, win32security.ConvertStringSidToSid(sid))
    except Exception:  # pywin32 raises pywintypes.error for unknown SIDs
        return None
    return f"{domain}\\{name}" if domain else name


class SidResolver:
    """SID string -> account name, cached (at most ``capacity`` SIDs; evictions counted).

    A SID ``lookup`` cannot name (or that makes it raise) resolves to the SID
    itself, and that answer is cached too: a deleted account does not cost a
    lookup per event.
    """

    def __init__(self, lookup: SidLookup = lookup_account_sid, capacity: int = 4096) -> None:
        self._lookup = lookup
        self._cache: BoundedMap[str, str] = BoundedMap(capacity)
        self.lookups = 0
        self.failures = 0

    def name(self, sid: str) -> str:
        """The ``DOMAIN\\user`` of ``sid`` (the SID itself when unknown)."""
        hit = self._cache.get(sid)
        if hit is not None:
            return hit
        self.lookups += 1
        try:
            found = self._lookup(sid)
        except Exception:
            found = None
        if not found:
            self.failures += 1
            found = sid
        self._cache.set(sid, found)
        return found

    def statistics(self) -> dict[str, int]:
        """Cache size, evictions, lookups and failed lookups."""
        return {**self._cache.statistics(), "lookups": self.lookups, "failures": self.failures}


@attrs.frozen
class LiveProcess:
    """What the host says about a running process (any part may be unknown)."""

    image: str | None = None
    command_line: str | None = None
    current_directory: str | None = None
    user: str | None = None
    ppid: int | None = None
    create_time: float | None = None


class ProcessFacts(Protocol):
    """Reads a live process: ``describe(pid)`` or None when it is gone or unreadable."""

    def describe(self, pid: int) -> LiveProcess | None:
        """Facts about ``pid`` now; must not raise."""
        ...


class NoProcessFacts:
    """A host that can say nothing (replay, tests that model ETW alone)."""

    def describe(self, pid: int) -> LiveProcess | None:
        """Always None."""
        return None


class PsutilProcessFacts:
    """Process facts through psutil (Windows: the PEB for the command line and directory, the token for the user)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.errors = 0

    def describe(self, pid: int) -> LiveProcess | None:
        """Facts about ``pid``; the parts psutil may not read (access denied) are None."""
        psutil = self._psutil
        try:
            proc = psutil.Process(pid)
        except (psutil.Error, ValueError):
            return None

        def read(fn: Callable[[], object]) -> object:
            try:
                return fn()
            except (psutil.Error, OSError, ValueError):
                self.errors += 1
                return None

        cmdline = read(proc.cmdline)
        return LiveProcess(
            image=_str_or_none(read(proc.exe)),
            command_line=_join_cmdline(cmdline) if isinstance(cmdline, list) else None,
            current_directory=_str_or_none(read(proc.cwd)),
            user=_str_or_none(read(proc.username)),
            ppid=_int_or_none(read(proc.ppid)),
            create_time=_float_or_none(read(proc.create_time)),
        )


def _join_cmdline(argv: list[str]) -> str:
    if sys.platform == "win32":
        import subprocess

        return subprocess.list2cmdline(argv)
    return " ".join(argv)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@attrs.define
class WindowsHost:
    """Everything the normalizer asks of Windows, in one injectable object.

    :meth:`live` builds the real one (``QueryDosDevice``, ``LookupAccountSid``,
    psutil, a PE cache reading the images); tests build one from tables.
    """

    devices: DeviceMap
    sids: SidResolver
    facts: ProcessFacts
    pe: PeInfoCache | None = None

    @classmethod
    def live(cls, cfg: EtwConfig) -> WindowsHost:
        """This machine's host facts (on another platform: empty tables, no process facts)."""
        facts: ProcessFacts = PsutilProcessFacts() if sys.platform == "win32" else NoProcessFacts()
        pe = PeInfoCache(capacity=cfg.pe_cache_entries, workers=cfg.pe_workers,
                         max_bytes=cfg.pe_max_file_mb << 20) if sys.platform == "win32" else None
        return cls(DeviceMap(query_dos_devices()), SidResolver(lookup_account_sid, cfg.sid_cache_entries), facts, pe)

    def close(self) -> None:
        """Stop the PE workers."""
        if self.pe is not None:
            self.pe.close()
