"""Container ids, user names and the /proc seed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edr.enrich.process_cache import ProcessCache
from edr.enrich.seed import seed_from_proc
from edr.enrich.users import UserCache
from edr.platform.linux.containers import container_id_from_cgroup

ID = "0123456789abcdef" * 4


@pytest.mark.parametrize("path", [
    f"/system.slice/docker-{ID}.scope",
    f"/docker/{ID}",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope",
    f"/kubepods/besteffort/pod1/{ID}",
    f"/machine.slice/libpod-{ID}.scope/container",
    f"/kubepods.slice/kubepods-pod2.slice/crio-{ID}.scope",
])
def test_container_ids(path: str) -> None:
    assert container_id_from_cgroup(path) == ID


@pytest.mark.parametrize("path", ["/", "/user.slice/user-0.slice/session-1.scope", None,
                                  f"/machine.slice/libpod-conmon-{ID}.scope", "/docker/short"])
def test_not_containers(path: str | None) -> None:
    assert container_id_from_cgroup(path) is None


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


def _fake_proc(root: Path) -> None:
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
    _fake_proc(tmp_path)
    cache = ProcessCache()
    assert seed_from_proc(cache, UserCache(lookup={1000: "alice"}.get), str(tmp_path)) == 1
    info = cache.get(321)
    assert info is not None
    assert (info.ppid, info.image, info.command_line) == (7, "/usr/bin/python3.11", "/usr/bin/python3 -m http.server")
    assert (info.uid, info.user, info.cwd, info.container_id) == (1000, "alice", "/srv", ID)
    assert info.start_time == 1700000000 + 500 / os.sysconf("SC_CLK_TCK")


def test_seed_from_real_proc_finds_this_process() -> None:
    cache = ProcessCache()
    assert seed_from_proc(cache) > 0
    me = cache.get(os.getpid())
    assert me is not None and me.ppid == os.getppid() and me.image == os.readlink("/proc/self/exe")


def test_seed_from_missing_proc(tmp_path: Path) -> None:
    assert seed_from_proc(ProcessCache(), proc=str(tmp_path / "nope")) == 0
