"""edr.rulepacks.layout: names, hostile entries and which files are rules, decided from the listing alone."""

from __future__ import annotations

import pytest

from edr.detect.sigma.loader import RULE_SUFFIXES as LOADER_SUFFIXES
from edr.rulepacks import Limits, PackError
from edr.rulepacks.layout import RULE_SUFFIXES, Entry, normalize_name, plan_pack

LIMITS = Limits()


def files(*names: str, size: int = 10) -> list[Entry]:
    return [Entry(n, "file", size) for n in names]


def test_rule_suffixes_are_the_loaders() -> None:
    assert RULE_SUFFIXES == LOADER_SUFFIXES


@pytest.mark.parametrize(("raw", "words"), [
    ("/etc/cron.d/evil.yml", "absolute path"),
    ("rules/../../etc/passwd", "'..'"),
    ("..", "'..'"),
    ("C:/Windows/evil.yml", "drive letter"),
    ("rules\\..\\evil.yml", "backslash"),
    ("rules/a\x00.yml", "NUL"),
    ("rules/a\n.yml", "line break"),
    ("", "empty name"),
    ("a/" * 40 + "x.yml", "deeper than"),
])
def test_unsafe_names_are_refused_with_the_reason(raw: str, words: str) -> None:
    with pytest.raises(PackError) as info:
        normalize_name(raw)
    assert info.value.kind == "unsafe"
    assert words in info.value.reason


def test_names_are_normalized() -> None:
    assert normalize_name("./rules//linux/./a.yml") == "rules/linux/a.yml"
    assert normalize_name("rules/linux/") == "rules/linux"
    assert normalize_name("./") == ""


def test_sigmahq_release_layout_installs_rule_directories_and_licence_only() -> None:
    plan = plan_pack(files("rules/windows/a.yml", "rules/linux/b.yaml", "rules-emerging-threats/2026/c.yml",
                           "rules-threat-hunting/d.yml", "rules-threat-hunting/README.md",
                           "logsource-mapping-thor.yml", "tests/test_rules.py", "deprecated/old.yml",
                           "LICENSE", "README.md"), LIMITS)
    assert plan.prefix == ""
    assert plan.rule_dirs == ("rules", "rules-emerging-threats", "rules-threat-hunting")
    assert plan.install == {"rules/windows/a.yml", "rules/linux/b.yaml", "rules-emerging-threats/2026/c.yml",
                            "rules-threat-hunting/d.yml", "LICENSE"}
    assert plan.rule_files == 4
    # everything visible is read (so SHA256SUMS can be checked against it), not installed
    assert set(plan.read.values()) >= {"deprecated/old.yml", "README.md", "tests/test_rules.py"}


def test_a_single_wrapping_directory_is_stripped() -> None:
    plan = plan_pack([Entry("sigma-r2026-11-20/", "dir"),
                      *files("sigma-r2026-11-20/rules/linux/a.yml", "sigma-r2026-11-20/SHA256SUMS",
                             "sigma-r2026-11-20/LICENSE")], LIMITS)
    assert plan.prefix == "sigma-r2026-11-20/"
    assert plan.read["sigma-r2026-11-20/rules/linux/a.yml"] == "rules/linux/a.yml"
    assert plan.rule_dirs == ("rules",)
    assert plan.sums == "SHA256SUMS"


def test_a_lone_rules_directory_is_not_stripped() -> None:
    plan = plan_pack(files("rules/linux/a.yml", "rules/windows/b.yml"), LIMITS)
    assert plan.prefix == ""
    assert plan.rule_dirs == ("rules",)


def test_a_flat_pack_is_one_rule_directory() -> None:
    plan = plan_pack(files("linux/a.yml", "windows/b.yml", "c.yml", "notes.txt"), LIMITS)
    assert plan.rule_dirs == ("",)
    assert plan.install == {"linux/a.yml", "windows/b.yml", "c.yml"}


def test_a_rules_directory_without_rule_files_is_not_loaded() -> None:
    plan = plan_pack(files("rules/linux/a.yml", "rules-placeholder/README.md"), LIMITS)
    assert plan.rule_dirs == ("rules",)


def test_hidden_entries_are_neither_read_nor_installed() -> None:
    plan = plan_pack(files("rules/a.yml", ".git/config", "rules/.hidden.yml", ".github/workflows/x.yml"), LIMITS)
    assert set(plan.read.values()) == {"rules/a.yml"}
    assert plan.ignored == 3


@pytest.mark.parametrize(("kind", "words"), [
    ("symlink", "symbolic link"), ("hardlink", "hard link"), ("device", "device"), ("fifo", "FIFO"),
    ("socket", "socket"),
])
def test_links_and_special_files_refuse_the_pack(kind: str, words: str) -> None:
    with pytest.raises(PackError) as info:
        plan_pack([*files("rules/a.yml"), Entry("rules/b.yml", kind)], LIMITS)
    assert info.value.kind == "unsafe"
    assert info.value.member == "rules/b.yml"
    assert words in info.value.reason


def test_reader_problems_refuse_the_pack() -> None:
    with pytest.raises(PackError, match="is encrypted") as info:
        plan_pack([Entry("rules/a.yml", "file", 10, "is encrypted: encrypted packs are not supported")], LIMITS)
    assert info.value.kind == "archive"


def test_duplicates_and_files_used_as_directories_are_refused() -> None:
    with pytest.raises(PackError, match="appears twice"):
        plan_pack(files("rules/a.yml", "rules/./a.yml"), LIMITS)
    with pytest.raises(PackError, match="which is a file"):
        plan_pack(files("rules/a.yml", "rules/a.yml/b.yml"), LIMITS)


def test_limits_on_entries_and_declared_sizes() -> None:
    small = Limits(max_files=3, max_unpacked_bytes=100, max_file_bytes=60)
    with pytest.raises(PackError, match=r"more than rules\.max_files") as info:
        plan_pack(files("rules/a.yml", "rules/b.yml", "rules/c.yml", "rules/d.yml"), small)
    assert info.value.kind == "limit"
    with pytest.raises(PackError, match="one file of a pack may hold") as info:
        plan_pack(files("rules/a.yml", size=61), small)
    assert info.value.member == "rules/a.yml"
    with pytest.raises(PackError, match="max_unpacked_bytes"):
        plan_pack(files("rules/a.yml", "rules/b.yml", size=55), small)


def test_no_rule_file_is_an_empty_pack() -> None:
    with pytest.raises(PackError, match="no Sigma rule file") as info:
        plan_pack(files("README.md", "rules/notes.txt"), LIMITS)
    assert info.value.kind == "empty"
