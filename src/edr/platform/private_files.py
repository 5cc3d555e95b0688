"""Files the agent writes or trusts, opened so that another user cannot redirect them (POSIX for now)."""

from edr.platform.linux.private_files import (
    DIR_MODE,
    FILE_MODE,
    PrivateDir,
    UnsafePath,
    check_trusted,
    check_trusted_tree,
)

__all__ = ["DIR_MODE", "FILE_MODE", "PrivateDir", "UnsafePath", "check_trusted", "check_trusted_tree"]
