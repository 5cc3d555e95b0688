"""Files the agent writes or trusts while it runs as root, opened so that another user cannot redirect them.

Two questions, two answers:

- **May I trust this path?** (:func:`check_trusted`, :func:`check_trusted_tree`)
  Configuration and rule files decide what a root process does, so as root
  they must be writable by root (or the agent's own user) only. The file and
  every directory above it must be owned by root or by the agent's user and
  not writable by group or others; a directory above it may be
  world-writable only with the sticky bit set (``/tmp``), where other users
  cannot rename or replace the entries that are checked below it.

- **May I write here?** (:class:`PrivateDir`) The agent writes alerts, logs,
  events and caches into directories of its own. A :class:`PrivateDir` is
  created with mode 0700 (each missing component), then opened once and
  checked: it and every directory above it must pass the trust check, and
  it must itself not be writable by group or others, sticky or not (a
  sticky ``/tmp`` still lets anyone create the next day's file name as a
  symbolic link first). A symbolic link on the way to it must be owned by
  root or the agent's user and sit in a directory others cannot write (or
  a sticky one): otherwise whoever created the configured name first, in
  ``/tmp`` say, could point it at any directory root may write. Files are
  then opened relative to the directory's descriptor with
  ``O_NOFOLLOW | O_CLOEXEC`` and created 0600, and checked
  after opening (a regular file, owned by the agent's user, a single link),
  so neither a renamed-away directory nor a planted link can send a write
  anywhere else. A directory that is removed or replaced while the agent
  runs is noticed (:meth:`PrivateDir.stale`) and opened again.

Every refusal is an :class:`UnsafePath`, an :class:`OSError` whose message
names the path, says what is wrong and how to fix it. Writers treat it like
any other write failure: they keep what they could not write and retry.

This is the POSIX implementation (``O_NOFOLLOW``, ``dir_fd``, modes) of
:mod:`edr.platform.private_files`; on Windows the same protection comes from
ACLs (:mod:`edr.platform.windows.private_files`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Final

from edr.platform.unsafe_path import UnsafePath

__all__ = ["DIR_MODE", "FILE_MODE", "PrivateDir", "UnsafePath", "check_trusted", "check_trusted_tree", "status_problem"]

#: Flags of every file the agent opens for writing.
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(
    os, "O_CLOEXEC", 0)
#: The same, readable too: a writer that checks what the file ends with before it appends.
_READ_WRITE_FLAGS: Final = (_WRITE_FLAGS & ~os.O_WRONLY) | os.O_RDWR
_DIR_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _who(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _problem(st: os.stat_result, *, sticky_ok: bool) -> str | None:
    """Why an entry with status ``st`` cannot be trusted, or None."""
    if not _owner_ok(st):
        return f"owned by {_who(st.st_uid)}, not by root or this agent's user: chown root {{path}}"
    if st.st_mode & 0o022:
        if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return None
        who = "group and others" if (st.st_mode & 0o022) == 0o022 else (
            "others" if st.st_mode & 0o002 else "its group")
        return f"writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w {{path}}"
    return None


def status_problem(st: os.stat_result, path: str | os.PathLike[str]) -> str | None:
    """Why the entry ``path`` with status ``st`` (its own, not a link's target) cannot be trusted, or None.

    The check :func:`check_trusted` makes of ``path`` itself, without the
    directories above it: for a caller that walks a tree it has already
    checked down to ``path``'s directory and has the entry's status at hand.
    """
    problem = _problem(st, sticky_ok=False)
    return problem.format(path=os.fspath(path)) if problem else None


def check_trusted(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafePath` unless only root (or this agent's user) can change ``path``.

    ``path`` (a file or directory, symbolic links resolved) must be owned by
    root or the agent's user and not writable by group or others, and so
    must every directory above it, except that a sticky world-writable
    directory such as ``/tmp`` may hold it.
    """
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise UnsafePath(path, "does not exist") from None
    problem = _problem(st, sticky_ok=False)
    if problem:
        raise UnsafePath(real, problem.format(path=real))
    for parent in real.parents:
        st = os.stat(parent)
        problem = _problem(st, sticky_ok=True)
        if problem:
            raise UnsafePath(real, f"its directory {parent} is {problem.format(path=parent)}")


def check_trusted_tree(path: str | os.PathLike[str]) -> None:
    """:func:`check_trusted` for ``path`` and, for a directory, every file and directory beneath it."""
    check_trusted(path)
    if not os.path.isdir(path):
        return
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = os.path.join(root, name)
            try:
                st = os.stat(entry)
            except OSError:
                continue  # a dangling link or a file removed meanwhile: nothing will be read from it
            problem = _problem(st, sticky_ok=False)
            if problem:
                raise UnsafePath(entry, problem.format(path=entry))


def _check_links(path: Path, depth: int = 0) -> None:
    """Refuse a symbolic link on the way to ``path`` that a user other than root (or the agent's) could change.

    :func:`check_trusted` checks the directories a path resolves to; the
    links on the way are entries too. A link owned by another user, or in a
    directory others may write without the sticky bit, lets that user point
    the agent's writes at any directory root may write (in a sticky ``/tmp``,
    whoever creates the configured name first owns it). The links a link's
    target goes through are checked the same way. ``path`` is absolute.
    """
    if depth > 40:  # the kernel gives up sooner (ELOOP)
        raise UnsafePath(path, "has too many levels of symbolic links")
    for component in (*reversed(path.parents), path):
        try:
            st = os.lstat(component)
        except OSError:
            return  # missing: it is created below by the agent, or the open fails and says why
        if not stat.S_ISLNK(st.st_mode):
            continue
        if not _owner_ok(st):
            raise UnsafePath(path, f"{component} is a symbolic link owned by {_who(st.st_uid)}: "
                                   f"remove it, or name the real directory")
        holder = os.stat(component.parent)
        problem = _problem(holder, sticky_ok=True)
        if problem:
            raise UnsafePath(path, f"{component} is a symbolic link in {component.parent}, which is "
                                   f"{problem.format(path=component.parent)}")
        _check_links(Path(os.path.normpath(component.parent / os.readlink(component))), depth + 1)


def _make_dirs(path: Path) -> None:
    """Create ``path`` and any missing directory above it with mode 0700."""
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue
        # mkdir's mode passes through the umask, which may only remove bits; set it exactly
        os.chmod(directory, DIR_MODE)


class PrivateDir:
    """A directory the agent writes into, checked once and then used through its descriptor.

    Not thread-safe: each writer owns its own instance and uses it from one
    thread at a time.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self.create = create
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None

    def fd(self) -> int:
        """The directory's descriptor, opening and checking it first if needed (raises OSError)."""
        if self._fd is not None and not self.stale():
            return self._fd
        self.close()
        absolute = Path(os.path.abspath(self.path))
        _check_links(absolute)
        if self.create:
            _make_dirs(self.path)
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            st = os.fstat(fd)
            problem = _problem(st, sticky_ok=False)
            if problem:
                raise UnsafePath(self.path, problem.format(path=self.path))
            check_trusted(self.path)
            # the check above resolved the path again: it must still be the directory we hold
            if os.stat(self.path).st_ino != st.st_ino:
                raise UnsafePath(self.path, "was replaced while it was being checked")
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        return fd

    def stale(self) -> bool:
        """True when the directory we hold was removed, or its path now names another directory."""
        if self._fd is None:
            return True
        try:
            if os.fstat(self._fd).st_nlink == 0:
                return True
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._ino

    def open_append(self, name: str, *, readable: bool = False) -> int:
        """A descriptor appending to ``name`` in this directory, created 0600 (raises OSError).

        Refuses a symbolic link (``O_NOFOLLOW``), anything but a regular file,
        a file of another user and a file with other hard links. With
        ``readable``, the descriptor can also read (``O_RDWR``), for a writer
        that checks how the file ends before it appends.
        """
        if os.sep in name or name in ("", ".", ".."):
            raise UnsafePath(self.path / name, "is not a plain file name")
        dirfd = self.fd()
        try:
            fd = os.open(name, _READ_WRITE_FLAGS if readable else _WRITE_FLAGS, FILE_MODE, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(self.path / name, "is a symbolic link: refusing to write through it") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(self.path / name, "is not a regular file")
            if st.st_uid != os.geteuid():
                raise UnsafePath(self.path / name, f"is owned by {_who(st.st_uid)}: remove it or chown it")
            if st.st_nlink != 1:
                raise UnsafePath(self.path / name, f"has {st.st_nlink} hard links: refusing to write to it")
            if stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_read(self, name: str) -> int:
        """A read-only descriptor of ``name`` if only root or this agent's user can have written it.

        For data the agent wrote itself and reads back (caches): a link, a
        non-regular file, or a file another user owns or may write is
        refused with :class:`UnsafePath`; a missing file raises
        ``FileNotFoundError``.
        """
        dirfd = self.fd()
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         dir_fd=dirfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(self.path / name, "is a symbolic link: refusing to read it") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(self.path / name, "is not a regular file")
            problem = _problem(st, sticky_ok=False)
            if problem:
                raise UnsafePath(self.path / name, problem.format(path=self.path / name))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` in one step: a new 0600 file beside it, fsync, rename."""
        dirfd = self.fd()
        tmp_name = f".{name}.{os.urandom(8).hex()}.tmp"
        # O_EXCL | O_NOFOLLOW relative to the checked directory: never a planted file or link
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), FILE_MODE, dir_fd=dirfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp_name, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=dirfd)
            raise

    def close(self) -> None:
        """Close the directory's descriptor (the next use opens and checks it again)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._ino = None
