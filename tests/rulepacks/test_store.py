"""Installing, listing, rolling back: real archives, a real store on disk, rules loaded by edr's loader."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import minisign
import pytest

from edr.platform.private_files import check_trusted_tree
from edr.rulepacks import PackError, PackStore, active_paths, install, list_packs, rollback
from edr.rulepacks.active import NO_PACK_HINT
from tests.rulepacks.packs import (
    BROKEN_RULE,
    load,
    make_tar,
    make_zip,
    pack_entries,
    rule,
    settings,
    sigmahq_like,
    signed,
    sums,
    truncated,
    write_tree,
)


@pytest.fixture
def keypair() -> minisign.KeyPair:
    return minisign.KeyPair.generate()


def test_install_from_a_zip_activates_it(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    result = install(make_zip(tmp_path / "p.zip", sigmahq_like(3)), cfg.store_directory, cfg)
    assert result.changed and result.source_kind == "zip"
    assert (result.loaded, result.inert, result.rejected, result.rule_files) == (4, 0, 0, 4)
    assert result.previous is None
    store = PackStore(cfg.store_directory)
    assert store.active_id() == result.pack_id
    paths = active_paths(store)
    assert paths == result.rule_dirs
    assert [Path(p).name for p in paths] == ["rules", "rules-emerging-threats"]
    assert all(p.startswith(os.path.realpath(tmp_path / "store" / "packs" / result.pack_id)) for p in paths)
    # what is installed loads with the agent's loader exactly as the pack's own files do
    report = load(paths)
    assert (report.loaded, report.rejected) == (4, 0)
    content = Path(paths[0]).parent
    assert (content / "LICENSE").is_file()
    assert result.source_sha256 == __import__("hashlib").sha256((tmp_path / "p.zip").read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2", "w"])
def test_install_from_tar_archives(tmp_path: Path, mode: str) -> None:
    cfg = settings(tmp_path)
    archive = make_tar(tmp_path / "p.tar", sigmahq_like(2), mode=mode, prefix="sigma-r2026/")
    result = install(archive, cfg.store_directory, cfg)
    assert result.source_kind == "tar" and result.loaded == 3
    assert [Path(p).name for p in result.rule_dirs] == ["rules", "rules-emerging-threats"]


def test_install_from_a_directory_gives_the_same_pack_as_its_zip(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    files = sigmahq_like(2)
    first = install(write_tree(tmp_path / "checkout", files), cfg.store_directory, cfg)
    assert first.source_kind == "directory" and first.changed
    again = install(make_zip(tmp_path / "p.zip", files), cfg.store_directory, cfg)
    assert not again.changed and again.pack_id == first.pack_id and again.digest == first.digest
    assert again.report is None
    assert pack_entries(tmp_path / "store") == [first.pack_id]


def test_store_is_private_and_trusted(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    result = install(make_zip(tmp_path / "p.zip", sigmahq_like(2)), cfg.store_directory, cfg)
    root = tmp_path / "store"
    for directory in (root, root / "packs", root / "packs" / result.pack_id):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for top, dirs, names in os.walk(root / "packs" / result.pack_id):
        for d in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(top, d)).st_mode) == 0o700
        for n in names:
            assert stat.S_IMODE(os.stat(os.path.join(top, n)).st_mode) == 0o600
    check_trusted_tree(root)
    for path in active_paths(root):
        check_trusted_tree(path)
    assert os.readlink(root / "active") == f"packs/{result.pack_id}"


def test_second_pack_keeps_the_first_and_rollback_goes_back(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    store = PackStore(cfg.store_directory)
    first = install(make_zip(tmp_path / "a.zip", sigmahq_like(2, tag="a")), store, cfg)
    second = install(make_zip(tmp_path / "b.zip", sigmahq_like(5, tag="b")), store, cfg)
    assert second.previous == first.pack_id and second.loaded == 6
    listing = list_packs(store)
    assert [(p.id, p.active) for p in listing.packs] == [(first.pack_id, False), (second.pack_id, True)]
    assert "* " + second.pack_id in listing.to_text()
    assert listing.to_json()["active"] == second.pack_id

    back = rollback(store, cfg)
    assert (back.previous, back.active.id) == (second.pack_id, first.pack_id)
    assert store.active_id() == first.pack_id
    assert load(active_paths(store)).loaded == 3
    with pytest.raises(PackError, match="no earlier pack"):
        rollback(store, cfg)
    forward = rollback(store, cfg, to=second.pack_id)
    assert forward.active.id == second.pack_id and store.active_id() == second.pack_id
    with pytest.raises(PackError, match="already the active pack"):
        rollback(store, cfg, to=second.pack_id)


def test_older_packs_beyond_keep_are_removed(tmp_path: Path) -> None:
    cfg = settings(tmp_path, keep=1)
    ids = [install(make_zip(tmp_path / f"{t}.zip", sigmahq_like(1, tag=t)), cfg.store_directory, cfg).pack_id
           for t in "abc"]
    assert pack_entries(tmp_path / "store") == ids[1:]
    last = install(make_zip(tmp_path / "d.zip", sigmahq_like(1, tag="d")), cfg.store_directory, cfg)
    assert last.pruned == [ids[1]]


def test_a_truncated_archive_is_refused_and_the_active_pack_stays(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    good = install(make_zip(tmp_path / "a.zip", sigmahq_like(2)), cfg.store_directory, cfg)
    bigger = make_zip(tmp_path / "b.zip", sigmahq_like(40, tag="b"))
    for archive in (truncated(bigger, tmp_path / "t.zip"),
                    truncated(make_tar(tmp_path / "b.tgz", sigmahq_like(40, tag="b")), tmp_path / "t.tgz")):
        with pytest.raises(PackError) as info:
            install(archive, cfg.store_directory, cfg)
        assert info.value.kind == "archive", info.value
        assert "truncated" in str(info.value) and str(archive) in str(info.value)
        assert PackStore(cfg.store_directory).active_id() == good.pack_id
        assert pack_entries(tmp_path / "store") == [good.pack_id]  # no staging left behind


def test_a_corrupt_member_is_refused(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    archive = make_zip(tmp_path / "a.zip", {"rules/a.yml": rule("A") * 20})
    data = bytearray(archive.read_bytes())
    at = data.index(b"rules/a.yml") + len("rules/a.yml") + 10  # inside the compressed bytes of the member
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(PackError) as info:
        install(archive, cfg.store_directory, cfg)
    assert info.value.kind == "archive"
    assert pack_entries(tmp_path / "store") == []


def test_a_pack_with_no_rule_that_loads_is_refused(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    good = install(make_zip(tmp_path / "a.zip", sigmahq_like(2)), cfg.store_directory, cfg)
    with pytest.raises(PackError) as info:
        install(make_zip(tmp_path / "bad.zip", {"rules/a.yml": BROKEN_RULE, "rules/b.yml": b"{{{ not yaml"}),
                cfg.store_directory, cfg)
    assert info.value.kind == "empty"
    assert info.value.report is not None and info.value.report.rejected == 2
    assert {r.path for r in info.value.report.rejections} == {"rules/a.yml", "rules/b.yml"}
    assert info.value.to_json()["report"]["rejected"] == 2
    assert PackStore(cfg.store_directory).active_id() == good.pack_id
    assert pack_entries(tmp_path / "store") == [good.pack_id]


def test_rejected_rules_are_reported_and_refuse_the_pack_only_when_strict(tmp_path: Path) -> None:
    files = {**sigmahq_like(2), "rules/windows/broken.yml": BROKEN_RULE}
    archive = make_zip(tmp_path / "a.zip", files)
    strict = settings(tmp_path, strict=True)
    with pytest.raises(PackError, match=r"rules\.strict") as info:
        install(archive, strict.store_directory, strict)
    assert info.value.kind == "strict"
    assert pack_entries(tmp_path / "store") == []
    cfg = settings(tmp_path)
    result = install(archive, cfg.store_directory, cfg)
    assert (result.loaded, result.rejected) == (3, 1)
    assert "rules/windows/broken.yml" in result.to_text()
    manifest = PackStore(cfg.store_directory).manifest(result.pack_id)
    assert [r.path for r in manifest.rejections] == ["rules/windows/broken.yml"]


def test_sha256sums_are_checked(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    files = sigmahq_like(2)
    ok = install(make_zip(tmp_path / "ok.zip", {**files, "SHA256SUMS": sums(files)}), cfg.store_directory, cfg)
    assert ok.has_sums and ok.signature.status == "none"
    assert (tmp_path / "store" / "packs" / ok.pack_id / "SHA256SUMS").is_file()

    changed = dict(files)
    changed["rules/linux/process_creation/proc_a_0.yml"] = rule("Tampered")
    cases = {
        "SHA-256 mismatch": {**changed, "SHA256SUMS": sums(files)},
        "not listed": {**files, "rules/extra.yml": rule("Extra"), "SHA256SUMS": sums(files)},
        "missing from the pack": {**{k: v for k, v in files.items() if k != "LICENSE"}, "SHA256SUMS": sums(files)},
    }
    for words, pack in cases.items():
        with pytest.raises(PackError, match=words) as info:
            install(make_zip(tmp_path / "x.zip", {**pack, "README.md": b"x"}), cfg.store_directory, cfg)
        assert info.value.kind == "integrity"
        assert PackStore(cfg.store_directory).active_id() == ok.pack_id
    assert pack_entries(tmp_path / "store") == [ok.pack_id]


def test_require_signature(tmp_path: Path, keypair: minisign.KeyPair) -> None:
    other = minisign.KeyPair.generate()
    cfg = settings(tmp_path, require_signature=True, public_key=keypair.public_key.to_base64().decode())
    files = sigmahq_like(2)
    good = install(make_zip(tmp_path / "good.zip", signed(files, keypair.secret_key)), cfg.store_directory, cfg)
    assert good.signature.status == "verified" and good.signature.signed
    assert list_packs(cfg.store_directory).packs[0].to_json()["signed"] is True
    for name, pack, words in [
        ("unsigned", {**files, "SHA256SUMS": sums(files)}, "not signed"),
        ("nothing", files, "not signed"),
        ("other key", signed(sigmahq_like(3, tag="o"), other.secret_key), "does not verify"),
    ]:
        with pytest.raises(PackError, match=words) as info:
            install(make_zip(tmp_path / "x.zip", pack), cfg.store_directory, cfg)
        assert info.value.kind == "signature", name
    assert pack_entries(tmp_path / "store") == [good.pack_id]
    unset = settings(tmp_path, require_signature=True)
    with pytest.raises(PackError, match="public_key is not set") as info:
        install(make_zip(tmp_path / "good.zip", signed(files, keypair.secret_key)), unset.store_directory, unset)
    assert info.value.kind == "config"


def test_rollback_refuses_a_pack_changed_since_it_was_installed(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    first = install(make_zip(tmp_path / "a.zip", sigmahq_like(2, tag="a")), cfg.store_directory, cfg)
    second = install(make_zip(tmp_path / "b.zip", sigmahq_like(2, tag="b")), cfg.store_directory, cfg)
    victim = tmp_path / "store" / "packs" / first.pack_id / "content" / "rules-emerging-threats" / "2026" / "et_a.yml"
    victim.write_bytes(rule("Planted"))
    with pytest.raises(PackError, match="modified after the pack was installed") as info:
        rollback(cfg.store_directory, cfg)
    assert info.value.member == "rules-emerging-threats/2026/et_a.yml"
    assert PackStore(cfg.store_directory).active_id() == second.pack_id
    (victim.parent / "new.yml").write_bytes(rule("Added"))
    victim.unlink()
    with pytest.raises(PackError, match="added after"):
        rollback(cfg.store_directory, cfg)
    (victim.parent / "new.yml").unlink()
    victim.write_bytes(sigmahq_like(2, tag="a")["rules-emerging-threats/2026/et_a.yml"])
    (victim.parent / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(PackError, match="symbolic link added after") as info:
        rollback(cfg.store_directory, cfg)
    assert info.value.member == "rules-emerging-threats/2026/elsewhere"
    (victim.parent / "elsewhere").unlink()
    assert rollback(cfg.store_directory, cfg).active.id == first.pack_id  # restored exactly: accepted again


def test_active_paths_stay_inside_the_pack(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    result = install(make_zip(tmp_path / "a.zip", sigmahq_like(1)), cfg.store_directory, cfg)
    manifest = tmp_path / "store" / "packs" / result.pack_id / "pack.json"
    manifest.write_text(manifest.read_text().replace('"rules-emerging-threats"', '"../../../../etc"'))
    with pytest.raises(PackError, match="not inside the pack"):
        active_paths(cfg.store_directory)


def test_leftovers_of_an_interrupted_install_are_removed(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    first = install(make_zip(tmp_path / "a.zip", sigmahq_like(1)), cfg.store_directory, cfg)
    stale = tmp_path / "store" / "packs" / ".new-0123456789ab"
    (stale / "content").mkdir(parents=True)
    result = install(make_zip(tmp_path / "b.zip", sigmahq_like(1, tag="b")), cfg.store_directory, cfg)
    assert result.cleaned == [".new-0123456789ab"]
    assert pack_entries(tmp_path / "store") == [first.pack_id, result.pack_id]


def test_one_command_at_a_time(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    store = PackStore(cfg.store_directory)
    with store.locked(), pytest.raises(PackError, match="another 'edr rules' command") as info:
        install(make_zip(tmp_path / "a.zip", sigmahq_like(1)), cfg.store_directory, cfg)
    assert info.value.kind == "store"


def test_no_pack_installed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert active_paths(root) == []
    assert not root.exists()  # reading creates nothing
    assert list_packs(root).packs == []
    assert "edr rules update" in list_packs(root).to_text() and "edr rules update" in NO_PACK_HINT
    with pytest.raises(PackError, match="no pack is active"):
        rollback(root, settings(tmp_path))


def test_a_broken_manifest_is_listed_and_reported(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    result = install(make_zip(tmp_path / "a.zip", sigmahq_like(1)), cfg.store_directory, cfg)
    (tmp_path / "store" / "packs" / result.pack_id / "pack.json").write_text('{"format": 1}')
    listing = list_packs(cfg.store_directory)
    assert listing.packs[0].problem is not None and "invalid manifest" in listing.packs[0].problem
    assert "BROKEN" in listing.to_text()
    with pytest.raises(PackError, match="invalid manifest"):
        active_paths(cfg.store_directory)
    # installing again repairs it: the unreadable active pack is replaced
    again = install(make_zip(tmp_path / "a.zip", sigmahq_like(1)), cfg.store_directory, cfg)
    assert again.changed and again.warnings and "could not be read" in again.warnings[0]


@pytest.mark.parametrize("make", ["missing", "text"])
def test_a_source_that_is_not_a_pack(tmp_path: Path, make: str) -> None:
    cfg = settings(tmp_path)
    source = tmp_path / "source"
    if make == "text":
        source.write_text("hello\n")
    with pytest.raises(PackError) as info:
        install(source, cfg.store_directory, cfg)
    assert info.value.kind == "source" and str(source) in str(info.value)


def test_directory_source_refuses_links(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    tree = write_tree(tmp_path / "tree", sigmahq_like(1))
    (tmp_path / "secret.yml").write_bytes(rule("Secret"))
    (tree / "rules" / "linux" / "secret.yml").symlink_to(tmp_path / "secret.yml")
    with pytest.raises(PackError, match="symbolic link") as info:
        install(tree, cfg.store_directory, cfg)
    assert info.value.member == "rules/linux/secret.yml"
    assert pack_entries(tmp_path / "store") == []
