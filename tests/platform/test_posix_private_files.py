"""edr.platform.private_files on POSIX: trust checks and private directories, attacked by a real unprivileged user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edr.platform.private_files import PrivateDir, UnsafePath, check_trusted, check_trusted_tree

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def as_nobody(*argv: str) -> None:
    """Run ``argv`` as the unprivileged user nobody (what an attacker on the host can do)."""
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv], check=True)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp that other users can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="edr-safe-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_private_dir_is_created_0700_with_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    d = PrivateDir(target)
    fd = d.open_append("x.log")
    os.write(fd, b"line\n")
    os.close(fd)
    assert (target / "x.log").read_bytes() == b"line\n"
    for p in (tmp_path / "a", target):
        assert p.stat().st_mode & 0o777 == 0o700
    assert (target / "x.log").stat().st_mode & 0o777 == 0o600
    d.close()


def test_existing_file_is_tightened_to_0600(tmp_path: Path) -> None:
    f = tmp_path / "x.log"
    f.write_bytes(b"old\n")
    f.chmod(0o644)
    fd = PrivateDir(tmp_path).open_append("x.log")
    os.close(fd)
    assert f.stat().st_mode & 0o777 == 0o600


def test_group_or_world_writable_directory_is_refused(tmp_path: Path) -> None:
    for mode in (0o777, 0o1777, 0o770):
        d = tmp_path / f"d{mode:o}"
        d.mkdir()
        d.chmod(mode)
        with pytest.raises(UnsafePath, match="writable by"):
            PrivateDir(d).fd()


def test_symlinked_file_is_refused_and_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret\n")
    victim.chmod(0o644)
    (tmp_path / "logs").mkdir(mode=0o700)
    (tmp_path / "logs" / "alerts.json").symlink_to(victim)
    with pytest.raises(UnsafePath, match="symbolic link"):
        PrivateDir(tmp_path / "logs").open_append("alerts.json")
    assert victim.read_bytes() == b"secret\n"
    assert victim.stat().st_mode & 0o777 == 0o644


def test_hard_linked_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir(mode=0o700)
    other = tmp_path / "other"
    other.write_bytes(b"x")
    os.link(other, tmp_path / "logs" / "alerts.json")
    with pytest.raises(UnsafePath, match="hard links"):
        PrivateDir(tmp_path / "logs").open_append("alerts.json")


def test_directory_replaced_while_open_is_noticed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    d = PrivateDir(logs)
    os.close(d.open_append("a"))
    assert not d.stale()
    logs.rename(tmp_path / "moved")
    assert d.stale()
    os.close(d.open_append("a"))  # opens the new directory, not the one moved away
    assert (logs / "a").exists()


def test_directory_removed_while_open_is_noticed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    d = PrivateDir(logs)
    os.close(d.open_append("a"))
    (logs / "a").unlink()
    logs.rmdir()
    assert d.stale()
    os.close(d.open_append("a"))
    assert (logs / "a").exists()


def test_write_atomic_replaces_whole_file_0600(tmp_path: Path) -> None:
    d = PrivateDir(tmp_path / "cache")
    d.write_atomic("c.bin", b"one")
    d.write_atomic("c.bin", b"two")
    assert (tmp_path / "cache" / "c.bin").read_bytes() == b"two"
    assert (tmp_path / "cache" / "c.bin").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["c.bin"]
    fd = d.open_read("c.bin")
    assert os.read(fd, 10) == b"two"
    os.close(fd)


def test_open_read_refuses_links_and_writable_files(tmp_path: Path) -> None:
    d = PrivateDir(tmp_path / "cache")
    d.write_atomic("c.bin", b"data")
    (tmp_path / "cache" / "link").symlink_to(tmp_path / "cache" / "c.bin")
    with pytest.raises(UnsafePath, match="symbolic link"):
        d.open_read("link")
    (tmp_path / "cache" / "c.bin").chmod(0o666)
    with pytest.raises(UnsafePath, match="writable by"):
        d.open_read("c.bin")
    with pytest.raises(FileNotFoundError):
        d.open_read("absent")


def test_check_trusted_accepts_sticky_ancestor_but_not_writable_file(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    good = sticky / "conf.toml"
    good.write_text("")
    good.chmod(0o644)
    check_trusted(good)
    good.chmod(0o666)
    with pytest.raises(UnsafePath, match=r"writable by .*chmod go-w"):
        check_trusted(good)
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    inner = loose / "conf.toml"
    inner.write_text("")
    with pytest.raises(UnsafePath, match="its directory"):
        check_trusted(inner)


def test_check_trusted_tree_finds_one_bad_rule_deep_inside(tmp_path: Path) -> None:
    rules = tmp_path / "rules" / "a" / "b"
    rules.mkdir(parents=True)
    (rules / "ok.yml").write_text("")
    check_trusted_tree(tmp_path / "rules")
    (rules / "bad.yml").write_text("")
    (rules / "bad.yml").chmod(0o646)
    with pytest.raises(UnsafePath, match=r"bad\.yml"):
        check_trusted_tree(tmp_path / "rules")


@pytest.mark.root
@as_root
def test_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "conf.toml"
    f.write_text("")
    os.chown(f, NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match="owned by nobody"):
        check_trusted(f)


@pytest.mark.root
@as_root
def test_nobody_cannot_redirect_a_write_through_a_directory_it_owns(open_tmp: Path) -> None:
    """The attack of the review: nobody plants today's file name as a link to a root file."""
    tmp_path = open_tmp
    victim = tmp_path / "root-owned"
    victim.write_bytes(b"root data\n")
    victim.chmod(0o644)
    shared = tmp_path / "logs"
    shared.mkdir()
    os.chown(shared, NOBODY, NOBODY)
    as_nobody("ln", "-s", str(victim), str(shared / "alerts.json.2026-12-02"))
    with pytest.raises(UnsafePath, match="owned by nobody"):
        PrivateDir(shared).open_append("alerts.json.2026-12-02")
    assert victim.read_bytes() == b"root data\n"
    assert victim.stat().st_mode & 0o777 == 0o644
