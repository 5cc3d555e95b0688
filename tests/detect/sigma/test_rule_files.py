"""Finding rule files (the order rule numbers follow) and trusting a recorded status instead of reading a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edr.detect.sigma import load_sigma
from edr.detect.sigma import ruleset as ruleset_module
from edr.detect.sigma.loader import RULE_SUFFIXES, find_rule_files
from tests.detect.sigma.conftest import fired, rule, shared_path


def listed_by_pathlib(paths: list[str]) -> list[str]:
    """What earlier versions listed: sorted(rglob), filtered on the suffix and is_file()."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in RULE_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
    return [str(p) for p in dict.fromkeys(files)]


def tricky_tree(root: Path) -> None:
    """Names whose order differs between strings and path components, odd suffixes, links."""
    for name in ("a/x.yml", "a-b/x.yml", "a.yml", "a0/y.yaml", "A/z.YML", "b/.hidden.yml", "b/.yml", "b/..yml",
                 "b/c/d/deep.yml", "dir.yml/inner.yml", "notes.txt", "b/rule.yml.bak", "b/x.Yaml"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("title: t\n")
    os.symlink(root / "a" / "x.yml", root / "b" / "linked.yml")  # a linked file is taken
    os.symlink(root / "a", root / "linked_dir")  # a linked directory is not descended into
    os.symlink(root / "nowhere.yml", root / "b" / "dangling.yml")


def test_files_are_those_and_in_the_order_pathlib_gave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tricky_tree(tmp_path / "rules")
    single = tmp_path / "rules" / "a.yml"
    monkeypatch.chdir(tmp_path)
    for paths in ([str(tmp_path / "rules")], [str(tmp_path / "rules") + "/"], ["rules"], ["./rules/"],
                  ["rules", str(single), "rules/a"], ["."], [str(tmp_path / "rules" / "b")]):
        found, missing = find_rule_files(paths)
        assert found == listed_by_pathlib(paths), paths
        assert missing == []
    found, _ = find_rule_files([str(tmp_path / "rules")])
    names = [Path(p).relative_to(tmp_path / "rules").as_posix() for p in found]
    # components sort, not strings: "a/x.yml" before "a-b/x.yml" ('/' > '-' as characters)
    assert names.index("a/x.yml") < names.index("a-b/x.yml")
    assert "b/linked.yml" in names and "b/.hidden.yml" in names and "A/z.YML" in names
    assert not any(n.startswith("linked_dir/") or n in ("b/.yml", "b/dangling.yml", "notes.txt") for n in names)


def test_a_missing_path_is_reported_with_its_name(tmp_path: Path) -> None:
    found, missing = find_rule_files([str(tmp_path / "nope"), str(tmp_path / "nope") + "/"])
    assert found == []
    assert [(m.path, m.reason) for m in missing] == [(str(tmp_path / "nope"), "path does not exist")] * 2


@pytest.mark.shared
def test_sigmahq_files_are_listed_as_pathlib_listed_them() -> None:
    rules = str(shared_path("sigma"))
    found, _missing = find_rule_files([rules])
    assert len(found) > 3000
    assert found == listed_by_pathlib([rules])


# --- a recorded status vouches for a file's content ----------------------------------------------

def _rules(directory: Path, count: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (directory / f"r{i}.yml").write_text(rule(f"sel:\n  A: 'v{i}'\ncondition: sel", title=f"R{i}"))
    return [str(directory)]


@pytest.fixture
def digests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files digested (read) from now on; files count as settled as soon as they are written."""
    read: list[str] = []
    real = ruleset_module.file_digest

    def counting(path: str) -> str:
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(ruleset_module, "file_digest", counting)
    # settled even if written in the current clock tick (file times come from a coarse clock)
    monkeypatch.setattr(ruleset_module, "SETTLED_NS", -10**9)
    return read


def test_unchanged_files_are_not_read_again(tmp_path: Path, digests: list[str]) -> None:
    paths = _rules(tmp_path / "rules", 3)
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    assert set(digests) == {"r0.yml", "r1.yml", "r2.yml"}  # before and after compiling them
    digests.clear()
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.cached and digests == []
    assert fired(engine, {"A": "v1"}) == ["R1"]


def test_content_changed_with_size_and_mtime_kept_is_seen(tmp_path: Path, digests: list[str]) -> None:
    # what a status check on size and mtime alone would miss: the change time gives it away
    paths = _rules(tmp_path / "rules", 3)
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    target = tmp_path / "rules" / "r1.yml"
    before = target.stat()
    target.write_text(target.read_text().replace("'v1'", "'w1'"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    digests.clear()
    engine, report = load_sigma(paths, cache_dir=cache)
    assert set(digests) == {"r1.yml"} and not report.cached and report.files_parsed == 1
    assert fired(engine, {"A": "w1"}) == ["R1"] and fired(engine, {"A": "v1"}) == []


def test_a_touched_file_is_digested_once_then_trusted_again(tmp_path: Path, digests: list[str]) -> None:
    paths = _rules(tmp_path / "rules", 3)
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    os.utime(tmp_path / "rules" / "r2.yml")  # a checkout or `touch`: new status, same content
    digests.clear()
    _engine, report = load_sigma(paths, cache_dir=cache)
    assert digests == ["r2.yml"] and report.cached  # same content: still a full hit
    digests.clear()
    _engine, report = load_sigma(paths, cache_dir=cache)
    assert digests == [] and report.cached  # the new status was recorded


def test_a_file_changed_just_before_it_was_digested_is_digested_again(tmp_path: Path, digests: list[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # its status might not tell a later write in the same timestamp tick: it is not recorded
    monkeypatch.setattr(ruleset_module, "SETTLED_NS", 3600 * 10**9)
    paths = _rules(tmp_path / "rules", 2)
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    for _ in range(2):
        digests.clear()
        _engine, report = load_sigma(paths, cache_dir=cache)
        assert report.cached and sorted(digests) == ["r0.yml", "r1.yml"]


def test_rules_parse_the_same_where_pyyaml_has_no_libyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from edr.detect.sigma import loader

    rules = sorted(shared_path("sigma", "rules", "windows", "builtin", "security").glob("*.yml"))[:40]
    broken = tmp_path / "broken.yml"
    broken.write_text("title: [unclosed\n")
    paths = [*map(str, rules), str(broken)]
    with_libyaml = loader.parse_files(paths)
    monkeypatch.delattr(yaml, "CSafeLoader")
    loader._yaml_loader.cache_clear()
    try:
        without = loader.parse_files(paths)
    finally:
        loader._yaml_loader.cache_clear()
    assert [r.id for r in without.rules] == [r.id for r in with_libyaml.rules] and len(without.rules) == 40
    assert [r.detection.to_dict() for r in without.rules] == [r.detection.to_dict() for r in with_libyaml.rules]
    assert [(r.path, r.stage) for r in without.rejections] == [(str(broken), "parse")]


def test_a_directory_that_cannot_be_listed_is_reported_not_skipped(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rules directory the agent cannot list (a permission error) is a rejection naming it, not silence."""
    import os

    from edr.detect.sigma.loader import find_rule_files

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.yml").write_text("title: a\n")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.yml").write_text("title: b\n")
    real = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, rejected = find_rule_files([str(tmp_path)])
    assert files == [str(tmp_path / "ok" / "a.yml")]
    assert [(r.path, r.reason) for r in rejected] == [
        (str(tmp_path / "locked"), "cannot list the directory: Permission denied")]
