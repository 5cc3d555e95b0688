"""Loading, reporting, caching, routing, alert shape and bounded evaluation time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edr.detect.sigma import load_sigma, rules_check
from edr.detect.sigma.logsources import LINUX_EBPF_FED, WINDOWS_EVENTLOG_FED
from tests.detect.sigma.conftest import RuleLoader, fired, make_event, rule

MULTI_DOC = """
action: global
title: Global Part
status: test
logsource:
    product: windows
    category: process_creation
detection:
    condition: sel
---
detection:
    sel:
        Image|endswith: '\\a.exe'
---
detection:
    sel:
        Image|endswith: '\\b.exe'
"""


def test_multi_document_and_global_action(load_rules: RuleLoader) -> None:
    engine, report = load_rules(MULTI_DOC)
    assert report.loaded == 2 and report.rejected == 0
    assert fired(engine, {"Image": "c:\\b.exe"}) == ["Global Part"]


def test_bad_rules_are_reported_and_skipped(load_rules: RuleLoader, tmp_path: Path) -> None:
    engine, report = load_rules(
        rule("sel:\n  A|nosuchmodifier: 'x'\ncondition: sel", title="Bad Modifier"),
        "title: [unclosed\n",
        rule("sel:\n  A: 'x'\ncondition: sel and missing", title="Bad Reference"),
        rule("sel:\n  A: 'x'\ncondition: sel", title="Fine"),
    )
    assert report.loaded == 1
    assert report.rejected == 3
    reasons = {r.title or Path(r.path).name: r for r in report.rejections}
    assert "nosuchmodifier" in reasons["Bad Modifier"].reason
    assert reasons["Bad Reference"].stage == "compile"
    assert any(r.stage == "parse" and not r.title for r in report.rejections)  # the YAML error
    assert all(r.path for r in report.rejections)
    assert fired(engine, {"A": "x"}) == ["Fine"]
    text = report.to_text()
    assert "Bad Modifier" in text and "rejected" in text
    assert report.to_json()["rejected"] == 3


def test_missing_path_is_reported() -> None:
    _engine, report = load_sigma(["/nonexistent/rules"])
    assert report.rejected == 1 and "does not exist" in report.rejections[0].reason


def test_rules_check_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(rule("sel:\n  A: 'x'\ncondition: sel"))
    text, doc, code = rules_check([str(tmp_path)])
    assert code == 0 and doc["loaded"] == 1 and doc["compile_failures"] == 0
    assert "windows/process_creation/-" in text
    (tmp_path / "bad.yaml").write_text(rule("sel:\n  A|bogus: 'x'\ncondition: sel"))
    assert rules_check([str(tmp_path)])[2] == 0
    _text, doc, code = rules_check([str(tmp_path)], strict=True)
    assert code == 1 and doc["rejected"] == 1
    assert rules_check([str(tmp_path / "empty-dir-does-not-exist")])[2] == 2


def test_inert_rules_are_counted_per_logsource(load_rules: RuleLoader) -> None:
    engine, report = load_rules(
        rule("sel:\n  A: 'x'\ncondition: sel", title="Win"),
        rule("sel:\n  A: 'x'\ncondition: sel", title="Cloud", product="aws", category="cloudtrail"),
        fed=WINDOWS_EVENTLOG_FED,
    )
    assert report.loaded == 1 and report.inert == 1
    assert report.per_logsource["aws/cloudtrail/-"].inert == 1
    assert engine.statistics()["rules_inert"] == 1


def test_routing_by_product_category_and_service(load_rules: RuleLoader) -> None:
    security = """
    title: Security Rule
    status: test
    logsource:
        product: windows
        service: security
    detection:
        sel:
            EventID: 4624
        condition: sel
    """
    registry = rule("sel:\n  TargetObject|contains: 'Run'\ncondition: sel", title="Registry Event",
                    category="registry_event")
    linux = rule("sel:\n  Image|endswith: '/sh'\ncondition: sel", title="Linux", product="linux")
    engine, report = load_rules(security, registry, linux, fed=WINDOWS_EVENTLOG_FED | LINUX_EBPF_FED)
    assert report.loaded == 3
    assert fired(engine, {"EventID": 4624}, category="winlog", service="security") == ["Security Rule"]
    assert fired(engine, {"EventID": 4624}, category="winlog", service="system") == []
    # registry_event rules see every registry category Sysmon events are split into
    for category in ("registry_set", "registry_add", "registry_delete", "registry_rename"):
        assert fired(engine, {"TargetObject": "HKLM\\Run"}, category=category) == ["Registry Event"]
    assert fired(engine, {"Image": "/bin/sh"}, product="linux", service=None) == ["Linux"]
    assert fired(engine, {"Image": "/bin/sh"}, product="windows") == []


def test_alert_fields_and_attack_mapping(load_rules: RuleLoader) -> None:
    extra = ("description: Detects a thing\nauthor: Someone\nreferences:\n    - https://example.org\n"
             "tags:\n    - attack.execution\n    - attack.t1059.001\n    - attack.defense-evasion\n"
             "    - car.2016-04-005\n")
    engine, _ = load_rules(rule("sel:\n  A: 'x'\ncondition: sel", extra=extra,
                                rule_id="11111111-2222-3333-4444-555555555555"))
    (alert,) = engine.match(make_event({"A": "x"}))
    assert alert.engine == "sigma" and alert.rule_id == "11111111-2222-3333-4444-555555555555"
    assert alert.severity == "high" and alert.description == "Detects a thing"
    assert "attack.t1059.001" in alert.tags
    assert alert.ecs["threat.framework"] == "MITRE ATT&CK"
    assert alert.ecs["threat.technique.id"] == ["T1059.001"]
    assert alert.ecs["threat.tactic.name"] == ["Execution", "Defense Evasion"]
    assert alert.ecs["rule.reference"] == ["https://example.org"]
    assert alert.ecs["rule.author"] == "Someone"
    assert alert.debug is None


def test_rule_without_id_or_level(load_rules: RuleLoader) -> None:
    doc = "title: No Id\nlogsource:\n    category: process_creation\ndetection:\n    sel:\n        A: 'x'\n" \
          "    condition: sel\n"
    engine, _ = load_rules(doc)
    (alert,) = engine.match(make_event({"A": "x"}))
    assert alert.rule_id.startswith("sigma-") and alert.severity == "medium"


def test_match_mode_best(load_rules: RuleLoader) -> None:
    low = rule("sel:\n  A: 'x'\ncondition: sel", title="Low").replace("level: high", "level: low")
    crit = rule("sel:\n  A|contains: 'x'\ncondition: sel", title="Crit").replace("level: high",
                                                                                 "level: critical")
    engine, _ = load_rules(low, crit)
    assert sorted(fired(engine, {"A": "x"})) == ["Crit", "Low"]
    best, _ = load_rules(low, crit, match_mode="best")
    assert fired(best, {"A": "x"}) == ["Crit"]


def test_match_debug(load_rules: RuleLoader) -> None:
    detection = ("sel_img:\n  Image|endswith: '\\x.exe'\nsel_cli:\n  CommandLine|contains: 'evil'\n"
                 "filter:\n  User: 'admin'\ncondition: all of sel_* and not filter")
    summary, _ = load_rules(rule(detection), match_debug="summary")
    (alert,) = summary.match(make_event({"Image": "c:\\x.exe", "CommandLine": "evil" * 100, "User": "u"}))
    assert alert.debug == {"selections": ["sel_img", "sel_cli"], "fields": ["Image", "CommandLine"]}
    full, _ = load_rules(rule(detection), match_debug="full")
    (alert,) = full.match(make_event({"Image": "c:\\x.exe", "CommandLine": "evil" * 100, "User": "u"}))
    assert alert.debug is not None
    assert alert.debug["values"]["Image"] == "c:\\x.exe"
    assert len(alert.debug["values"]["CommandLine"]) == 256


def test_fields_read(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(
        rule("sel:\n  Image|endswith: '\\x.exe'\n  CommandLine|fieldref: ParentCommandLine\n"
             "condition: sel"),
        rule("sel:\n  DestinationPort: 4444\ncondition: sel", category="network_connection"),
    )
    assert engine.fields_read("process_creation") == {"Image", "CommandLine", "ParentCommandLine"}
    assert engine.fields_read("network_connection") == {"DestinationPort"}
    assert engine.fields_read("dns_query") == frozenset()


def test_cache_skips_pysigma_and_tracks_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yml").write_text(rule("sel:\n  A: 'x'\ncondition: sel", title="One"))
    cache = str(tmp_path / "cache")
    engine, report = load_sigma([str(rules_dir)], cache_dir=cache)
    assert not report.cached and fired(engine, {"A": "x"}) == ["One"]

    import edr.detect.sigma.ruleset as ruleset_module

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("pySigma should not run on a cache hit")

    with monkeypatch.context() as patch:
        patch.setattr(ruleset_module, "parse_files", fail)
        patch.setattr(ruleset_module, "compile_rule", fail)
        engine, report = load_sigma([str(rules_dir)], cache_dir=cache)
    assert report.cached and fired(engine, {"A": "x"}) == ["One"]
    (rules_dir / "r.yml").write_text(rule("sel:\n  A: 'y'\ncondition: sel", title="Two"))
    engine, report = load_sigma([str(rules_dir)], cache_dir=cache)
    assert not report.cached and fired(engine, {"A": "y"}) == ["Two"]


def test_odd_events_do_not_raise(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(rule("sel:\n  A|contains: 'x'\n  B|gt: 3\ncondition: sel"),
                           rule("keywords:\n  - 'x'\ncondition: keywords", title="Kw"))
    for fields in ({"A": None}, {"A": ["x", None, 5]}, {"A": {"nested": "x"}}, {"A": b"x"},
                   {"A": "x", "B": "not a number"}, {"A": 1.5}):
        engine.match(make_event(fields))
    assert engine.statistics()["errors"] == 0


def test_catastrophic_regex_and_huge_command_line_in_bounded_time(load_rules: RuleLoader) -> None:
    engine, report = load_rules(
        rule("sel:\n  CommandLine|re: '^(a+)+$'\ncondition: sel", title="Backtracking"),
        rule("sel:\n  CommandLine|re: '(x+x+)+y'\ncondition: sel", title="Nested"),
        rule("sel:\n  CommandLine|contains|all:\n    - 'a'\n    - 'zz'\ncondition: sel", title="Contains"),
        rule("keywords:\n  - 'needle'\ncondition: keywords", title="Keyword"),
        # SigmaHQ's "Unusually Long PowerShell CommandLine": RE2 needs a thousand states for it
        rule("sel:\n  CommandLine|re: '.{1000,}'\ncondition: sel", title="Long"),
    )
    assert report.loaded == 5
    evil = "a" * 100_000 + "!"
    huge = "x" * (1 << 20)
    started = time.perf_counter()
    assert fired(engine, {"CommandLine": evil}) == ["Long"]
    assert fired(engine, {"CommandLine": huge}) == ["Long"]
    assert fired(engine, {"CommandLine": "a" * (1 << 20) + "zz needle"}) == ["Contains", "Keyword", "Long"]
    assert fired(engine, {"CommandLine": ("y" * 999 + "\n") * 1000}) == []
    assert time.perf_counter() - started < 2.0  # backtracking engines take hours on these


def test_text_that_is_not_utf8_is_matched_by_every_kind_of_test(load_rules: RuleLoader) -> None:
    # Linux paths and argv are bytes, decoded with surrogateescape: a single byte that is not
    # UTF-8 must not make the libraries that take UTF-8 (RE2, the keyword automaton) raise,
    # which would drop the event from every rule at once
    engine, report = load_rules(
        rule("keywords:\n  - 'evil-keyword'\ncondition: keywords", title="Keyword"),
        rule("sel:\n  CommandLine|re: 'curl .*\\| *sh'\ncondition: sel", title="Regex"),
        rule("sel:\n  CommandLine|contains: 'curl'\ncondition: sel", title="Contains"),
        rule("sel:\n  CommandLine: 'cur?'\ncondition: sel", title="Never"),
    )
    assert report.loaded == 4
    text = b"curl http://x/\xff | sh evil-keyword".decode("utf-8", "surrogateescape")
    assert fired(engine, {"CommandLine": text}) == ["Keyword", "Regex", "Contains"]
    assert engine.statistics()["errors"] == 0


def test_match_batch_is_match_of_each_event_and_skips_an_odd_one(load_rules: RuleLoader) -> None:
    engine, _ = load_rules(rule("sel:\n  Image|endswith: '\\\\evil.exe'\ncondition: sel"))
    evil = make_event({"Image": "C:\\x\\evil.exe"})
    calm = make_event({"Image": "C:\\x\\calm.exe"})
    batch = [evil, calm, object(), evil]
    alerts = engine.match_batch(batch)  # type: ignore[list-item]
    assert [a.event for a in alerts] == [evil, evil]
    assert engine.errors == 1 and engine.events == 4
    assert [a.rule_name for a in alerts] == [a.rule_name for e in (evil, calm, evil) for a in engine.match(e)]
