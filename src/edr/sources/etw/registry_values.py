"""Registry paths and values as Sysmon writes them.

Kernel-Registry names keys in the kernel's form (``\\REGISTRY\\MACHINE\\SOFTWARE\\...``,
``\\REGISTRY\\USER\\S-1-5-21-...\\Software\\...``); Sysmon, and so SigmaHQ's rules,
use ``HKLM\\SOFTWARE\\...`` and ``HKU\\S-1-5-21-...\\Software\\...``. Value data comes
as the raw bytes of the value (``CapturedData``); Sysmon's ``Details`` is
``DWORD (0x00000001)`` for a DWORD, ``QWORD (0x00000000-0x00000001)`` for a
QWORD, the text for string types and ``Binary Data`` for the rest.
"""

from __future__ import annotations

from typing import Final

#: Key name prefixes, kernel form (lower case) -> Sysmon form.
_ROOTS: Final = (
    ("\\registry\\machine", "HKLM"),
    ("\\registry\\user", "HKU"),
)

REG_SZ: Final = 1
REG_EXPAND_SZ: Final = 2
REG_BINARY: Final = 3
REG_DWORD: Final = 4
REG_DWORD_BIG_ENDIAN: Final = 5
REG_LINK: Final = 6
REG_MULTI_SZ: Final = 7
REG_QWORD: Final = 11

#: Sysmon's names for two kernel keys (lower case, after :func:`sysmon_key`): the current
#: control set (ControlSet001 on practically every machine: ``HKLM\SYSTEM\Select\Current``)
#: and the machine's classes root.
_ALIASES: Final = (
    ("hklm\\system\\controlset001", "HKLM\\System\\CurrentControlSet"),
    ("hklm\\software\\classes", "HKCR"),
)

#: Prefix the normalizer puts before a key name whose base key it never saw
#: opened (it was opened before the session started): the part of the path
#: above the relative name is unknown.
UNKNOWN_BASE: Final = "?"


def sysmon_key(name: str) -> str:
    """A kernel key name in Sysmon's ``HKLM\\...``/``HKU\\...`` form (other names unchanged)."""
    lower = name.lower()
    for prefix, root in _ROOTS:
        if lower.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] == "\\"):
            return root + name[len(prefix):]
    return name


def sysmon_target(name: str) -> str:
    """A Sysmon-form key name with Sysmon's aliases: ``HKLM\\System\\CurrentControlSet``, ``HKCR``."""
    lower = name.lower()
    for prefix, alias in _ALIASES:
        if lower.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] == "\\"):
            return alias + name[len(prefix):]
    return name


def join_key(base: str, relative: str) -> str:
    """``base\\relative`` without doubled separators (either part may be empty)."""
    if not base:
        return relative
    if not relative:
        return base
    return base.rstrip("\\") + "\\" + relative.lstrip("\\")


def _utf16(data: bytes) -> str:
    if len(data) % 2:
        data = data[:-1]
    return data.decode("utf-16-le", errors="replace")


def value_details(value_type: int | None, data: bytes | None) -> str:
    """Sysmon's rendering of a registry value for ``Details``."""
    if data is None or value_type is None:
        return "Binary Data"
    if value_type in (REG_DWORD, REG_DWORD_BIG_ENDIAN) and len(data) >= 4:
        number = int.from_bytes(data[:4], "little" if value_type == REG_DWORD else "big")
        return f"DWORD (0x{number:08x})"
    if value_type == REG_QWORD and len(data) >= 8:
        number = int.from_bytes(data[:8], "little")
        return f"QWORD (0x{number >> 32:08x}-0x{number & 0xFFFFFFFF:08x})"
    if value_type in (REG_SZ, REG_EXPAND_SZ, REG_LINK):
        return _utf16(data).split("\x00", 1)[0]
    if value_type == REG_MULTI_SZ:
        return " ".join(part for part in _utf16(data).split("\x00") if part)
    return "Binary Data"
