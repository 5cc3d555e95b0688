"""File events from the real programs, with absolute paths."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from edr.event import FILE_CHANGE, FILE_DELETE, FILE_EVENT, FILE_RENAME, F
from tests.sources.ebpf.live import LiveCapture, run_python

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


def _ops(live: LiveCapture, since: int, path: str, count: int, settle: float = 0.3) -> list[tuple[str, str]]:
    found = live.wait_for(lambda e: e.category in (FILE_EVENT, FILE_DELETE, FILE_RENAME, FILE_CHANGE)
                          and e.get(F.TARGET_FILENAME) == path, since, count=count, settle=settle)
    return [(e.category, e.fields[F.OPERATION]) for e in found]


def test_append_to_an_existing_file_is_a_write_not_a_create(live: LiveCapture, tmp_path: Path) -> None:
    f = tmp_path.resolve() / "existing.txt"
    f.write_text("old\n")
    time.sleep(0.1)  # older than a kernel tick: its birth is before the shell's open
    since = live.mark()
    subprocess.run(["/bin/sh", "-c", f"echo x >> {f}"], check=True)
    assert _ops(live, since, str(f), 1) == [(FILE_EVENT, "file_write")]
    # and overwritten with > (O_CREAT|O_TRUNC on a file that exists): a write too
    since = live.mark()
    subprocess.run(["/bin/sh", "-c", f"echo y > {f}"], check=True)
    assert _ops(live, since, str(f), 1) == [(FILE_EVENT, "file_write")]


def test_append_creating_the_file_is_a_create(live: LiveCapture, tmp_path: Path) -> None:
    """The first >> creates the file; the next, later than a kernel tick, writes it.

    (An O_CREAT open within a tick of the file's birth counts as its create:
    birth times come from the coarse clock, see edr.sources.ebpf.decode.)
    """
    f = tmp_path.resolve() / "new.txt"
    since = live.mark()
    subprocess.run(["/bin/sh", "-c", f"echo x >> {f}; sleep 0.1; echo y >> {f}"], check=True)
    assert _ops(live, since, str(f), 2) == [(FILE_EVENT, "file_create"), (FILE_EVENT, "file_write")]


def test_file_written_in_dev_shm_has_its_full_path(live: LiveCapture) -> None:
    name = f"/dev/shm/edr-test-{uuid.uuid4().hex[:8]}.edr-ioc-demo"
    since = live.mark()
    try:
        subprocess.run(["/bin/sh", "-c", f"echo payload > {name}; chmod 755 {name}"], check=True)
        assert _ops(live, since, name, 2) == [(FILE_EVENT, "file_create"), (FILE_CHANGE, "file_chmod")]
    finally:
        os.unlink(name)


def test_device_node_writes_are_not_file_events(live: LiveCapture) -> None:
    marker = uuid.uuid4().hex[:8]
    shm = f"/dev/shm/edr-test-{marker}"
    since = live.mark()
    try:
        subprocess.run(["/bin/sh", "-c", f"echo a > /dev/null; echo b > /dev/full || :; echo c > {shm}"],
                       check=True, capture_output=True)
        # the /dev/shm file is the last write: once it is in, the device writes would be too
        assert _ops(live, since, shm, 1) == [(FILE_EVENT, "file_create")]
    finally:
        os.unlink(shm)
    devices = live.wait_for(lambda e: e.category == FILE_EVENT
                            and e.get(F.TARGET_FILENAME) in ("/dev/null", "/dev/full"), since, timeout=0.2)
    assert devices == []


def test_cd_tmp_and_touch_rel_gives_tmp_rel(live: LiveCapture) -> None:
    name = f"edr-rel-{uuid.uuid4().hex[:8]}"
    since = live.mark()
    try:
        subprocess.run(["/bin/sh", "-c", f"cd /tmp && touch {name}"], check=True)
        assert _ops(live, since, f"/tmp/{name}", 1) == [(FILE_EVENT, "file_create")]
    finally:
        os.unlink(f"/tmp/{name}")


def test_rm_r_of_a_tree_by_a_process_already_gone(live: LiveCapture, tmp_path: Path) -> None:
    """rm -r (fts) works through duplicated directory descriptors: the kernel joins them to the names."""
    d = tmp_path.resolve() / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_text("a")
    (d / "sub" / "b").write_text("b")
    since = live.mark()
    subprocess.run(["/bin/rm", "-r", str(d)], check=True)
    found = live.wait_for(lambda e: e.category == FILE_DELETE and str(e.get(F.TARGET_FILENAME, "")).startswith(
        str(d)), since, count=4, settle=0.3)
    assert sorted((e.fields[F.OPERATION], e.fields[F.TARGET_FILENAME]) for e in found) == [
        ("file_rmdir", str(d)), ("file_rmdir", f"{d}/sub"), ("file_unlink", f"{d}/a"), ("file_unlink", f"{d}/sub/b")]


def test_fchmod_after_write_by_a_process_already_gone(live: LiveCapture, tmp_path: Path) -> None:
    """install(1) creates, writes and fchmods its file, then exits before the decoder could ask /proc."""
    target = tmp_path.resolve() / "tool"
    since = live.mark()
    subprocess.run(["/usr/bin/install", "-m", "755", "/bin/true", str(target)], check=True)
    ops = _ops(live, since, str(target), 2)
    assert (FILE_EVENT, "file_create") in ops and (FILE_CHANGE, "file_chmod") in ops, ops


DIRFD_AFTER_FCHDIR = r"""
import os, sys
d = sys.argv[1]
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.chdir("/")
os.fchdir(fd)          # the working directory from a descriptor
os.close(fd)
open("via-fchdir.txt", "w").close()
p = os.open(d, os.O_PATH)
os.mkdir("via-o-path", dir_fd=p)
os._exit(0)
"""


def test_fchdir_and_o_path_descriptors_of_a_process_already_gone(live: LiveCapture, tmp_path: Path) -> None:
    d = tmp_path.resolve()
    since = live.mark()
    run_python(DIRFD_AFTER_FCHDIR, str(d))
    assert _ops(live, since, f"{d}/via-fchdir.txt", 1) == [(FILE_EVENT, "file_create")]
    assert _ops(live, since, f"{d}/via-o-path", 1) == [(FILE_EVENT, "file_mkdir")]
