"""Windows private files, the parts that need no Windows: which ACEs are built, how an ACL is judged.

The pywin32 objects are stand-ins recording what is done to them, shaped as
pywin32 documents them (``PyACL.GetAce`` tuples, ``AddAccessAllowedAceEx``
arguments, ``SECURITY_DESCRIPTOR`` setters).
"""

from __future__ import annotations

import errno
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edr.platform.unsafe_path import UnsafePath
from edr.platform.windows import private_files as wpf
from edr.platform.windows.acl import (
    ACCESS_ALLOWED_ACE_TYPE,
    ACCESS_ALLOWED_OBJECT_ACE_TYPE,
    ACCESS_DENIED_ACE_TYPE,
    ADMINISTRATORS_SID,
    CONTAINER_INHERIT_ACE,
    CREATOR_OWNER_SID,
    DELETE,
    FILE_ADD_FILE,
    FILE_ADD_SUBDIRECTORY,
    FILE_ALL_ACCESS,
    FILE_DELETE_CHILD,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FILE_WRITE_EA,
    GENERIC_WRITE,
    INHERIT_ONLY_ACE,
    OBJECT_INHERIT_ACE,
    SYSTEM_SID,
    TRUSTED_INSTALLER_SID,
    UNKNOWN_ACE_TYPE,
    Ace,
    acl_problem,
    is_private,
    private_aces,
    trusted_sids,
)

USERS = "S-1-5-32-545"
AGENT = "S-1-5-21-1-2-3-1001"
MALLORY = "S-1-5-21-1-2-3-1002"
READ_EXECUTE = 0x1200A9
TRUSTED = trusted_sids(AGENT)
NAMES = {USERS: "BUILTIN\\Users", MALLORY: "HOST\\mallory", AGENT: "HOST\\edr"}


def name_of(sid: str) -> str:
    return f"{NAMES.get(sid, '?')} ({sid})"


def allow(sid: str, mask: int, flags: int = 0) -> Ace:
    return Ace(ACCESS_ALLOWED_ACE_TYPE, flags, mask, sid)


ADMIN_FULL = [allow(SYSTEM_SID, FILE_ALL_ACCESS), allow(ADMINISTRATORS_SID, FILE_ALL_ACCESS)]


def problem(owner: str | None, aces: list[Ace] | None, *, above: bool = False) -> str | None:
    return acl_problem("C:\\ProgramData\\edr\\rules", owner, aces, trusted=TRUSTED, above=above, name_of=name_of)


# -- what is built --------------------------------------------------------------------------------------------


def test_private_aces_are_full_control_for_system_and_administrators_only() -> None:
    inherit = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE
    assert private_aces(directory=True) == [Ace(ACCESS_ALLOWED_ACE_TYPE, inherit, FILE_ALL_ACCESS, "S-1-5-18"),
                                            Ace(ACCESS_ALLOWED_ACE_TYPE, inherit, FILE_ALL_ACCESS, "S-1-5-32-544")]
    assert private_aces(directory=False) == [Ace(ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, "S-1-5-18"),
                                             Ace(ACCESS_ALLOWED_ACE_TYPE, 0, FILE_ALL_ACCESS, "S-1-5-32-544")]
    assert FILE_ALL_ACCESS == 0x1F01FF  # winnt.h: STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x1FF


class RecordingAcl:
    """pywin32's PyACL as far as build_dacl uses it."""

    def __init__(self) -> None:
        self.added: list[tuple[int, int, int, Any]] = []

    def AddAccessAllowedAceEx(self, revision: int, flags: int, mask: int, sid: Any) -> None:
        self.added.append((revision, flags, mask, sid))


class RecordingDescriptor:
    def __init__(self) -> None:
        self.dacl: tuple[bool, Any, bool] | None = None
        self.control: tuple[int, int] | None = None

    def SetSecurityDescriptorDacl(self, present: bool, dacl: Any, defaulted: bool) -> None:
        self.dacl = (present, dacl, defaulted)

    def SetSecurityDescriptorControl(self, interest: int, bits: int) -> None:
        self.control = (interest, bits)


def standin_win32security() -> SimpleNamespace:
    return SimpleNamespace(ACL=RecordingAcl, SECURITY_DESCRIPTOR=RecordingDescriptor,
                           SECURITY_ATTRIBUTES=lambda: SimpleNamespace(SECURITY_DESCRIPTOR=None, bInheritHandle=True),
                           ConvertStringSidToSid=lambda s: ("PySID", s), ACL_REVISION=2, SE_DACL_PROTECTED=0x1000)


def test_build_dacl_adds_each_entry_in_order_with_its_flags() -> None:
    acl = wpf.build_dacl(private_aces(directory=True), RecordingAcl, lambda s: ("PySID", s), 2)
    inherit = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE
    assert acl.added == [(2, inherit, FILE_ALL_ACCESS, ("PySID", SYSTEM_SID)),
                         (2, inherit, FILE_ALL_ACCESS, ("PySID", ADMINISTRATORS_SID))]


@pytest.mark.parametrize("directory", [True, False])
def test_security_attributes_carry_a_protected_private_dacl(directory: bool) -> None:
    w = SimpleNamespace(win32security=standin_win32security())
    attributes = wpf.private_security_attributes(w, directory=directory)
    descriptor = attributes.SECURITY_DESCRIPTOR
    assert attributes.bInheritHandle is False
    assert descriptor.control == (0x1000, 0x1000)  # SE_DACL_PROTECTED: nothing inherited from above
    present, dacl, defaulted = descriptor.dacl
    assert present is True and defaulted is False
    flags = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE if directory else 0
    assert [(f, m, sid) for _rev, f, m, (_kind, sid) in dacl.added] == [
        (flags, FILE_ALL_ACCESS, SYSTEM_SID), (flags, FILE_ALL_ACCESS, ADMINISTRATORS_SID)]


class StandinDacl:
    """pywin32's PyACL as GetAce returns entries: ((type, flags), mask, sid) or the object-ACE 5-tuple."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries

    def GetAceCount(self) -> int:
        return len(self.entries)

    def GetAce(self, index: int) -> Any:
        entry = self.entries[index]
        if entry is NotImplemented:
            raise NotImplementedError("Ace type 9 is not supported yet")
        return entry


def test_aces_are_read_from_pywin32_tuples() -> None:
    dacl = StandinDacl([
        ((ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE), FILE_ALL_ACCESS, ("PySID", SYSTEM_SID)),
        ((ACCESS_ALLOWED_ACE_TYPE, 0), -2147483648, ("PySID", USERS)),  # GENERIC_READ as pywin32's signed long
        ((ACCESS_ALLOWED_OBJECT_ACE_TYPE, 0), FILE_WRITE_DATA, None, None, ("PySID", MALLORY)),
        NotImplemented,
    ])
    aces = wpf.aces_from_dacl(dacl, lambda sid: sid[1])
    assert aces == [Ace(ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE, FILE_ALL_ACCESS, SYSTEM_SID),
                    Ace(ACCESS_ALLOWED_ACE_TYPE, 0, 0x80000000, USERS),
                    Ace(ACCESS_ALLOWED_OBJECT_ACE_TYPE, 0, FILE_WRITE_DATA, MALLORY),
                    Ace(UNKNOWN_ACE_TYPE, 0, 0, "")]
    assert wpf.aces_from_dacl(None, str) is None  # a NULL DACL


# -- how an ACL is judged -------------------------------------------------------------------------------------


def test_private_means_nobody_but_system_and_administrators() -> None:
    assert is_private(ADMIN_FULL)
    assert is_private([*ADMIN_FULL, Ace(ACCESS_DENIED_ACE_TYPE, 0, FILE_ALL_ACCESS, USERS)])  # a deny grants nothing
    assert is_private([*ADMIN_FULL, allow(USERS, READ_EXECUTE, OBJECT_INHERIT_ACE | INHERIT_ONLY_ACE)])
    assert not is_private([*ADMIN_FULL, allow(USERS, READ_EXECUTE)])  # readable by others: not 0600
    assert not is_private([*ADMIN_FULL, allow(AGENT, FILE_ALL_ACCESS)])
    assert not is_private([*ADMIN_FULL, Ace(UNKNOWN_ACE_TYPE, 0, 0, "")])
    assert not is_private(None)  # a NULL DACL lets everyone in


def test_trusted_owners_and_writers() -> None:
    assert problem(SYSTEM_SID, ADMIN_FULL) is None
    assert problem(ADMINISTRATORS_SID, [*ADMIN_FULL, allow(TRUSTED_INSTALLER_SID, FILE_ALL_ACCESS)]) is None
    assert problem(AGENT, [*ADMIN_FULL, allow(AGENT, FILE_ALL_ACCESS)]) is None  # the agent's own account
    assert trusted_sids(None) == {SYSTEM_SID, ADMINISTRATORS_SID, TRUSTED_INSTALLER_SID}


def test_readers_are_fine_writers_are_not() -> None:
    assert problem(SYSTEM_SID, [*ADMIN_FULL, allow(USERS, READ_EXECUTE)]) is None
    for right in (FILE_WRITE_DATA, FILE_ADD_SUBDIRECTORY, FILE_WRITE_EA, FILE_WRITE_ATTRIBUTES, DELETE,
                  FILE_DELETE_CHILD, GENERIC_WRITE, 0x40000, 0x80000, 0x10000000):
        found = problem(SYSTEM_SID, [*ADMIN_FULL, allow(MALLORY, READ_EXECUTE | right)])
        assert found is not None and found.startswith("writable by HOST\\mallory (S-1-5-21-1-2-3-1002) ("), right
        assert found.endswith(f'icacls "C:\\ProgramData\\edr\\rules" /inheritance:d /remove:g *{MALLORY}')


def test_an_untrusted_owner_is_refused_whatever_the_dacl_says() -> None:
    """The owner may always change the DACL (implicit WRITE_DAC), so a private-looking DACL is not enough."""
    assert problem(MALLORY, ADMIN_FULL) == ("owned by HOST\\mallory (S-1-5-21-1-2-3-1002), not by SYSTEM, "
                                            "Administrators or this agent's account: "
                                            'icacls "C:\\ProgramData\\edr\\rules" /setowner *S-1-5-32-544')
    assert problem(None, ADMIN_FULL) is not None and problem(None, ADMIN_FULL).startswith("owned by nobody")


def test_a_null_dacl_and_unreadable_entries_are_refused() -> None:
    assert problem(SYSTEM_SID, None).startswith("without an access control list, so everyone may change it")
    assert problem(SYSTEM_SID, [*ADMIN_FULL, Ace(UNKNOWN_ACE_TYPE, 0, 0, "")]).startswith(
        "carrying an access entry of a type edr cannot read")


def test_entries_that_grant_nothing_here_are_ignored() -> None:
    """Inherit-only entries apply to children; deny entries take away; CREATOR OWNER is a placeholder."""
    aces = [*ADMIN_FULL,
            allow(USERS, FILE_ALL_ACCESS, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE),
            Ace(ACCESS_DENIED_ACE_TYPE, 0, FILE_ALL_ACCESS, MALLORY),
            allow(CREATOR_OWNER_SID, FILE_ALL_ACCESS)]
    assert problem(SYSTEM_SID, aces) is None


def test_a_directory_above_may_let_others_add_entries_like_a_sticky_tmp() -> None:
    """C:\\ProgramData: Users may create files and folders (and set attributes) but not delete others' entries."""
    program_data = [*ADMIN_FULL, allow(USERS, READ_EXECUTE),
                    allow(USERS, FILE_ADD_FILE | FILE_ADD_SUBDIRECTORY | FILE_WRITE_EA | FILE_WRITE_ATTRIBUTES,
                          CONTAINER_INHERIT_ACE)]
    assert problem(SYSTEM_SID, program_data, above=True) is None
    # the same entries on the checked object itself: Users could add a rule file to it
    assert problem(SYSTEM_SID, program_data).startswith("writable by BUILTIN\\Users")
    # above, delete rights still let others replace what is checked below
    for right in (FILE_DELETE_CHILD, DELETE, 0x40000):
        assert problem(SYSTEM_SID, [*ADMIN_FULL, allow(USERS, FILE_ADD_FILE | right)], above=True) is not None


def test_a_path_is_judged_with_every_directory_above_it() -> None:
    tree: dict[str, tuple[str | None, list[Ace] | None]] = {
        "C:\\": (TRUSTED_INSTALLER_SID, [*ADMIN_FULL, allow(USERS, FILE_ADD_SUBDIRECTORY)]),
        "C:\\ProgramData": (SYSTEM_SID, [*ADMIN_FULL, allow(USERS, FILE_ADD_FILE | FILE_ADD_SUBDIRECTORY)]),
        "C:\\ProgramData\\edr": (ADMINISTRATORS_SID, ADMIN_FULL),
        "C:\\ProgramData\\edr\\rules.yml": (ADMINISTRATORS_SID, [*ADMIN_FULL, allow(USERS, READ_EXECUTE)]),
    }

    def security(path: str) -> tuple[str | None, list[Ace] | None]:
        if path not in tree:
            raise FileNotFoundError(path)
        return tree[path]

    def judge(path: str) -> UnsafePath | None:
        return wpf.path_problem(path, security, trusted=TRUSTED, name_of=name_of)

    assert judge("C:\\ProgramData\\edr\\rules.yml") is None
    tree["C:\\ProgramData\\edr"] = (MALLORY, ADMIN_FULL)  # created first by a user: ProgramData allows that
    refused = judge("C:\\ProgramData\\edr\\rules.yml")
    assert isinstance(refused, UnsafePath) and refused.path == "C:\\ProgramData\\edr\\rules.yml"
    assert refused.reason.startswith("its directory C:\\ProgramData\\edr is owned by HOST\\mallory")
    tree["C:\\ProgramData\\edr"] = (ADMINISTRATORS_SID, ADMIN_FULL)
    tree["C:\\ProgramData\\edr\\rules.yml"] = (ADMINISTRATORS_SID, [*ADMIN_FULL, allow(USERS, FILE_WRITE_DATA)])
    assert judge("C:\\ProgramData\\edr\\rules.yml").reason.startswith("writable by BUILTIN\\Users")
    with pytest.raises(FileNotFoundError):
        judge("C:\\ProgramData\\edr\\missing.yml")


# -- the rest that needs no Windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(("winerror", "kind", "code"), [
    (2, FileNotFoundError, errno.ENOENT), (3, FileNotFoundError, errno.ENOENT), (5, PermissionError, errno.EACCES),
    (183, FileExistsError, errno.EEXIST), (80, FileExistsError, errno.EEXIST), (1920, OSError, errno.EIO),
])
def test_pywin32_errors_become_the_oserror_python_would_raise(winerror: int, kind: type, code: int) -> None:
    error = SimpleNamespace(winerror=winerror, funcname="CreateFile", strerror="The system says no.")
    converted = wpf.os_error(error, Path("C:/x/y"))
    assert type(converted) is kind and converted.errno == code
    assert converted.filename == str(Path("C:/x/y")) and "CreateFile: The system says no." in str(converted)


@pytest.mark.parametrize("name", ["alerts.json.2026-12-02", "edr.lock", ".sigma-cache.bin.0123.tmp", "NULL.txt"])
def test_plain_file_names_are_accepted(name: str) -> None:
    wpf.check_name(Path("logs"), name)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "C:x", "alerts.json:hidden", "NUL", "nul.txt",
                                  "COM1", "lpt9.log", "CON ", "trailing.", "trailing "])
def test_names_windows_would_read_otherwise_are_refused(name: str) -> None:
    with pytest.raises(UnsafePath, match="is not a plain file name"):
        wpf.check_name(Path("logs"), name)


def test_directory_descriptors_are_refused_as_an_oserror() -> None:
    """Callers treat an OSError as a failed write and retry; a TypeError from os.listdir(fd) would crash them."""
    with pytest.raises(io.UnsupportedOperation, match="dir_fd"):
        wpf.PrivateDir("C:\\ProgramData\\edr\\logs").fd()
    assert issubclass(io.UnsupportedOperation, OSError)
