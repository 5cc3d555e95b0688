"""File events from the real programs, with absolute paths."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from edr.event import FILE_CHANGE, FILE_DELETE, FILE_EVENT, FILE_RENAME, F
from tests.ebpf.live import LiveCapture, run_python

TRIGGER = r"""
import os, sys, time
d = sys.argv[1]
a, b = os.path.join(d, "a.txt"), os.path.join(d, "b.txt")
fd = os.open(a, os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"x"); os.close(fd)
fd = os.open(a, os.O_WRONLY | os.O_APPEND); os.write(fd, b"y"); os.close(fd)
fd = os.open(a, os.O_RDONLY); os.close(fd)  # read-only: not reported
os.rename(a, b)
os.chmod(b, 0o600)
os.chown(b, os.getuid(), os.getgid())
os.link(b, os.path.join(d, "hard.txt"))
os.symlink("b.txt", os.path.join(d, "sym.txt"))
os.unlink(b)
os.mkdir(os.path.join(d, "sub")); os.rmdir(os.path.join(d, "sub"))
os.chdir(d)
fd = os.open("rel.txt", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644); os.close(fd)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
fd = os.open("viadir.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd); os.close(fd)
os.rename("viadir.txt", "viadir2.txt", src_dir_fd=dfd, dst_dir_fd=dfd)
os.unlink("viadir2.txt", dir_fd=dfd)
time.sleep(0.5)  # a directory fd is resolved through /proc/pid/fd while the process lives
"""


def _in(d: Path, live: LiveCapture, since: int, count: int) -> list:
    prefix = str(d) + "/"

    def mine(e) -> bool:
        return e.category in (FILE_EVENT, FILE_DELETE, FILE_RENAME, FILE_CHANGE) and (
            str(e.get(F.TARGET_FILENAME, "")).startswith(prefix)
            or str(e.get(F.SOURCE_FILENAME, "")).startswith(prefix))

    return live.wait_for(mine, since, count=count, settle=0.3)


def test_create_write_rename_chmod_delete(live: LiveCapture, tmp_path: Path) -> None:
    d = tmp_path.resolve()
    since = live.mark()
    run_python(TRIGGER, str(d))
    got = [(e.category, e.fields[F.OPERATION], e.get(F.SOURCE_FILENAME), e.fields[F.TARGET_FILENAME])
           for e in _in(d, live, since, count=15)]
    s = str(d)
    assert got == [
        (FILE_EVENT, "file_create", None, f"{s}/a.txt"),
        (FILE_EVENT, "file_write", None, f"{s}/a.txt"),
        (FILE_RENAME, "file_rename", f"{s}/a.txt", f"{s}/b.txt"),
        (FILE_CHANGE, "file_chmod", None, f"{s}/b.txt"),
        (FILE_CHANGE, "file_chown", None, f"{s}/b.txt"),
        (FILE_EVENT, "file_link", f"{s}/b.txt", f"{s}/hard.txt"),
        (FILE_EVENT, "file_symlink", "b.txt", f"{s}/sym.txt"),
        (FILE_DELETE, "file_unlink", None, f"{s}/b.txt"),
        (FILE_EVENT, "file_mkdir", None, f"{s}/sub"),
        (FILE_DELETE, "file_rmdir", None, f"{s}/sub"),
        # relative to the working directory after chdir
        (FILE_EVENT, "file_create", None, f"{s}/rel.txt"),
        # relative to a directory fd (openat, renameat, unlinkat)
        (FILE_EVENT, "file_create", None, f"{s}/viadir.txt"),
        (FILE_RENAME, "file_rename", f"{s}/viadir.txt", f"{s}/viadir2.txt"),
        (FILE_DELETE, "file_unlink", None, f"{s}/viadir2.txt"),
    ]


def test_relative_path_of_a_process_already_gone(live: LiveCapture, tmp_path: Path) -> None:
    """The shell exits right after; its cwd comes from the chdir it made, not /proc."""
    d = tmp_path.resolve()
    since = live.mark()
    subprocess.run(["/bin/sh", "-c", f"cd {d} && : > gone.txt && mkdir -p x/y && cd x && : > ../x/y/z.txt"],
                   check=True)
    got = {(e.fields[F.OPERATION], e.fields[F.TARGET_FILENAME]) for e in _in(d, live, since, count=4)}
    assert (("file_create", f"{d}/gone.txt") in got and ("file_create", f"{d}/x/y/z.txt") in got), got
    assert ("file_mkdir", f"{d}/x") in got or ("file_mkdir", f"{d}/x/y") in got, got
    # the event's process is the shell / mkdir, not this test
    assert os.getpid() not in {e.fields[F.PROCESS_ID] for e in _in(d, live, since, count=1)}
