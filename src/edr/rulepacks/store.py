"""The pack store: versioned pack directories and the ``active`` link, switched atomically.

Layout of the store root (``rules.store_directory``, root-only 0700, created
and checked with :class:`~edr.platform.private_files.PrivateDir`)::

    .lock                       locked (flock(2)): one install, update or rollback at a time
    active -> packs/<id>        the pack in use: a relative symbolic link
    packs/<id>/pack.json        the manifest (edr.rulepacks.manifest)
    packs/<id>/content/...      the rule directories (rules/, rules-emerging-threats/, ...)
    packs/<id>/SHA256SUMS       the pack's list and signature, when it had them
    packs/.new-<random>/        a pack being installed; removed by the next install if left by a crash

A pack is written (files 0600, directories 0700) under ``packs/.new-*``,
flushed to disk, renamed to ``packs/<id>`` and checked with
:func:`~edr.platform.private_files.check_trusted_tree` (what the agent's rule-trust
check asks) before ``active`` is switched: a new link beside it, renamed
over it (``rename(2)`` is atomic), and the directory synced. A reader
therefore sees the old pack or the new one, never a mixture, and a crash
at any point leaves the previous pack active. Pack directories are never
modified after they are renamed into place.

POSIX only (symbolic links, ``dir_fd``): on Windows the installed
layout of issue #14 (point 1) will need a pointer file instead of the link.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from edr.platform import current
from edr.platform.private_files import DIR_MODE, FILE_MODE, PrivateDir, UnsafePath, check_trusted_tree
from edr.rulepacks import manifest as manifest_mod
from edr.rulepacks.errors import PackError
from edr.rulepacks.manifest import MANIFEST_NAME, PACK_ID, PackManifest

PACKS_DIR: Final = "packs"
ACTIVE_LINK: Final = "active"
LOCK_NAME: Final = ".lock"
STAGING_PREFIX: Final = ".new-"
CONTENT_DIR: Final = "content"

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW


def _store_error(exc: OSError, what: str, pack: str = "") -> PackError:
    if isinstance(exc, UnsafePath):
        return PackError("store", str(exc), pack=pack)
    hint = " (run as root)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
    where = f" {exc.filename}" if exc.filename else ""
    return PackError("store", f"cannot {what}{where}: {exc.strerror or exc}{hint}", pack=pack)


class Staging:
    """A pack being written: ``packs/.new-<random>/``, removed unless :meth:`PackStore.commit` takes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.content = path / CONTENT_DIR

    def write(self, name: str, data: bytes) -> None:
        """Create the pack file ``name`` (relative to the pack directory) holding ``data``."""
        fd = self.create(name)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def create(self, name: str) -> int:
        """A descriptor of the new file ``name`` (relative to the pack directory), created 0600.

        ``name`` comes from :func:`edr.rulepacks.layout.normalize_name`;
        ``O_EXCL | O_NOFOLLOW`` make sure nothing already there is written.
        """
        path = self.path / name
        # os.makedirs gives its mode to the last directory only; every one must be 0700
        missing = []
        parent = path.parent
        while not parent.is_dir():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            os.mkdir(directory, DIR_MODE)
        return os.open(path, _CREATE_FLAGS, FILE_MODE)

    def discard(self) -> None:
        """Remove the staging directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)


class PackStore:
    """Installed packs under ``root`` (see the module doc).

    Reading (:meth:`active_id`, :meth:`manifest`, :meth:`pack_ids`) creates
    nothing; writing happens only inside :meth:`locked`.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.packs = self.root / PACKS_DIR

    # -- reading --------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the store has been created."""
        return self.packs.is_dir()

    def pack_dir(self, pack_id: str) -> Path:
        """The directory of pack ``pack_id``."""
        if not PACK_ID.match(pack_id):
            raise PackError("store", "is not a pack id (like 0003-20261122T072801Z-9f2c1a7b)", pack=pack_id)
        return self.packs / pack_id

    def active_id(self) -> str | None:
        """The id of the active pack, None when none is active; raises PackError if ``active`` is not a pack link."""
        link = self.root / ACTIVE_LINK
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise PackError("store", f"{link} is not a symbolic link (remove it, then "
                                         f"'edr rules rollback PACK_ID')") from None
            raise _store_error(exc, "read") from None
        head, _, pack_id = target.partition("/")
        if head != PACKS_DIR or not PACK_ID.match(pack_id):
            raise PackError("store", f"{link} points to {target!r}, not to a pack under {PACKS_DIR}/")
        if not (self.packs / pack_id).is_dir():
            raise PackError("store", f"{link} points to {target!r}, which does not exist", pack=pack_id)
        return pack_id

    def pack_ids(self) -> list[str]:
        """Installed pack ids, oldest first (by their sequence number)."""
        try:
            names = os.listdir(self.packs)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _store_error(exc, "list") from None
        ids = [n for n in names if PACK_ID.match(n)]
        return sorted(ids, key=lambda n: (int(n.partition("-")[0]), n))

    def manifest(self, pack_id: str) -> PackManifest:
        """Pack ``pack_id``'s manifest; raises PackError (``store``) when it is missing or invalid."""
        path = self.pack_dir(pack_id) / MANIFEST_NAME
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except OSError as exc:
            raise _store_error(exc, "read", pack_id) from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(64 << 20)
        return manifest_mod.decode(data, pack=pack_id)

    def next_sequence(self) -> int:
        """The sequence number of the next pack."""
        ids = self.pack_ids()
        return int(ids[-1].partition("-")[0]) + 1 if ids else 1

    def verify(self, pack_id: str) -> PackManifest:
        """Check pack ``pack_id`` against its manifest: every file present and unchanged, nothing added,
        and the tree trusted. Returns the manifest; raises PackError (``integrity``, ``store``)."""
        manifest = self.manifest(pack_id)
        content = self.pack_dir(pack_id) / CONTENT_DIR
        try:
            check_trusted_tree(self.pack_dir(pack_id))
        except OSError as exc:
            raise _store_error(exc, "trust", pack_id) from None
        seen: set[str] = set()
        for top, dirs, files in os.walk(content):
            for name in dirs:  # os.walk lists a link to a directory here, and does not enter it
                if os.path.islink(os.path.join(top, name)):
                    rel = os.path.relpath(os.path.join(top, name), content).replace(os.sep, "/")
                    raise PackError("integrity", "is a symbolic link added after the pack was installed",
                                    pack=pack_id, member=rel)
            for name in files:
                rel = os.path.relpath(os.path.join(top, name), content).replace(os.sep, "/")
                expected = manifest.files.get(rel)
                if expected is None:
                    raise PackError("integrity", "was added after the pack was installed", pack=pack_id,
                                    member=rel)
                try:
                    actual = _file_sha256(content / rel)
                except OSError as exc:
                    raise PackError("integrity", f"cannot be read: {exc.strerror or exc}", pack=pack_id,
                                    member=rel) from None
                if actual != expected:
                    raise PackError("integrity", "was modified after the pack was installed", pack=pack_id,
                                    member=rel)
                seen.add(rel)
        for rel in sorted(set(manifest.files) - seen):
            raise PackError("integrity", "was removed after the pack was installed", pack=pack_id, member=rel)
        return manifest

    # -- writing (under the lock) ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Create and check the store, and hold its lock; raises PackError when busy or unusable.

        Not re-entrant. The lock is released however the block ends
        (cancellation included): nothing half-written is ever active, and
        the next holder removes what a crashed one left under ``packs/.new-*``.
        """
        private = PrivateDir(self.root)
        try:
            lock_fd = private.open_append(LOCK_NAME)
        except OSError as exc:
            private.close()
            raise _store_error(exc, "open the store") from None
        try:
            if not current().lock_file(lock_fd):
                raise PackError("store", f"another 'edr rules' command holds {self.root / LOCK_NAME}; "
                                         f"try again when it has finished")
            try:
                os.mkdir(PACKS_DIR, DIR_MODE, dir_fd=private.fd())
            except FileExistsError:
                pass
            except OSError as exc:
                raise _store_error(exc, "create") from None
            st = os.lstat(self.packs)
            if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
                raise PackError("store", f"{self.packs} must be a directory only its owner can use (mode 0700)")
            yield
        finally:
            os.close(lock_fd)
            private.close()

    def clean_staging(self) -> list[str]:
        """Remove what interrupted installs left; returns the names removed."""
        removed = []
        for name in os.listdir(self.packs):
            if name.startswith(STAGING_PREFIX):
                shutil.rmtree(self.packs / name, ignore_errors=True)
                removed.append(name)
        return removed

    def staging(self) -> Staging:
        """A new, empty staging directory."""
        path = self.packs / f"{STAGING_PREFIX}{os.urandom(6).hex()}"
        os.mkdir(path, DIR_MODE)
        os.mkdir(path / CONTENT_DIR, DIR_MODE)
        return Staging(path)

    def commit(self, staging: Staging, manifest: PackManifest) -> Path:
        """Write the manifest, flush the pack to disk and rename it into place; returns its directory.

        The renamed directory must pass :func:`~edr.platform.private_files.check_trusted_tree`; if it
        does not, it is removed and PackError is raised.
        """
        staging.write(MANIFEST_NAME, manifest_mod.encode(manifest))
        os.sync()  # one flush of every file just written, before the rename makes them a pack
        final = self.pack_dir(manifest.id)
        os.rename(staging.path, final)
        _fsync_dir(self.packs)
        try:
            check_trusted_tree(final)
        except OSError as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise _store_error(exc, "trust", manifest.id) from None
        return final

    def activate(self, pack_id: str) -> None:
        """Point ``active`` at pack ``pack_id``, atomically (a new link renamed over the old one)."""
        if not self.pack_dir(pack_id).is_dir():
            raise PackError("store", "is not installed", pack=pack_id)
        tmp = self.root / f".{ACTIVE_LINK}.{os.urandom(6).hex()}"
        os.symlink(f"{PACKS_DIR}/{pack_id}", tmp)
        try:
            os.rename(tmp, self.root / ACTIVE_LINK)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)

    def prune(self, keep: int) -> list[str]:
        """Remove all but the active pack and the ``keep`` newest others; returns the ids removed."""
        active = self.active_id()
        others = [p for p in self.pack_ids() if p != active]
        doomed = others[:max(len(others) - keep, 0)]
        for pack_id in doomed:
            shutil.rmtree(self.packs / pack_id)
        return doomed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()
