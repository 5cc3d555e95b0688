"""Files the agent writes or trusts, opened so that another user cannot redirect or read them.

One API, this platform's implementation: :class:`PrivateDir` (a directory
of the agent's own, its files created readable by the agent's side only:
mode 0600 on POSIX, SYSTEM and Administrators on Windows),
:func:`check_trusted` and :func:`check_trusted_tree` (may a root/SYSTEM
process trust this file; :func:`status_problem`, the same for one entry of
a directory already trusted, from its status, on POSIX), :class:`UnsafePath`
(every refusal, an OSError naming the path, what is wrong and the fix). See
:mod:`edr.platform.linux.private_files` and
:mod:`edr.platform.windows.private_files`.
"""

import sys

from edr.platform.unsafe_path import UnsafePath

# Chosen as current() chooses, by sys.platform, written so that type checkers narrow it per platform.
if sys.platform == "win32":
    from edr.platform.windows.private_files import DIR_MODE, FILE_MODE, PrivateDir, check_trusted, check_trusted_tree

    #: None: what Windows trusts is in an ACL, not in a status; each entry gets :func:`check_trusted`.
    status_problem = None
else:
    from edr.platform.linux.private_files import (
        DIR_MODE,
        FILE_MODE,
        PrivateDir,
        check_trusted,
        check_trusted_tree,
        status_problem,
    )

__all__ = ["DIR_MODE", "FILE_MODE", "PrivateDir", "UnsafePath", "check_trusted", "check_trusted_tree",
           "status_problem"]
