"""Exclusive advisory locks on open files: flock(2)."""

from __future__ import annotations

import errno
import fcntl


def lock_file(fd: int) -> bool:
    """``flock(fd, LOCK_EX | LOCK_NB)``: True when taken, False when another open file description holds it.

    The lock belongs to the open file description, so the kernel drops it
    when the last descriptor of it closes, however the process ends.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True
