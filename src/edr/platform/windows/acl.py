"""Windows access control as plain data: the DACL edr gives its private files, and how a DACL is judged.

Pure (no pywin32): :mod:`edr.platform.windows.private_files` converts
between these records and pywin32's objects, so what is decided here is
tested on any platform.

- **Private** (the counterpart of modes 0600/0700): a protected DACL (not
  inheriting from the directory above) granting full control to SYSTEM
  and Administrators and nothing to anyone else; for a directory the two
  entries are inherited by everything created in it.
- **Trusted** (the counterpart of "owned by root, not writable by group or
  others"): the owner is SYSTEM, Administrators, TrustedInstaller or the
  agent's own account, and no access-allowed entry gives anyone else a
  right that changes the object (write, append, delete, change its
  permissions or owner). A directory *above* the checked one may also let
  others add entries (``C:\\`` and ``C:\\ProgramData`` let Users create
  folders): like a sticky ``/tmp``, that does not let them replace or
  rename what is already there, which needs delete rights they lack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

import attrs

SYSTEM_SID: Final = "S-1-5-18"
ADMINISTRATORS_SID: Final = "S-1-5-32-544"
TRUSTED_INSTALLER_SID: Final = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
#: Placeholders that only mean something when an entry is inherited, and the owner (checked apart).
CREATOR_OWNER_SID: Final = "S-1-3-0"
OWNER_RIGHTS_SID: Final = "S-1-3-4"

# winnt.h: ACE types and flags.
ACCESS_ALLOWED_ACE_TYPE: Final = 0x0
ACCESS_DENIED_ACE_TYPE: Final = 0x1
ACCESS_ALLOWED_OBJECT_ACE_TYPE: Final = 0x5
ACCESS_ALLOWED_CALLBACK_ACE_TYPE: Final = 0x9
ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE: Final = 0xB
#: What pywin32 cannot decode (it raises NotImplementedError) is recorded with this type.
UNKNOWN_ACE_TYPE: Final = -1
OBJECT_INHERIT_ACE: Final = 0x1
CONTAINER_INHERIT_ACE: Final = 0x2
INHERIT_ONLY_ACE: Final = 0x8

# winnt.h: file access rights (a directory's ADD_FILE/ADD_SUBDIRECTORY are a file's WRITE_DATA/APPEND_DATA).
FILE_WRITE_DATA: Final = 0x2
FILE_ADD_FILE: Final = 0x2
FILE_APPEND_DATA: Final = 0x4
FILE_ADD_SUBDIRECTORY: Final = 0x4
FILE_WRITE_EA: Final = 0x10
FILE_DELETE_CHILD: Final = 0x40
FILE_WRITE_ATTRIBUTES: Final = 0x100
DELETE: Final = 0x10000
WRITE_DAC: Final = 0x40000
WRITE_OWNER: Final = 0x80000
GENERIC_ALL: Final = 0x10000000
GENERIC_WRITE: Final = 0x40000000
FILE_ALL_ACCESS: Final = 0x1F01FF

#: Rights that change an object: its data or entries, attributes, permissions or owner, or its existence.
MODIFY_RIGHTS: Final = (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA | FILE_DELETE_CHILD
                        | FILE_WRITE_ATTRIBUTES | DELETE | WRITE_DAC | WRITE_OWNER | GENERIC_ALL | GENERIC_WRITE)
#: What a directory above may let others do: add entries (and touch its own attributes), never remove them.
ADD_ENTRY_RIGHTS: Final = FILE_ADD_FILE | FILE_ADD_SUBDIRECTORY | FILE_WRITE_EA | FILE_WRITE_ATTRIBUTES

_RIGHT_NAMES: Final = (
    (GENERIC_ALL, "full control"), (GENERIC_WRITE, "write"), (WRITE_DAC, "change permissions"),
    (WRITE_OWNER, "take ownership"), (DELETE, "delete"), (FILE_DELETE_CHILD, "delete entries"),
    (FILE_WRITE_DATA, "write data / add files"), (FILE_APPEND_DATA, "append / add folders"),
    (FILE_WRITE_EA, "write extended attributes"), (FILE_WRITE_ATTRIBUTES, "write attributes"),
)
_ALLOW_TYPES: Final = frozenset({ACCESS_ALLOWED_ACE_TYPE, ACCESS_ALLOWED_OBJECT_ACE_TYPE,
                                 ACCESS_ALLOWED_CALLBACK_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE})
#: The principals a private file grants full control to.
PRIVATE_SIDS: Final = (SYSTEM_SID, ADMINISTRATORS_SID)


@attrs.frozen
class Ace:
    """One access control entry: its type and inheritance flags, the access mask, the SID it names (string form)."""

    type: int
    flags: int
    mask: int
    sid: str

    @property
    def applies_here(self) -> bool:
        """False for an inherit-only entry: it is copied to new children, it grants nothing on this object."""
        return not self.flags & INHERIT_ONLY_ACE


def private_aces(*, directory: bool) -> list[Ace]:
    """A private DACL's entries: full control for SYSTEM and Administrators (inherited, for a directory)."""
    flags = OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE if directory else 0
    return [Ace(ACCESS_ALLOWED_ACE_TYPE, flags, FILE_ALL_ACCESS, sid) for sid in PRIVATE_SIDS]


def is_private(aces: Sequence[Ace] | None) -> bool:
    """Whether a DACL lets only SYSTEM and Administrators in (a NULL DACL lets everyone in)."""
    if aces is None:
        return False
    return all(ace.sid in PRIVATE_SIDS for ace in aces
               if ace.applies_here and (ace.type in _ALLOW_TYPES or ace.type == UNKNOWN_ACE_TYPE))


def trusted_sids(agent_sid: str | None) -> frozenset[str]:
    """Who may own or change what the agent trusts: SYSTEM, Administrators, TrustedInstaller, the agent's account."""
    base = {SYSTEM_SID, ADMINISTRATORS_SID, TRUSTED_INSTALLER_SID}
    return frozenset(base | {agent_sid}) if agent_sid else frozenset(base)


def describe_rights(mask: int) -> str:
    """``"write data / add files, delete"``: the modifying rights in ``mask``, for messages."""
    names = [name for bit, name in _RIGHT_NAMES if mask & bit]
    return ", ".join(names) if names else f"access mask 0x{mask:x}"


def acl_problem(path: str, owner: str | None, aces: Sequence[Ace] | None, *, trusted: Iterable[str],
                above: bool, name_of: Callable[[str], str]) -> str | None:
    """Why an object with this owner and DACL cannot be trusted, or None.

    The reason reads after "is" ("owned by ...", "writable by ...") and
    ends with the ``icacls`` command that fixes it.

    ``above``: the object is a directory above the one checked, which may
    let others add entries (see the module docstring). ``name_of`` turns a
    SID into ``DOMAIN\\name (SID)`` for the message.
    """
    trust = frozenset(trusted)
    if owner is None or owner not in trust:
        who = name_of(owner) if owner else "nobody (no owner)"
        return (f"owned by {who}, not by SYSTEM, Administrators or this agent's account: "
                f'icacls "{path}" /setowner *{ADMINISTRATORS_SID}')
    if aces is None:
        return (f"without an access control list, so everyone may change it: "
                f'icacls "{path}" /inheritance:r /grant:r *{SYSTEM_SID}:F *{ADMINISTRATORS_SID}:F')
    for ace in aces:
        if not ace.applies_here:
            continue
        if ace.type == UNKNOWN_ACE_TYPE:
            return f'carrying an access entry of a type edr cannot read: list them with icacls "{path}" and remove it'
        if ace.type not in _ALLOW_TYPES or ace.sid in trust or ace.sid in (CREATOR_OWNER_SID, OWNER_RIGHTS_SID):
            continue  # deny and audit entries grant nothing
        granted = ace.mask & MODIFY_RIGHTS
        if above:
            granted &= ~ADD_ENTRY_RIGHTS
        if granted:
            return (f"writable by {name_of(ace.sid)} ({describe_rights(granted)}): "
                    f'icacls "{path}" /inheritance:d /remove:g *{ace.sid}')
    return None
