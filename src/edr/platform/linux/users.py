"""User names from the passwd database (NSS: files, LDAP, sssd... whatever the host configures)."""

from __future__ import annotations

import pwd


def user_name(uid: int) -> str | None:
    """The name of ``uid``, or None when the passwd database has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None
