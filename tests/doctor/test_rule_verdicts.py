"""Rule verdicts (sans-IO): can fire / degraded / never fires, with the reason, per platform profile."""

from __future__ import annotations

import uuid

import pytest
from sigma.collection import SigmaCollection

from edr.detect.sigma.rules import CompiledRule, compile_rule
from edr.doctor.profiles import linux_profile, windows_profile
from edr.doctor.rule_verdicts import (
    CAN_FIRE,
    DEGRADED,
    NEVER,
    can_match_without,
    explain,
    explanation_text,
    summarize,
    verdict_of,
)
from edr.sources.etw.providers import PROVIDERS

LINUX = linux_profile(["process", "network", "file", "dns"])
WINDOWS_PE = windows_profile(list(PROVIDERS), pe_info=True)
WINDOWS_NO_PE = windows_profile(list(PROVIDERS), pe_info=False)


def compiled(logsource: str, detection: str, title: str = "Test rule") -> CompiledRule:
    """A real compiled rule (pySigma parse, edr's compiler) from the logsource and detection YAML."""
    text = (f"title: {title}\nid: {uuid.uuid5(uuid.NAMESPACE_URL, title + logsource + detection)}\n"
            f"status: test\nlevel: high\nlogsource:\n{logsource}\ndetection:\n{detection}")
    (rule,) = SigmaCollection.from_yaml(text).rules
    return compile_rule(0, rule, None)


LNX_PROC = "  product: linux\n  category: process_creation"
WIN_PROC = "  product: windows\n  category: process_creation"


def test_a_windows_rule_never_fires_on_linux_and_says_why() -> None:
    rule = compiled(WIN_PROC, "  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel")
    v = verdict_of(rule, LINUX)
    assert v.verdict == NEVER and v.routes == ()
    assert "product 'windows'" in v.reason and "'linux' events only" in v.reason
    # the same rule can fire on Windows' ETW sensor
    assert verdict_of(rule, WINDOWS_NO_PE).verdict == CAN_FIRE


def test_a_linux_rule_reading_hashes_beside_image_is_degraded() -> None:
    rule = compiled(LNX_PROC, "  by_hash:\n    Hashes|contains: 'SHA256=ABC'\n"
                              "  by_image:\n    Image|endswith: '/xmrig'\n  condition: by_hash or by_image")
    v = verdict_of(rule, LINUX)
    assert v.verdict == DEGRADED
    assert v.unfilled == ("Hashes",) and v.filled == ("Image",)
    assert "reads Hashes, which the eBPF sensor never fills" in v.reason


def test_a_rule_that_can_only_match_through_an_unfilled_field_never_fires() -> None:
    only_hash = compiled(LNX_PROC, "  sel:\n    Hashes|contains: 'SHA256=ABC'\n    Image|endswith: '/x'\n"
                                   "  condition: sel")
    v = verdict_of(only_hash, LINUX)
    assert v.verdict == NEVER and v.unfilled == ("Hashes",)
    assert "every way it can match needs Hashes" in v.reason
    # a negated or null test of the missing field is satisfied by its absence: degraded, not never
    negated = compiled(LNX_PROC, "  sel:\n    Image|endswith: '/x'\n  hash:\n    Hashes|contains: 'ABC'\n"
                                 "  condition: sel and not hash")
    assert verdict_of(negated, LINUX).verdict == DEGRADED
    null = compiled(LNX_PROC, "  sel:\n    Image|endswith: '/x'\n    OriginalFileName: null\n  condition: sel")
    assert verdict_of(null, LINUX).verdict == DEGRADED


def test_fieldref_to_an_unfilled_field_cannot_match() -> None:
    rule = compiled(LNX_PROC, "  sel:\n    Image|fieldref: OriginalFileName\n  condition: sel")
    assert rule.fields == {"Image", "OriginalFileName"}
    assert verdict_of(rule, LINUX).verdict == NEVER
    assert not can_match_without(rule.condition, {"OriginalFileName"})
    assert can_match_without(rule.condition, {"Hashes"})


def test_keyword_rules_are_limited_by_routing_only() -> None:
    rule = compiled(LNX_PROC, "  keywords:\n    - 'mimikatz'\n  condition: keywords")
    v = verdict_of(rule, LINUX)
    assert v.verdict == CAN_FIRE and v.keywords and v.reads == ()


def test_services_and_categories_no_collector_feeds() -> None:
    auditd = compiled("  product: linux\n  service: auditd", "  sel:\n    type: EXECVE\n  condition: sel")
    v = verdict_of(auditd, LINUX)
    assert v.verdict == NEVER and "service 'auditd'" in v.reason and "no collector on linux reads it" in v.reason
    image_load = compiled("  product: linux\n  category: image_load", "  sel:\n    Image: x\n  condition: sel")
    v = verdict_of(image_load, LINUX)
    assert v.verdict == NEVER and "category 'image_load'" in v.reason and "process_creation" in v.reason
    # a product-only rule reaches every category the sensor feeds
    anything = compiled("  product: linux", "  sel:\n    Image|endswith: '/nc'\n  condition: sel")
    v = verdict_of(anything, LINUX)
    assert v.verdict == CAN_FIRE and len(v.routes) == 8


def test_a_family_switched_off_is_named() -> None:
    rule = compiled("  product: linux\n  category: dns_query", "  sel:\n    QueryName|endswith: '.onion'\n"
                                                              "  condition: sel")
    assert verdict_of(rule, LINUX).verdict == CAN_FIRE
    v = verdict_of(rule, linux_profile(["process", "file"]))
    assert v.verdict == NEVER
    assert "sensor family 'dns'" in v.reason and "sensor.families" in v.reason


def test_company_on_etw_depends_on_pe_info() -> None:
    rule = compiled(WIN_PROC, "  sel:\n    Company: 'Mimikatz'\n  img:\n    Image|endswith: '\\m.exe'\n"
                              "  condition: sel or img")
    assert verdict_of(rule, WINDOWS_PE).verdict == CAN_FIRE
    v = verdict_of(rule, WINDOWS_NO_PE)
    assert v.verdict == DEGRADED and v.unfilled == ("Company",)
    assert "the ETW sensor never fills" in v.reason


def test_windows_routes_channels_and_covering_categories() -> None:
    task = compiled("  product: windows\n  service: taskscheduler", "  sel:\n    EventID: 129\n  condition: sel")
    assert verdict_of(task, WINDOWS_NO_PE).verdict == CAN_FIRE  # open: the channel template's fields
    registry = compiled("  product: windows\n  category: registry_event",
                        "  sel:\n    TargetObject|contains: '\\Run\\'\n  condition: sel")
    v = verdict_of(registry, WINDOWS_NO_PE)
    assert v.verdict == CAN_FIRE and {r[1] for r in v.routes} == {"registry_add", "registry_set", "registry_delete"}
    security = compiled("  product: windows\n  service: security", "  sel:\n    EventID: 4688\n  condition: sel")
    v = verdict_of(security, WINDOWS_NO_PE)
    assert v.verdict == NEVER and "service 'security'" in v.reason
    ps = compiled("  product: windows\n  category: ps_script", "  sel:\n    ScriptBlockText|contains: 'IEX'\n"
                                                             "  condition: sel")
    assert verdict_of(ps, WINDOWS_NO_PE).verdict == CAN_FIRE
    no_ps = windows_profile([p for p in PROVIDERS if p != "Microsoft-Windows-PowerShell"], pe_info=False)
    v = verdict_of(ps, no_ps)
    assert v.verdict == NEVER and "Microsoft-Windows-PowerShell" in v.reason and "etw.providers" in v.reason


def test_summary_counts_per_logsource_and_fields() -> None:
    rules = [
        compiled(WIN_PROC, "  sel:\n    Image: a\n  condition: sel", "w1"),
        compiled(LNX_PROC, "  sel:\n    Image: a\n  condition: sel", "l1"),
        compiled(LNX_PROC, "  a:\n    Hashes: x\n  b:\n    Image: y\n  condition: a or b", "l2"),
        compiled(LNX_PROC, "  a:\n    Hashes: x\n  condition: a", "l3"),
    ]
    summary = summarize(rules, LINUX)
    assert (summary.totals.can_fire, summary.totals.degraded, summary.totals.never) == (1, 1, 2)
    doc = summary.to_json()
    assert doc["logsources"] == {
        "linux/process_creation/-": {"can_fire": 1, "degraded": 1, "never": 1},
        "windows/process_creation/-": {"can_fire": 0, "degraded": 0, "never": 1},
    }
    # only rules the sensor reaches count against a field (w1's fields are not the sensor's fault)
    assert doc["unfilled_fields"] == {"Hashes": 2}
    l2, l3 = rules[2].meta.rule_id, rules[3].meta.rule_id
    assert doc["wanting_fields"] == [
        {"id": l2, "title": "l2", "logsource": "linux/process_creation/-", "verdict": DEGRADED, "unfilled": ["Hashes"]},
        {"id": l3, "title": "l3", "logsource": "linux/process_creation/-", "verdict": NEVER, "unfilled": ["Hashes"]},
    ]
    text = summary.to_text(top_rules=1)
    assert "linux/process_creation/-" in "\n".join(text) and "Hashes (2)" in "\n".join(text)
    assert text[-2:] == ["rules reading them (2; `edr doctor --rule ID` explains one, --json lists all):",
                         f"  {l2}  l2: degraded, Hashes never filled"]


@pytest.mark.parametrize("profile", [LINUX, WINDOWS_PE])
def test_explanation_names_logsource_fields_and_verdict(profile: object) -> None:
    rule = compiled(LNX_PROC, "  a:\n    Hashes: x\n  b:\n    CommandLine|contains: y\n  condition: a or b")
    doc = explain(rule, profile)  # type: ignore[arg-type]
    assert doc["logsource"] == "linux/process_creation/-" and doc["reads"] == ["CommandLine", "Hashes"]
    text = explanation_text(doc)
    assert "logsource:  linux/process_creation/-" in text and f"verdict:    {doc['verdict']}" in text
    if profile is LINUX:
        assert doc["verdict"] == DEGRADED and doc["filled"] == ["CommandLine"] and doc["unfilled"] == ["Hashes"]
    else:
        assert doc["verdict"] == NEVER and doc["routes"] == []
