"""Files the agent writes or trusts on Windows: ACLs instead of modes, reparse points instead of symlinks.

The Windows implementation of :mod:`edr.platform.private_files`, with the
POSIX one's API and answers to the same two questions (see
:mod:`edr.platform.windows.acl` for what "private" and "trusted" mean here):

- **May I trust this path?** (:func:`check_trusted`, :func:`check_trusted_tree`)
  The file (links and junctions resolved) and every directory above it
  must be owned by SYSTEM, Administrators, TrustedInstaller or the agent's
  account, and grant nobody else a right that changes them; a directory
  above may let others add entries (``C:\\ProgramData`` does), as a sticky
  ``/tmp`` may on Linux.

- **May I write here?** (:class:`PrivateDir`) Each missing directory is
  created with a protected DACL granting full control to SYSTEM and
  Administrators only, inherited by what is created inside (the
  counterpart of mode 0700; files get the same without inheritance, 0600).
  The directory is then opened once, checked (not a reparse point, not
  writable by others, trusted above) and *held*: its handle does not share
  delete access, so nobody can rename or remove it while the agent uses it
  -- what the directory descriptor guards on POSIX. A symbolic link or
  junction on the way must be owned by a trusted account in a directory
  others cannot change. Files are opened with ``FILE_FLAG_OPEN_REPARSE_POINT``
  and refused when they are a link or junction, a directory, have other
  hard links or an untrusted owner; one with a wider DACL is given the
  private one. Each is handed over as a C runtime descriptor
  (``msvcrt.open_osfhandle``), so writers use ``os.write``, ``os.fstat``
  and ``os.fsync`` as on POSIX.

Every Windows-only import (pywin32, msvcrt) is inside a function: the
module imports anywhere, and its decisions (:func:`path_problem`,
:func:`aces_from_dacl`, :func:`build_dacl`, :func:`private_security_attributes`)
are tested on Linux with stand-in objects.

Not available here: directory descriptors. ``dir_fd`` is POSIX-only, so
:meth:`PrivateDir.fd` raises :class:`io.UnsupportedOperation` (an OSError,
which callers already treat as a write failure).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PureWindowsPath
from types import SimpleNamespace
from typing import Any, Final

from edr.platform.unsafe_path import UnsafePath
from edr.platform.windows.acl import (
    UNKNOWN_ACE_TYPE,
    Ace,
    acl_problem,
    is_private,
    private_aces,
    trusted_sids,
)

__all__ = ["DIR_MODE", "FILE_MODE", "PrivateDir", "UnsafePath", "check_trusted", "check_trusted_tree"]

#: The POSIX modes, for callers that pass them on (``os.mkdir`` ignores them on Windows; the DACL decides).
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

# winnt.h file attributes, as GetFileInformationByHandle returns them.
FILE_ATTRIBUTE_DIRECTORY: Final = 0x10
FILE_ATTRIBUTE_REPARSE_POINT: Final = 0x400
# winerror.h codes mapped to errno (the rest become EIO with the Windows message).
_ERRNO: Final = {2: errno.ENOENT, 3: errno.ENOENT, 5: errno.EACCES, 32: errno.EBUSY, 80: errno.EEXIST,
                 183: errno.EEXIST, 123: errno.EINVAL}
#: Device names Windows resolves in every directory (``NUL``, ``COM1``...): never file names of ours.
_RESERVED: Final = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                              *(f"LPT{i}" for i in range(10))})
#: Links followed on the way to a directory before giving up (the kernel's own limit is 63).
_MAX_LINK_DEPTH: Final = 40

Security = tuple[str | None, list[Ace] | None]


# -- pure parts ---------------------------------------------------------------------------------------------


def aces_from_dacl(dacl: Any, sid_string: Callable[[Any], str]) -> list[Ace] | None:
    """A pywin32 ``PyACL`` (None for a NULL DACL) as :class:`Ace` records.

    ``PyACL.GetAce`` gives ``((type, flags), mask, sid)`` for plain entries
    and ``((type, flags), mask, object_type, inherited_type, sid)`` for
    object entries; it raises NotImplementedError for types it cannot
    decode (callback entries), which are kept as :data:`UNKNOWN_ACE_TYPE` so
    that the judgement refuses rather than ignores them. Masks come back as
    signed C longs: they are read as the unsigned DWORDs they are.
    """
    if dacl is None:
        return None
    aces = []
    for index in range(dacl.GetAceCount()):
        try:
            entry = dacl.GetAce(index)
        except NotImplementedError:
            aces.append(Ace(UNKNOWN_ACE_TYPE, 0, 0, ""))
            continue
        (ace_type, flags), mask, sid = entry[0], entry[1], entry[-1]
        aces.append(Ace(int(ace_type), int(flags), int(mask) & 0xFFFFFFFF, sid_string(sid)))
    return aces


def build_dacl(aces: Sequence[Ace], new_acl: Callable[[], Any], sid_from_string: Callable[[str], Any],
               revision: int) -> Any:
    """A pywin32 ``PyACL`` holding ``aces`` (access-allowed entries with their inheritance flags), in order."""
    acl = new_acl()
    for ace in aces:
        acl.AddAccessAllowedAceEx(revision, ace.flags, ace.mask, sid_from_string(ace.sid))
    return acl


def private_security_attributes(w: Any, *, directory: bool) -> Any:
    """``SECURITY_ATTRIBUTES`` whose descriptor carries the protected private DACL (``w``: the pywin32 modules).

    Given to ``CreateDirectory``/``CreateFile``, the object is private from
    the moment it exists: no window with the parent's inherited DACL.
    """
    sec = w.win32security
    dacl = build_dacl(private_aces(directory=directory), sec.ACL, sec.ConvertStringSidToSid, sec.ACL_REVISION)
    descriptor = sec.SECURITY_DESCRIPTOR()
    descriptor.SetSecurityDescriptorDacl(True, dacl, False)
    # protected: the DACL does not take entries from the directory above
    descriptor.SetSecurityDescriptorControl(sec.SE_DACL_PROTECTED, sec.SE_DACL_PROTECTED)
    attributes = sec.SECURITY_ATTRIBUTES()
    attributes.SECURITY_DESCRIPTOR = descriptor
    attributes.bInheritHandle = False
    return attributes


def path_problem(real: str, security: Callable[[str], Security], *, trusted: frozenset[str],
                 name_of: Callable[[str], str]) -> UnsafePath | None:
    """Why ``real`` (a resolved path) or a directory above it cannot be trusted, or None.

    ``security(path)`` gives the owner SID and DACL of a path (raising
    FileNotFoundError when it does not exist).
    """
    owner, aces = security(real)
    problem = acl_problem(real, owner, aces, trusted=trusted, above=False, name_of=name_of)
    if problem:
        return UnsafePath(real, problem)
    for parent in PureWindowsPath(real).parents:
        owner, aces = security(str(parent))
        problem = acl_problem(str(parent), owner, aces, trusted=trusted, above=True, name_of=name_of)
        if problem:
            return UnsafePath(real, f"its directory {parent} is {problem}")
    return None


def os_error(exc: Any, path: str | os.PathLike[str]) -> OSError:
    """A pywin32 ``pywintypes.error`` (``winerror``, ``funcname``, ``strerror``) as the OSError Python would raise."""
    winerror = getattr(exc, "winerror", None)
    code = _ERRNO.get(winerror, errno.EIO) if isinstance(winerror, int) else errno.EIO
    return OSError(code, f"{getattr(exc, 'funcname', '') or 'Win32'}: {getattr(exc, 'strerror', exc)}",
                   os.fspath(path))


def check_name(directory: Path, name: str) -> None:
    """Refuse anything but a plain file name: separators, drive or stream colons, dot names, device names."""
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if (not name or name in (".", "..") or any(c in name for c in "/\\:") or stem in _RESERVED
            or name != name.rstrip(" .")):
        raise UnsafePath(directory / name, "is not a plain file name")


# -- pywin32 ------------------------------------------------------------------------------------------------


@functools.cache
def _win32() -> Any:
    """The pywin32 modules (and msvcrt), imported on first use: Windows only."""
    import msvcrt

    import ntsecuritycon
    import pywintypes
    import win32api
    import win32file
    import win32security

    return SimpleNamespace(msvcrt=msvcrt, ntsecuritycon=ntsecuritycon, pywintypes=pywintypes, win32api=win32api,
                           win32file=win32file, win32security=win32security)


@contextlib.contextmanager
def _win32_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """pywin32's errors as OSErrors naming ``path``."""
    w = _win32()
    try:
        yield
    except w.pywintypes.error as exc:
        raise os_error(exc, path) from None


def _sid_string(sid: Any) -> str:
    return str(_win32().win32security.ConvertSidToStringSid(sid))


@functools.cache
def _agent_sid() -> str | None:
    """The SID of the account the agent runs as (its token's user)."""
    w = _win32()
    try:
        token = w.win32security.OpenProcessToken(w.win32api.GetCurrentProcess(), w.win32security.TOKEN_QUERY)
        return _sid_string(w.win32security.GetTokenInformation(token, w.win32security.TokenUser)[0])
    except w.pywintypes.error:
        return None


def _trusted() -> frozenset[str]:
    return trusted_sids(_agent_sid())


@functools.lru_cache(maxsize=256)
def _name_of(sid: str) -> str:
    """``DOMAIN\\name (SID)`` for messages; the SID alone when it has no name here."""
    w = _win32()
    try:
        name, domain, _kind = w.win32security.LookupAccountSid(None, w.win32security.ConvertStringSidToSid(sid))
    except w.pywintypes.error:
        return sid
    return f"{domain}\\{name} ({sid})" if domain else f"{name} ({sid})"


def _security(descriptor: Any) -> Security:
    owner = descriptor.GetSecurityDescriptorOwner()
    return (_sid_string(owner) if owner is not None else None,
            aces_from_dacl(descriptor.GetSecurityDescriptorDacl(), _sid_string))


def _path_security(path: str) -> Security:
    """Owner and DACL of ``path`` (GetFileSecurity); FileNotFoundError when it does not exist."""
    w = _win32()
    info = w.win32security.OWNER_SECURITY_INFORMATION | w.win32security.DACL_SECURITY_INFORMATION
    with _win32_errors(path):
        return _security(w.win32security.GetFileSecurity(path, info))


def _handle_security(handle: Any, path: str | os.PathLike[str]) -> Security:
    w = _win32()
    sec = w.win32security
    with _win32_errors(path):
        return _security(sec.GetSecurityInfo(handle, sec.SE_FILE_OBJECT,
                                             sec.OWNER_SECURITY_INFORMATION | sec.DACL_SECURITY_INFORMATION))


def _open(path: str | os.PathLike[str], access: int, share: int, disposition: int, *, directory: bool = False,
          attributes: Any = None) -> Any:
    """CreateFile without following a final reparse point (the link itself is opened, and then refused)."""
    w = _win32()
    f = w.win32file
    flags = f.FILE_ATTRIBUTE_NORMAL | f.FILE_FLAG_OPEN_REPARSE_POINT
    if directory:
        flags |= f.FILE_FLAG_BACKUP_SEMANTICS  # what lets CreateFile open a directory
    with _win32_errors(path):
        return f.CreateFile(os.fspath(path), access, share, attributes, disposition, flags, None)


def _information(handle: Any, path: str | os.PathLike[str]) -> tuple[int, int, tuple[int, int, int]]:
    """(attributes, number of links, identity: volume serial and file index) of an open handle."""
    with _win32_errors(path):
        info = _win32().win32file.GetFileInformationByHandle(handle)
    return int(info[0]), int(info[7]), (int(info[4]), int(info[8]), int(info[9]))


def _identity(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Volume serial and file index of what ``path`` names now (the link itself if it is one)."""
    w = _win32()
    f = w.win32file
    handle = _open(path, w.ntsecuritycon.FILE_READ_ATTRIBUTES,
                   f.FILE_SHARE_READ | f.FILE_SHARE_WRITE | f.FILE_SHARE_DELETE, f.OPEN_EXISTING, directory=True)
    try:
        return _information(handle, path)[2]
    finally:
        handle.Close()


def _to_fd(handle: Any, flags: int) -> int:
    """Hand an open file handle over to a C runtime descriptor (closing the descriptor closes the handle)."""
    w = _win32()
    raw = handle.Detach()
    try:
        return int(w.msvcrt.open_osfhandle(raw, flags))
    except BaseException:
        w.win32api.CloseHandle(raw)
        raise


def _is_reparse_point(path: Path) -> bool:
    try:
        return bool(getattr(os.lstat(path), "st_file_attributes", 0) & FILE_ATTRIBUTE_REPARSE_POINT)
    except OSError:
        return False


# -- the API ------------------------------------------------------------------------------------------------


def check_trusted(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafePath` unless only trusted accounts can change ``path`` and the directories above it.

    Links and junctions are resolved first; see the module docstring.
    """
    real = os.path.realpath(path)
    try:
        problem = path_problem(real, _path_security, trusted=_trusted(), name_of=_name_of)
    except FileNotFoundError:
        raise UnsafePath(path, "does not exist") from None
    if problem is not None:
        raise problem


def check_trusted_tree(path: str | os.PathLike[str]) -> None:
    """:func:`check_trusted` for ``path`` and, for a directory, every file and directory beneath it."""
    check_trusted(path)
    if not os.path.isdir(path):
        return
    trusted = _trusted()
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = os.path.join(root, name)
            try:
                owner, aces = _path_security(entry)
            except OSError:
                continue  # removed meanwhile: nothing will be read from it
            problem = acl_problem(entry, owner, aces, trusted=trusted, above=False, name_of=_name_of)
            if problem:
                raise UnsafePath(entry, problem)


def _check_links(path: Path, depth: int = 0) -> None:
    """Refuse a symbolic link or junction on the way to ``path`` that an untrusted account could change.

    Any user may create a junction in a directory where they may add
    entries (``C:\\ProgramData``): one created first at the configured name
    would send the agent's writes anywhere. A link is accepted when a
    trusted account owns it and its directory lets nobody else remove or
    replace it; the links its target goes through are checked the same way.
    """
    if depth > _MAX_LINK_DEPTH:
        raise UnsafePath(path, "has too many levels of symbolic links")
    trusted = _trusted()
    for component in (*reversed(path.parents), path):
        if not os.path.lexists(component):
            return  # missing: created below by the agent, or the open fails and says why
        if not _is_reparse_point(component):
            continue
        f = _win32().win32file
        handle = _open(component, _win32().ntsecuritycon.READ_CONTROL,
                       f.FILE_SHARE_READ | f.FILE_SHARE_WRITE | f.FILE_SHARE_DELETE, f.OPEN_EXISTING, directory=True)
        try:
            owner, _aces = _handle_security(handle, component)
        finally:
            handle.Close()
        if owner not in trusted:
            raise UnsafePath(path, f"{component} is a symbolic link or junction owned by "
                                   f"{_name_of(owner) if owner else 'nobody'}: remove it, or name the real directory")
        holder, holder_aces = _path_security(str(component.parent))
        problem = acl_problem(str(component.parent), holder, holder_aces, trusted=trusted, above=True,
                              name_of=_name_of)
        if problem:
            raise UnsafePath(path, f"{component} is a symbolic link or junction in {component.parent}, which is "
                                   f"{problem}")
        _check_links(Path(os.path.normpath(component.parent / os.readlink(component))), depth + 1)


def _make_dirs(path: Path) -> None:
    """Create ``path`` and any missing directory above it, each private from the start."""
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    w = _win32()
    for directory in reversed(missing):
        try:
            with _win32_errors(directory):
                w.win32file.CreateDirectory(str(directory), private_security_attributes(w, directory=True))
        except FileExistsError:
            continue


class PrivateDir:
    """A directory the agent writes into, checked once and then held open so it cannot be swapped.

    Not thread-safe: each writer owns its own instance and uses it from one
    thread at a time.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self.create = create
        self._handle: Any = None
        self._identity: tuple[int, int, int] | None = None

    def fd(self) -> int:
        """Directory descriptors are POSIX-only: always raises :class:`io.UnsupportedOperation` (an OSError)."""
        raise io.UnsupportedOperation(f"{self.path}: directory descriptors (dir_fd) do not exist on Windows; "
                                      f"use open_append, open_read or write_atomic")

    def _hold(self) -> Any:
        """The directory's handle, opening and checking it first if needed (raises OSError)."""
        if self._handle is not None and not self.stale():
            return self._handle
        self.close()
        absolute = Path(os.path.abspath(self.path))
        _check_links(absolute)
        if self.create:
            _make_dirs(absolute)
        w = _win32()
        f = w.win32file
        # No FILE_SHARE_DELETE: while this handle is open the directory cannot be renamed or removed.
        handle = _open(absolute, w.ntsecuritycon.READ_CONTROL | w.ntsecuritycon.FILE_READ_ATTRIBUTES,
                       f.FILE_SHARE_READ | f.FILE_SHARE_WRITE, f.OPEN_EXISTING, directory=True)
        try:
            attributes, _links, identity = _information(handle, absolute)
            if attributes & FILE_ATTRIBUTE_REPARSE_POINT:
                raise UnsafePath(self.path, "is a symbolic link or junction: name the real directory")
            if not attributes & FILE_ATTRIBUTE_DIRECTORY:
                raise UnsafePath(self.path, "is not a directory")
            owner, aces = _handle_security(handle, absolute)
            problem = acl_problem(str(absolute), owner, aces, trusted=_trusted(), above=False, name_of=_name_of)
            if problem:
                raise UnsafePath(self.path, problem)
            check_trusted(absolute)
            # check_trusted resolved the path again: it must still be the directory we hold
            if _identity(absolute) != identity:
                raise UnsafePath(self.path, "was replaced while it was being checked")
        except BaseException:
            handle.Close()
            raise
        self._handle, self._identity = handle, identity
        return handle

    def stale(self) -> bool:
        """True when nothing is held, or the path now names another directory."""
        if self._handle is None:
            return True
        try:
            return _identity(os.path.abspath(self.path)) != self._identity
        except OSError:
            return True

    def _checked_file(self, handle: Any, path: Path, *, writing: bool) -> None:
        """Refuse what is not a private regular file of ours; give a wider DACL the private one when writing."""
        attributes, links, _identity = _information(handle, path)
        if attributes & FILE_ATTRIBUTE_REPARSE_POINT:
            verb = "write through" if writing else "read"
            raise UnsafePath(path, f"is a symbolic link or junction: refusing to {verb} it")
        if attributes & FILE_ATTRIBUTE_DIRECTORY:
            raise UnsafePath(path, "is not a regular file")
        owner, aces = _handle_security(handle, path)
        if not writing:
            problem = acl_problem(str(path), owner, aces, trusted=_trusted(), above=False, name_of=_name_of)
            if problem:
                raise UnsafePath(path, problem)
            return
        if links != 1:
            raise UnsafePath(path, f"has {links} hard links: refusing to write to it")
        if owner not in _trusted():
            raise UnsafePath(path, f"is owned by {_name_of(owner) if owner else 'nobody'}: remove it or take "
                                   f"ownership (icacls \"{path}\" /setowner *S-1-5-32-544)")
        if not is_private(aces):
            w = _win32()
            sec = w.win32security
            dacl = build_dacl(private_aces(directory=False), sec.ACL, sec.ConvertStringSidToSid, sec.ACL_REVISION)
            with _win32_errors(path):
                sec.SetSecurityInfo(handle, sec.SE_FILE_OBJECT,
                                    sec.DACL_SECURITY_INFORMATION | sec.PROTECTED_DACL_SECURITY_INFORMATION,
                                    None, None, dacl, None)

    def open_append(self, name: str, *, readable: bool = False) -> int:
        """A descriptor appending to ``name`` in this directory, created private (raises OSError).

        Refuses a symbolic link or junction, anything but a regular file, a
        file an untrusted account owns and a file with other hard links. With
        ``readable`` the descriptor can also read.
        """
        check_name(self.path, name)
        self._hold()
        w = _win32()
        f, con = w.win32file, w.ntsecuritycon
        path = self.path / name
        access = f.FILE_GENERIC_WRITE | con.READ_CONTROL | con.WRITE_DAC | (f.FILE_GENERIC_READ if readable else 0)
        handle = _open(path, access, f.FILE_SHARE_READ | f.FILE_SHARE_WRITE | f.FILE_SHARE_DELETE, f.OPEN_ALWAYS,
                       attributes=private_security_attributes(w, directory=False))
        try:
            self._checked_file(handle, path, writing=True)
        except BaseException:
            handle.Close()
            raise
        return _to_fd(handle, os.O_APPEND)  # the C runtime moves to the end before every write

    def open_read(self, name: str) -> int:
        """A read-only descriptor of ``name`` if only trusted accounts can have written it.

        A link or junction, a non-regular file, or a file an untrusted
        account owns or may write is refused with :class:`UnsafePath`; a
        missing file raises ``FileNotFoundError``.
        """
        check_name(self.path, name)
        self._hold()
        w = _win32()
        f = w.win32file
        path = self.path / name
        handle = _open(path, f.GENERIC_READ | w.ntsecuritycon.READ_CONTROL,
                       f.FILE_SHARE_READ | f.FILE_SHARE_WRITE | f.FILE_SHARE_DELETE, f.OPEN_EXISTING)
        try:
            self._checked_file(handle, path, writing=False)
        except BaseException:
            handle.Close()
            raise
        return _to_fd(handle, os.O_RDONLY)

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` in one step: a new private file beside it, flushed, then renamed over it."""
        check_name(self.path, name)
        self._hold()
        w = _win32()
        f = w.win32file
        tmp = self.path / f".{name}.{os.urandom(8).hex()}.tmp"
        # CREATE_NEW and no sharing: never a planted file, nobody else writes it meanwhile
        handle = _open(tmp, f.GENERIC_WRITE, 0, f.CREATE_NEW,
                       attributes=private_security_attributes(w, directory=False))
        try:
            with os.fdopen(_to_fd(handle, 0), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        """Let go of the directory (the next use opens and checks it again)."""
        if self._handle is not None:
            with contextlib.suppress(Exception):
                self._handle.Close()
            self._handle = None
            self._identity = None
