"""Hostile archives: traversal, absolute paths, links, devices, bombs. Refused, named, and nothing written outside."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from edr.rulepacks import PackError, PackStore, install
from tests.rulepacks.packs import (
    add_tar_file,
    add_tar_special,
    make_zip,
    pack_entries,
    rule,
    settings,
    sigmahq_like,
    zip_symlink,
)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, str]:
    """A store with a good pack active, and the directory an attack aims at (beside the store)."""
    cfg = settings(tmp_path)
    good = install(make_zip(tmp_path / "good.zip", sigmahq_like(1)), cfg.store_directory, cfg)
    (tmp_path / "target").mkdir()
    return tmp_path, good.pack_id


def _refused(tmp_path: Path, archive: Path, good: str, kind: str, words: str, **overrides: object) -> PackError:
    cfg = settings(tmp_path, **overrides)
    with pytest.raises(PackError) as info:
        install(archive, cfg.store_directory, cfg)
    err = info.value
    assert err.kind == kind, err
    assert words in str(err), err
    assert str(archive) in str(err)
    # nothing new anywhere: no pack, no staging, nothing in the attack's target, the good pack still active
    assert pack_entries(tmp_path / "store") == [good]
    assert PackStore(cfg.store_directory).active_id() == good
    assert os.listdir(tmp_path / "target") == []
    return err


def _outside(tmp_path: Path) -> str:
    """A name from the pack root that reaches tmp_path/target/evil.yml."""
    return "../" * 6 + str(tmp_path / "target" / "evil.yml").lstrip("/")


def test_zip_path_traversal(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    name = "rules/" + _outside(tmp_path)
    archive = make_zip(tmp_path / "x.zip", {"rules/a.yml": rule("A"), name: rule("Evil")})
    err = _refused(tmp_path, archive, good, "unsafe", "'..'")
    assert err.member == name


def test_zip_absolute_path(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    name = str(tmp_path / "target" / "evil.yml")
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("rules/a.yml", rule("A"))
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # ZipInfo() would strip the leading '/'; an attacker's tool does not
        zf.writestr(info, rule("Evil"))
    assert name in zipfile.ZipFile(tmp_path / "x.zip").namelist()
    err = _refused(tmp_path, tmp_path / "x.zip", good, "unsafe", "absolute path")
    assert err.member is not None and err.member.startswith("/")


def test_zip_symlink(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("rules/a.yml", rule("A"))
        zip_symlink(zf, "rules/link", str(tmp_path / "target"))
        zf.writestr("rules/link/evil.yml", rule("Evil"))
    err = _refused(tmp_path, tmp_path / "x.zip", good, "unsafe", "symbolic link")
    assert err.member == "rules/link"


@pytest.mark.parametrize(("kind", "words"), [
    (tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"), (tarfile.CHRTYPE, "device"),
    (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "FIFO"),
])
def test_tar_links_and_devices(world: tuple[Path, str], kind: bytes, words: str) -> None:
    tmp_path, good = world
    with tarfile.open(tmp_path / "x.tgz", "w:gz") as tf:
        add_tar_file(tf, "rules/a.yml", rule("A"))
        add_tar_special(tf, "rules/link", kind, str(tmp_path / "target"))
        add_tar_file(tf, "rules/link/evil.yml", rule("Evil"))
    err = _refused(tmp_path, tmp_path / "x.tgz", good, "unsafe", words)
    assert err.member == "rules/link"


@pytest.mark.parametrize("absolute", [False, True])
def test_tar_traversal_and_absolute_paths(world: tuple[Path, str], absolute: bool) -> None:
    tmp_path, good = world
    name = str(tmp_path / "target" / "evil.yml") if absolute else "rules/" + _outside(tmp_path)
    with tarfile.open(tmp_path / "x.tgz", "w:gz") as tf:
        add_tar_file(tf, "rules/a.yml", rule("A"))
        add_tar_file(tf, name, rule("Evil"))
    _refused(tmp_path, tmp_path / "x.tgz", good, "unsafe", "absolute path" if absolute else "'..'")


def test_zip_bomb_is_refused_on_its_declared_size(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    with zipfile.ZipFile(tmp_path / "x.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rules/a.yml", rule("A"))
        zf.writestr("rules/b.yml", b"\0" * (8 << 20))  # 8 MiB of zeros: 8 KB compressed
    assert (tmp_path / "x.zip").stat().st_size < 64 << 10
    _refused(tmp_path, tmp_path / "x.zip", good, "limit", "max_unpacked_bytes", max_unpacked_bytes=1 << 20)


def test_zip_member_larger_than_declared_is_not_read_past_its_size(world: tuple[Path, str]) -> None:
    """A zip whose headers understate a member's size: the reader stops at the declared size and the CRC fails."""
    tmp_path, good = world
    big = rule("A") + b"#" * 200_000
    with zipfile.ZipFile(tmp_path / "x.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rules/a.yml", big)
    data = bytearray((tmp_path / "x.zip").read_bytes())
    size = len(big).to_bytes(4, "little")
    assert data.count(size) == 2  # local header and central directory
    data = data.replace(size, (1000).to_bytes(4, "little"))
    (tmp_path / "x.zip").write_bytes(bytes(data))
    _refused(tmp_path, tmp_path / "x.zip", good, "archive", "corrupt archive")


def test_gzip_tar_bomb_stops_at_the_limit_while_decompressing(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    with tarfile.open(tmp_path / "x.tgz", "w:gz") as tf:
        add_tar_file(tf, ".hidden/zeros", b"\0" * (16 << 20))  # never read as a pack file, yet decompressed
        add_tar_file(tf, "rules/a.yml", rule("A"))
    assert (tmp_path / "x.tgz").stat().st_size < 64 << 10
    _refused(tmp_path, tmp_path / "x.tgz", good, "limit", "decompresses to more than",
             max_unpacked_bytes=1 << 20, max_files=100)


def test_too_many_files(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    archive = make_zip(tmp_path / "x.zip", {f"rules/r{i}.yml": rule(f"R{i}") for i in range(60)})
    _refused(tmp_path, archive, good, "limit", "max_files", max_files=50)
    with tarfile.open(tmp_path / "x.tgz", "w:gz") as tf:
        for i in range(60):
            add_tar_file(tf, f"rules/r{i}.yml", rule(f"R{i}"))
    _refused(tmp_path, tmp_path / "x.tgz", good, "limit", "max_files", max_files=50)


def test_archive_too_large(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    archive = make_zip(tmp_path / "x.zip", {"rules/a.yml": rule("A"), "rules/b.bin": os.urandom(200_000)})
    _refused(tmp_path, archive, good, "limit", "max_download_bytes", max_download_bytes=100_000)


def test_one_file_larger_than_the_per_file_limit(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    archive = make_zip(tmp_path / "x.zip", {"rules/a.yml": rule("A"), "rules/huge.yml": b"#" * (9 << 20)})
    err = _refused(tmp_path, archive, good, "limit", "one file of a pack may hold")
    assert err.member == "rules/huge.yml"


def test_encrypted_zip_member(world: tuple[Path, str]) -> None:
    tmp_path, good = world
    archive = make_zip(tmp_path / "x.zip", {"rules/a.yml": rule("A")})
    data = bytearray(archive.read_bytes())
    # set the "encrypted" flag (bit 0 of the general purpose flags) in the local and central headers
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        data[at] |= 0x01
    archive.write_bytes(bytes(data))
    _refused(tmp_path, archive, good, "archive", "encrypted")
