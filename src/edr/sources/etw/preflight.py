"""What can be known of the ETW sensor's preconditions before a session starts (for ``edr doctor``).

Each ``probe_*`` returns a :class:`Precondition`: whether it holds, what was
found, and otherwise the problem and its fix. Import-safe everywhere:
pywintrace, pywin32 and ``ctypes.windll`` are reached only inside the probes,
which off Windows report that they cannot hold.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import NamedTuple

#: How every probe ends off Windows.
_NOT_WINDOWS = "the ETW sensor runs on Windows only"


class Precondition(NamedTuple):
    """One precondition of the ETW sensor as found on this host."""

    ok: bool
    found: str
    problem: str = ""
    fix: str = ""


def probe_pywintrace() -> Precondition:
    """pywintrace (its ``etw`` module), which the session is driven through."""
    try:
        module = importlib.import_module("etw")
    except Exception as exc:  # ImportError, or OSError/AttributeError from ctypes.windll off Windows
        return Precondition(False, "not importable", f"pywintrace (the etw module) cannot be loaded: {exc}",
                            "install edr on Windows with its Windows dependencies "
                            "(pip install edr installs pywintrace and pywin32)")
    return Precondition(True, f"importable ({getattr(module, '__file__', '?')})")


def probe_pywin32() -> Precondition:
    """pywin32, which names accounts and reads ACLs."""
    try:
        importlib.import_module("win32api")
        importlib.import_module("win32security")
    except Exception as exc:
        return Precondition(False, "not importable", f"pywin32 cannot be loaded: {exc}",
                            "install edr on Windows with its Windows dependencies (pip install edr installs pywin32)")
    return Precondition(True, "importable")


def probe_admin() -> Precondition:
    """Administrator rights: a real-time session with the kernel providers needs them."""
    windll = getattr(ctypes, "windll", None)
    if windll is None:
        return Precondition(False, "not Windows", f"administrator rights cannot be checked: {_NOT_WINDOWS}",
                            "run edr on Windows")
    try:
        admin = bool(windll.shell32.IsUserAnAdmin())
    except (AttributeError, OSError) as exc:
        return Precondition(False, "unknown", f"administrator rights cannot be checked: {exc}",
                            "run edr from an elevated prompt or as a service")
    if not admin:
        return Precondition(False, "not an administrator",
                            "an ETW session with the kernel providers needs administrator rights",
                            "run edr from an elevated prompt, or as the service (LocalSystem)")
    return Precondition(True, "administrator")
