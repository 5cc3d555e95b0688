"""One agent per configuration: an exclusive lock on ``<agent.state_directory>/edr.lock``.

Two agents started on the same configuration would both watch the host and
write every alert twice (and answer it twice). ``edr run`` therefore takes
this lock before it loads anything; a second one finds it held and exits 2,
naming the holder's PID (which the holder writes into the file) and the file.

The lock (:meth:`~edr.platform.facade.Platform.lock_file`: ``flock`` on
Linux, ``msvcrt.locking`` on Windows) belongs to the open file, not to the
path: the system releases it when the holder's descriptor closes, which
happens when the process ends however it ends (SIGKILL and crashes
included), so a stale lock file never blocks the next start. Nothing has to
remove the file.

The state directory is a :class:`~edr.platform.private_files.PrivateDir`
(private: created 0700 or with a SYSTEM/Administrators-only ACL, checked,
the file opened without following links), so another user can neither
plant the lock file as a link to something of root's nor hold the lock in
the agent's place.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Final

from edr.platform import current
from edr.platform.private_files import PrivateDir

LOCK_NAME: Final = "edr.lock"
#: How long a second agent waits to read the holder's PID, which the holder
#: writes just after it took the lock.
_PID_WAIT_SECS: Final = 1.0


class InstanceLocked(Exception):
    """Another agent holds the lock; ``pid`` is its process id (None if it could not be read)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"PID {pid}" if pid is not None else "another process (PID not readable)"
        super().__init__(f"another edr agent is already running on this configuration: {who} holds the lock "
                         f"{path} (agent.state_directory); stop it first, or give this agent its own "
                         f"state_directory")
        self.path = path
        self.pid = pid


class InstanceLock:
    """The held lock; :meth:`release` (or process exit) lets the next agent start."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: the next holder overwrites it."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _read_pid(directory: PrivateDir) -> int | None:
    """The PID in the lock file, waiting briefly for a holder that has just taken the lock."""
    deadline = time.monotonic() + _PID_WAIT_SECS
    while True:
        try:
            fd = directory.open_read(LOCK_NAME)
        except OSError:
            return None
        try:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def acquire(state_directory: str | os.PathLike[str]) -> InstanceLock:
    """Take the instance lock in ``state_directory`` (created 0700) without waiting.

    Raises :class:`InstanceLocked` when another process holds it, and
    OSError (:class:`~edr.platform.private_files.UnsafePath` included, whose message
    says what is wrong and how to fix it) when the directory or the file
    cannot be used.
    """
    directory = PrivateDir(os.path.abspath(state_directory))  # messages name the file wherever it was started
    try:
        fd = directory.open_append(LOCK_NAME)
        try:
            taken = current().lock_file(fd)
        except BaseException:
            os.close(fd)
            raise
        if not taken:
            os.close(fd)
            raise InstanceLocked(directory.path / LOCK_NAME, _read_pid(directory))
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
    finally:
        directory.close()
    return InstanceLock(directory.path / LOCK_NAME, fd)
