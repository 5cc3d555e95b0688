"""One agent per configuration: the flock in agent.state_directory, held by real processes and killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edr.instance_lock import LOCK_NAME, InstanceLocked, acquire
from edr.platform.private_files import UnsafePath

HOLDER = """
import sys, time
from edr.instance_lock import acquire
lock = acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_file_holds_the_pid_and_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = acquire(state)
    try:
        assert (state / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert state.stat().st_mode & 0o777 == 0o700
        assert (state / LOCK_NAME).stat().st_mode & 0o777 == 0o600
        with pytest.raises(InstanceLocked) as info:
            acquire(state)  # another open file description, even in this process, is refused
        assert info.value.pid == os.getpid()
        assert f"PID {os.getpid()}" in str(info.value) and str(state / LOCK_NAME) in str(info.value)
    finally:
        lock.release()
    again = acquire(state)  # released: the next one gets it
    again.release()


def test_relative_state_directory_is_named_absolutely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lock = acquire("state")
    try:
        with pytest.raises(InstanceLocked, match=str(tmp_path / "state" / LOCK_NAME)):
            acquire("state")
    finally:
        lock.release()


def test_lock_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceLocked) as info:
            acquire(state)
        assert info.value.pid == holder.pid
        holder.send_signal(signal.SIGKILL)  # no clean-up of any kind runs
        holder.wait(timeout=10)
        assert (state / LOCK_NAME).read_text() == f"{holder.pid}\n"  # the stale file is still there...
        lock = acquire(state)  # ...and does not matter: the kernel dropped the lock
        assert (state / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_planted_symlink_is_refused_and_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / LOCK_NAME).symlink_to(victim)
    with pytest.raises(UnsafePath, match="symbolic link"):
        acquire(state)
    assert victim.read_text() == "precious\n"


def test_state_directory_other_users_can_write_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(UnsafePath, match="writable by"):
        acquire(state)
    assert not (state / LOCK_NAME).exists()


def test_pid_is_waited_for_while_the_holder_writes_it(tmp_path: Path) -> None:
    """A holder between flock and writing its PID: the second reader waits briefly and still names it."""
    state = tmp_path / "state"
    code = f"""
import fcntl, os, sys, time
from edr.platform.private_files import PrivateDir
fd = PrivateDir(sys.argv[1]).open_append({LOCK_NAME!r})
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
print("locked", flush=True)
time.sleep(0.3)
os.write(fd, b"%d\\n" % os.getpid())
time.sleep(600)
"""
    holder = subprocess.Popen([sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(InstanceLocked) as info:
            acquire(state)
        assert info.value.pid == holder.pid and time.monotonic() - t0 < 1.0
    finally:
        holder.kill()
        holder.wait()
