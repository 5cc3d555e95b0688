"""Simple rules: validation errors name the rule id and the file; a bad rule is skipped, the rest load."""

from __future__ import annotations

from pathlib import Path

import pytest

from edr.detect.simple import BUILTIN_RULES, SimpleEngine, load_rules
from edr.event import Event

GOOD = """
[[rules]]
id = "GOOD-1"
name = "good"
type = "network"
ports = [4444]
"""


def load(tmp_path: Path, text: str, builtin: bool = False):
    p = tmp_path / "rules.toml"
    p.write_text(text)
    return p, load_rules(p, builtin=builtin)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('type = "process"\nname = "x"\n', "no matcher"),
        ('type = "registry"\nname = "x"\nprocess_names = ["a"]\n', "unknown type 'registry'"),
        ('type = "file"\nname = "x"\noperations = ["file_explode"]\n', "unknown operation(s) file_explode"),
        ('type = "network"\nname = "x"\nports = [70000]\n', "ports must be"),
        ('type = "network"\nname = "x"\ndirection = "sideways"\n', "direction must be"),
        ('type = "process"\nname = "x"\nprocess_names = ["a"]\nseverity = "apocalyptic"\n', "unknown severity"),
        ('type = "process"\nname = "x"\nprocess_names = ["a"]\nmatch = 1\n', "unknown key(s) match"),
        ('type = "process"\nname = "x"\nports = [1]\n', "ports apply to network rules only"),
        ('type = "process"\nname = "x"\nprocess_names = ["a"]\naction = "kill"\n', "unknown action"),
    ],
)
def test_bad_rule_named_and_skipped(tmp_path: Path, body: str, words: str) -> None:
    p, result = load(tmp_path, GOOD + '\n[[rules]]\nid = "BAD-7"\n' + body)
    assert [r.id for r in result.rules] == ["GOOD-1"]  # the others still load
    assert len(result.errors) == 1
    err = result.errors[0]
    assert err.rule == "BAD-7" and err.file == str(p)
    assert str(p) in str(err) and "rule BAD-7" in str(err) and words in str(err)


def test_duplicate_id(tmp_path: Path) -> None:
    p, result = load(tmp_path, GOOD + GOOD.replace('"good"', '"second"'))
    assert [(r.id, r.name) for r in result.rules] == [("GOOD-1", "good")]
    [err] = result.errors
    assert err.rule == "GOOD-1" and str(p) in str(err) and "duplicate id" in str(err)


def test_duplicate_of_a_builtin(tmp_path: Path) -> None:
    text = '[[rules]]\nid = "BUILTIN-CRON"\nname = "mine"\ntype = "file"\npaths = ["/x/"]\n'
    p, result = load(tmp_path, text, builtin=True)
    [err] = result.errors
    assert err.rule == "BUILTIN-CRON" and "duplicate id" in str(err) and str(p) in str(err)
    assert {r.id for r in result.rules} == {r["id"] for r in BUILTIN_RULES}


def test_missing_id_and_bad_file(tmp_path: Path) -> None:
    p, result = load(tmp_path, '[[rules]]\nname = "x"\ntype = "process"\nprocess_names = ["a"]\n' + GOOD)
    assert [r.id for r in result.rules] == ["GOOD-1"]
    assert "rule #1" in str(result.errors[0]) and "missing id" in str(result.errors[0])
    p, result = load(tmp_path, "[[rules]\n")
    assert result.rules == [] and "invalid TOML" in str(result.errors[0]) and str(p) in str(result.errors[0])


def test_builtins_on_off(tmp_path: Path) -> None:
    assert {r.id for r in load_rules(None).rules} == {r["id"] for r in BUILTIN_RULES}
    assert load_rules(None, builtin=False).rules == []
    _, result = load(tmp_path, '[[rules]]\nid = "BUILTIN-SUSPICIOUS-PORT"\nenabled = false\n' + GOOD, builtin=True)
    assert result.errors == []
    assert {r.id for r in result.rules} == {"BUILTIN-SYSTEMD-UNIT", "BUILTIN-CRON", "GOOD-1"}
    assert load_rules(tmp_path / "missing.toml").errors == []  # a missing file is not an error


def test_engine_alerts_carry_engine_simple() -> None:
    engine = SimpleEngine(load_rules(None).rules)
    ev = Event("network_connection", "linux", {"Image": "/usr/bin/nc", "DestinationPort": "31337"}, 0.0)
    [alert] = engine.match(ev)
    assert (alert.rule_id, alert.engine, alert.severity) == ("BUILTIN-SUSPICIOUS-PORT", "simple", "medium")
    bad_port = Event("network_connection", "linux", {"Image": "/usr/bin/nc", "DestinationPort": "ssh"}, 0.0)
    assert engine.match(bad_port) == []
    renamed = Event("file_rename", "linux", {"SourceFilename": "/tmp/x", "TargetFilename": "/etc/cron.d/x"}, 0.0)
    assert [a.rule_id for a in engine.match(renamed)] == ["BUILTIN-CRON"]
    assert engine.match(Event("dns_query", "linux", {"QueryName": "x"}, 0.0)) == []


def test_category_gates_never_change_which_rules_match() -> None:
    """The per-category prefilter is a necessary condition: with or without it, the same alerts."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    repo_rules = Path(__file__).resolve().parents[2] / "rules" / "edr-rules.toml"
    gated = SimpleEngine(load_rules(repo_rules).rules)
    plain = SimpleEngine(load_rules(repo_rules).rules)
    plain._gates = dict.fromkeys(plain._gates)  # no prefilter: every rule runs
    assert any(g is not None for g in gated._gates.values())
    paths = st.sampled_from(["/etc/cron.d/x", "/etc/systemd/system/a.service", "/root/.ssh/authorized_keys",
                             "/home/u/.ssh/authorized_keys2", "/tmp/x", "", "/etc/crontab"])
    images = st.sampled_from(["/usr/bin/nc", "/bin/sh", "/usr/bin/bash", "/usr/sbin/nginx", "/usr/bin/ls", "", "sh",
                              "C:\\Windows\\System32\\sh", "C:\\tools\\bash", "/opt/a\\b/sh", "bash\\", 5, None])
    fields = st.fixed_dictionaries({}, optional={
        "TargetFilename": paths, "SourceFilename": paths, "Image": images, "ParentImage": images,
        "DestinationPort": st.sampled_from([4444, "1337", 31337, 80, "x", None]),
        "Initiated": st.sampled_from(["true", "false"]),
        "Operation": st.sampled_from(["file_create", "file_write", "file_unlink", "file_chmod"]),
        "CommandLine": st.text(max_size=20)})
    categories = st.sampled_from(["process_creation", "network_connection", "file_event", "file_delete",
                                  "file_rename", "file_change"])

    @settings(max_examples=400, deadline=None)
    @given(categories, fields)
    def check(category: str, f: dict) -> None:
        event = Event(category=category, product="linux", fields=f, timestamp=0.0)
        assert [a.rule_id for a in gated.match(event)] == [a.rule_id for a in plain.match(event)]

    check()
    hits = [gated.match(Event(category="file_event", product="linux",
                              fields={"TargetFilename": "/etc/cron.d/x", "Image": "/bin/sh"}, timestamp=0.0))]
    assert [a.rule_id for a in hits[0]] == ["BUILTIN-CRON"]
