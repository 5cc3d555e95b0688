"""Retention of daily files (alerts, events, the operational log): oldest removed first, never the one written.

:func:`plan_retention` is the sans-IO planner: given the members of one
family (``<filename>.YYYY-MM-DD``, :mod:`edr.alerts.family`) with their sizes,
the file being written and today's UTC day, it says which to remove and why:

- ``max_days`` = N keeps the files of the last N UTC days, today included
  (N = 1 keeps today's only); older files are removed;
- ``max_total_bytes`` caps what the family's files hold together, the file
  being written included: after the age limit, the oldest are removed until
  the rest fit;
- 0 switches a limit off. Never removed: the file being written (named by the
  caller), any file dated today or later (a writer whose clock is a day
  ahead is still writing it), and anything that is not a member of the family.

:func:`apply_retention` is the small I/O part: it lists the directory through
a :class:`~edr.platform.private_files.PrivateDir` (the configured directory, checked,
opened once), takes only regular files owned by the agent's user with a
single link (a symbolic link, another user's file or a hard link to a file
elsewhere is left alone and reported), checks just before each removal that
the name still is the file it planned on, removes it relative to the
directory's descriptor (so a renamed or replaced directory cannot redirect
it) and logs every removal. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import attrs

from edr.alerts.family import family_day
from edr.platform.private_files import PrivateDir

_log = logging.getLogger(__name__)

AGE: Final = "age"
SIZE: Final = "size"


@attrs.frozen
class RetentionPolicy:
    """How long and how much of one family to keep; 0 means no limit."""

    max_days: int = 0
    max_total_bytes: int = 0

    def __attrs_post_init__(self) -> None:
        if self.max_days < 0 or self.max_total_bytes < 0:
            raise ValueError("max_days and max_total_bytes must be 0 (no limit) or more")

    @classmethod
    def from_megabytes(cls, max_days: int, max_total_mb: int) -> RetentionPolicy:
        """A policy from configuration values (``[retention] <family>_max_days``, ``<family>_max_total_mb``)."""
        return cls(max_days=max_days, max_total_bytes=max_total_mb << 20)

    @property
    def unlimited(self) -> bool:
        """True when neither limit is set (nothing is ever removed)."""
        return not self.max_days and not self.max_total_bytes


@attrs.frozen
class DailyFileInfo:
    """One member of a family, as listed: its name, UTC day and size."""

    name: str
    day: date
    size: int


@attrs.frozen
class Removal:
    """A file the planner removes, and why (``age`` or ``size``)."""

    name: str
    day: date
    size: int
    reason: str
    detail: str


def plan_retention(files: Iterable[DailyFileInfo], policy: RetentionPolicy, *, today: date,
                   current: str | None) -> list[Removal]:
    """The files to remove under ``policy``, oldest first (see the module for the rules)."""
    members = sorted(files, key=lambda f: (f.day, f.name))
    if policy.unlimited:
        return []
    removals: list[Removal] = []
    kept: list[DailyFileInfo] = []
    cutoff = today - timedelta(days=policy.max_days - 1) if policy.max_days else None
    for f in members:
        if f.name != current and f.day < today and cutoff is not None and f.day < cutoff:
            removals.append(Removal(f.name, f.day, f.size, AGE,
                                    f"older than {policy.max_days} day(s) (kept from {cutoff.isoformat()})"))
        else:
            kept.append(f)
    if policy.max_total_bytes:
        total = sum(f.size for f in kept)
        for f in kept:
            if total <= policy.max_total_bytes:
                break
            if f.name == current or f.day >= today:
                continue
            removals.append(Removal(f.name, f.day, f.size, SIZE,
                                    f"the files hold {total:,} bytes, over the {policy.max_total_bytes:,} limit"))
            total -= f.size
    removals.sort(key=lambda r: (r.day, r.name))
    return removals


@attrs.frozen
class Skipped:
    """A name of the family that retention does not touch, and why."""

    name: str
    reason: str


@attrs.define
class RetentionResult:
    """What :func:`apply_retention` did: files removed, names left alone, errors (each names its file)."""

    directory: str
    removed: list[Removal] = attrs.field(factory=list)
    skipped: list[Skipped] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)

    @property
    def bytes_removed(self) -> int:
        """Bytes freed."""
        return sum(r.size for r in self.removed)


def apply_retention(directory: str | os.PathLike[str], filename: str, policy: RetentionPolicy, *,
                    current: str | None, now: float | None = None,
                    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = _log) -> RetentionResult:
    """Remove the files of ``<directory>/<filename>.YYYY-MM-DD`` that ``policy`` does not keep.

    ``current``: the name of the file being written (never removed); ``now``:
    the UNIX time that decides today's UTC day (default: the clock). Never
    raises for a file or directory problem: each is logged and listed in the
    result's ``errors``, and the other files are still handled.
    """
    result = RetentionResult(directory=os.fspath(directory))
    if policy.unlimited:
        return result
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    pdir = PrivateDir(directory, create=False)
    try:
        try:
            dirfd = pdir.fd()
            listed = _list_family(dirfd, filename, result)
        except FileNotFoundError:
            return result  # nothing written yet
        except OSError as exc:
            result.errors.append(f"{directory}: cannot list: {exc}")
            log.error("retention: %s: cannot list: %s", directory, exc)
            return result
        infos = [info for info, _ident in listed.values()]
        for removal in plan_retention(infos, policy, today=today, current=current):
            path = Path(directory) / removal.name
            try:
                st = os.stat(removal.name, dir_fd=dirfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) != listed[removal.name][1] or not stat.S_ISREG(st.st_mode):
                    result.skipped.append(Skipped(removal.name, "changed since it was listed"))
                    continue
                os.unlink(removal.name, dir_fd=dirfd)
            except FileNotFoundError:
                continue  # removed meanwhile: nothing left to do
            except OSError as exc:
                result.errors.append(f"{path}: cannot remove: {exc.strerror}")
                log.error("retention: %s: cannot remove: %s", path, exc.strerror)
                continue
            result.removed.append(removal)
            log.info("retention: removed %s (%d bytes): %s", path, removal.size, removal.detail)
        for skipped in result.skipped:
            log.warning("retention: left %s alone: %s", Path(directory) / skipped.name, skipped.reason)
        return result
    finally:
        pdir.close()


def _list_family(dirfd: int, filename: str,
                 result: RetentionResult) -> dict[str, tuple[DailyFileInfo, tuple[int, int]]]:
    """The family's regular files of our own with one link, with their identity; the others are skipped."""
    listed: dict[str, tuple[DailyFileInfo, tuple[int, int]]] = {}
    euid = os.geteuid()
    with os.scandir(dirfd) as entries:
        for entry in entries:
            day = family_day(entry.name, filename)
            if day is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                result.skipped.append(Skipped(entry.name, kind))
            elif st.st_uid != euid:
                result.skipped.append(Skipped(entry.name, f"owned by uid {st.st_uid}, not by this agent"))
            elif st.st_nlink != 1:
                result.skipped.append(Skipped(entry.name, f"has {st.st_nlink} hard links"))
            else:
                listed[entry.name] = (DailyFileInfo(entry.name, day, st.st_size), (st.st_dev, st.st_ino))
    return listed
