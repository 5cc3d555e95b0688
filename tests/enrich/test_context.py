"""User names and the process cache's seed (the running processes as the platform lists them)."""

from __future__ import annotations

import os
from pathlib import Path

from edr.enrich.enricher import Enricher
from edr.enrich.process_cache import ProcessCache
from edr.enrich.seed import seed_cache
from edr.enrich.users import UserCache
from edr.platform.facts import ProcessSnapshot
from edr.platform.linux import procfs

ID = "0123456789abcdef" * 4


def test_user_cache() -> None:
    calls: list[int] = []

    def lookup(uid: int) -> str | None:
        calls.append(uid)
        return {0: "root"}.get(uid)

    u = UserCache(lookup=lookup)
    assert [u.name(0), u.name(0), u.name(5)] == ["root", "root", "5"]
    assert calls == [0, 5]


def test_user_cache_real_passwd() -> None:
    import pwd

    assert UserCache().name(0) == pwd.getpwuid(0).pw_name


def fake_proc(root: Path) -> None:
    """A /proc with one user process (pid 321), a kernel thread, a vanished pid and ``self``."""
    (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    p = root / "321"
    p.mkdir()
    rest = " ".join(["S", "7"] + ["0"] * 17 + ["500"] + ["0"] * 10)
    (p / "stat").write_text(f"321 (my (odd) name) {rest}\n")
    (p / "cmdline").write_bytes(b"/usr/bin/python3\0-m\0http.server\0")
    (p / "status").write_text("Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\n")
    (p / "cgroup").write_text(f"0::/system.slice/docker-{ID}.scope\n")
    os.symlink("/usr/bin/python3.11", p / "exe")
    os.symlink("/srv", p / "cwd")
    k = root / "2"  # a kernel thread: no command line
    k.mkdir()
    (k / "stat").write_text(f"2 (kthreadd) {rest}\n")
    (k / "cmdline").write_bytes(b"")
    (root / "999").mkdir()  # vanished mid-scan: no files
    (root / "self").mkdir()


def test_seed_from_fake_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    cache = ProcessCache()
    assert seed_cache(cache, procfs.running_processes(str(tmp_path)), UserCache(lookup={1000: "alice"}.get)) == 1
    info = cache.get(321)
    assert info is not None
    assert (info.ppid, info.image, info.command_line) == (7, "/usr/bin/python3.11", "/usr/bin/python3 -m http.server")
    assert (info.uid, info.user, info.cwd, info.container_id) == (1000, "alice", "/srv", ID)
    assert info.start_time == 1700000000 + 500 / os.sysconf("SC_CLK_TCK")


def test_seed_from_real_proc_finds_this_process() -> None:
    enricher = Enricher()
    assert enricher.seed_running() > 0
    me = enricher.processes.get(os.getpid())
    assert me is not None and me.ppid == os.getppid() and me.image == os.readlink("/proc/self/exe")


def test_seed_from_missing_proc(tmp_path: Path) -> None:
    assert seed_cache(ProcessCache(), procfs.running_processes(str(tmp_path / "nope"))) == 0


def test_a_user_the_platform_names_is_kept_and_a_uid_is_named_through_the_cache() -> None:
    """Windows snapshots carry the account name (no uid); Linux ones a uid the user cache names."""
    cache = ProcessCache()
    users = UserCache(lookup={1000: "alice"}.get)
    snapshots = [ProcessSnapshot(pid=10, ppid=1, image="C:\\x.exe", command_line="x", user="CORP\\bob"),
                 ProcessSnapshot(pid=11, ppid=1, image="/bin/y", command_line="y", uid=1000),
                 ProcessSnapshot(pid=12, ppid=1, image="/bin/z", command_line="z")]
    assert seed_cache(cache, snapshots, users) == 3
    infos = [cache.get(pid) for pid in (10, 11, 12)]
    assert [(info.user, info.uid) if info else None for info in infos] == [
        ("CORP\\bob", None), ("alice", 1000), (None, None)]
