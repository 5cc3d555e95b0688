"""Exclusive locks on open files on Windows: ``msvcrt.locking`` of one byte far past the data.

Windows byte-range locks are mandatory: a lock over the data would stop a
second agent reading the holder's PID from the lock file. The byte locked
is therefore beyond any data the file will hold (a range past the end of a
file may be locked). Windows releases a process's locks when it closes the
handle or exits, however it exits.
"""

from __future__ import annotations

import errno
import os
from typing import Final

#: The one byte locked: far beyond the few bytes a lock file holds, below 2**31 for the CRT's offsets.
LOCK_OFFSET: Final = 0x7FFF0000


def lock_file(fd: int) -> bool:
    """Lock byte :data:`LOCK_OFFSET` of ``fd`` without waiting: True when taken, False when another handle holds it.

    The descriptor's position is restored. Raises OSError for any failure
    other than the lock being held elsewhere.
    """
    import msvcrt

    position = os.lseek(fd, 0, os.SEEK_CUR)
    os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined, unused-ignore]
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EDEADLK):  # the CRT's "locked by another process"
            return False
        raise
    finally:
        os.lseek(fd, position, os.SEEK_SET)
    return True
