"""YARA core: per-file compile so one broken file does not stop the rest; file scans."""

from __future__ import annotations

from pathlib import Path

import yara

from edr.detect.yara_rules import compile_rules
from tests.scan.marked import MARKER, RULE, marked_binary, rules_dir


def test_corrupt_rule_file_is_reported_with_file_and_line_and_others_load(tmp_path: Path) -> None:
    rules = compile_rules(rules_dir(tmp_path / "rules"))
    assert rules.rule_count == 2
    assert len(rules.errors) == 1
    err = rules.errors[0]
    assert f"{tmp_path}/rules/broken.yar(6)" in str(err) and "syntax error" in str(err)
    assert (err.file, err.line) == (f"{tmp_path}/rules/broken.yar", 6)
    assert sorted(Path(f).name for f in rules.files) == ["edr_test_marker.yar", "other.yara"]
    assert rules.summary() == "2 rule(s) from 2 file(s); 1 file(s) skipped"


def test_scan_file_names_rule_namespace_and_tags(tmp_path: Path) -> None:
    rules = compile_rules(rules_dir(tmp_path / "rules"))
    hits = rules.scan_file(str(marked_binary(tmp_path)), 5, debug=True)
    assert [h.rule_id for h in hits] == [f"yara:edr_test_marker:{RULE}"]
    assert hits[0].tags == ("test", "demo")
    assert hits[0].strings[0]["data"] == MARKER.decode()
    assert rules.scan_file(str(marked_binary(tmp_path, "clean", marker=False)), 5) == []


def test_same_rule_name_in_two_files_lives_in_two_namespaces(tmp_path: Path) -> None:
    (tmp_path / "a.yar").write_text('rule Dup { strings: $a = "DUPDUP" condition: $a }')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yar").write_text('rule Dup { strings: $a = "DUPDUP" condition: $a }')
    (tmp_path / "f").write_bytes(b"..DUPDUP..")
    rules = compile_rules(tmp_path)
    assert rules.errors == []
    hits = rules.scan_file(str(tmp_path / "f"), 5)
    assert sorted(h.rule_id for h in hits) == ["yara:a:Dup", "yara:sub/b:Dup"]


def test_missing_rules_path_and_unreadable_target(tmp_path: Path) -> None:
    empty = compile_rules(tmp_path / "nowhere")
    assert empty.rules is None and "not found" in str(empty.errors[0])
    assert empty.errors[0].file == str(tmp_path / "nowhere")
    assert empty.scan_file("/etc/hostname", 1) == []
    rules = compile_rules(rules_dir(tmp_path / "rules"))
    try:
        rules.scan_file(str(tmp_path / "vanished"), 1)
    except yara.Error:
        pass
    else:
        raise AssertionError("scanning a missing file must raise yara.Error for the caller to count")
