"""Every Sigma modifier and condition form, including edge cases other engines got wrong."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.detect.sigma.conftest import RuleLoader, fired, rule


def b64_at_offsets(text: bytes) -> list[str]:
    """Base64 of ``text`` preceded by 0, 1 and 2 bytes: how it appears inside a blob."""
    return [base64.b64encode(b"x" * i + text + b"trail").decode() for i in range(3)]


CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    # --- plain values and wildcards -------------------------------------------------
    ("exact is case-insensitive", "sel:\n  Image: 'C:\\Windows\\cmd.exe'\ncondition: sel",
     {"Image": "c:\\windows\\CMD.EXE"}, True),
    ("exact needs the whole value", "sel:\n  Image: 'cmd.exe'\ncondition: sel",
     {"Image": "c:\\cmd.exe"}, False),
    ("missing field never equals", "sel:\n  Image: 'cmd.exe'\ncondition: sel", {}, False),
    ("missing field under not", "sel:\n  Image: 'cmd.exe'\ncondition: not sel", {}, True),
    ("star wildcard", "sel:\n  Image: 'c:*system32*cmd.exe'\ncondition: sel",
     {"Image": "C:\\Windows\\System32\\cmd.exe"}, True),
    ("question wildcard", "sel:\n  CommandLine: 'ab?d'\ncondition: sel", {"CommandLine": "aBcD"}, True),
    ("question is one char", "sel:\n  CommandLine: 'ab?d'\ncondition: sel", {"CommandLine": "abccd"}, False),
    ("glob with middle parts", "sel:\n  CommandLine: '*a*b*c'\ncondition: sel",
     {"CommandLine": "xxAyyBzzC"}, True),
    ("glob order matters", "sel:\n  CommandLine: 'a*b*c'\ncondition: sel", {"CommandLine": "acb"}, False),
    ("glob prefix and suffix do not overlap", "sel:\n  CommandLine: 'ab*ba'\ncondition: sel",
     {"CommandLine": "aba"}, False),
    ("lone star matches empty", "sel:\n  CommandLine: '*'\ncondition: sel", {"CommandLine": ""}, True),
    ("escaped star is literal", "sel:\n  CommandLine: 'foo\\*bar'\ncondition: sel",
     {"CommandLine": "foo*bar"}, True),
    ("escaped star is not a wildcard", "sel:\n  CommandLine: 'foo\\*bar'\ncondition: sel",
     {"CommandLine": "fooXbar"}, False),
    ("escaped question is literal", "sel:\n  CommandLine|contains: 'what\\?'\ncondition: sel",
     {"CommandLine": "so what? yes"}, True),
    ("escaped question not wildcard", "sel:\n  CommandLine|contains: 'what\\?'\ncondition: sel",
     {"CommandLine": "so whatX yes"}, False),
    ("trailing backslash", "sel:\n  CurrentDirectory: 'C:\\Windows\\'\ncondition: sel",
     {"CurrentDirectory": "c:\\windows\\"}, True),
    ("trailing backslash endswith", "sel:\n  TargetFilename|endswith: '\\Temp\\'\ncondition: sel",
     {"TargetFilename": "C:\\Users\\a\\Temp\\"}, True),
    ("double backslash is one", "sel:\n  Image|endswith: '\\\\cmd.exe'\ncondition: sel",
     {"Image": "c:\\x\\cmd.exe"}, True),
    ("number equals int", "sel:\n  EventID: 4624\ncondition: sel", {"EventID": 4624}, True),
    ("number equals string", "sel:\n  EventID: 4624\ncondition: sel", {"EventID": "4624"}, True),
    ("number differs", "sel:\n  EventID: 4624\ncondition: sel", {"EventID": 4625}, False),
    ("string matches int field", "sel:\n  ProcessId: '42'\ncondition: sel", {"ProcessId": 42}, True),
    ("bool matches text", "sel:\n  Initiated: true\ncondition: sel", {"Initiated": "true"}, True),
    ("bool matches bool", "sel:\n  Initiated: true\ncondition: sel", {"Initiated": True}, True),
    ("bool false", "sel:\n  Initiated: true\ncondition: sel", {"Initiated": "false"}, False),
    ("list field: any element", "sel:\n  Data|contains: 'needle'\ncondition: sel",
     {"Data": ["a", "with needle", "b"]}, True),
    ("empty string value", "sel:\n  CommandLine: ''\ncondition: sel", {"CommandLine": ""}, True),
    ("empty string is not missing", "sel:\n  CommandLine: ''\ncondition: sel", {}, False),
    # --- contains / startswith / endswith / all / cased ------------------------------
    ("contains", "sel:\n  CommandLine|contains: 'MiMi'\ncondition: sel", {"CommandLine": "run mimikatz"}, True),
    ("startswith", "sel:\n  CommandLine|startswith: 'run'\ncondition: sel", {"CommandLine": "RUN x"}, True),
    ("startswith anchored", "sel:\n  CommandLine|startswith: 'x'\ncondition: sel", {"CommandLine": "run x"}, False),
    ("endswith", "sel:\n  Image|endswith: '.EXE'\ncondition: sel", {"Image": "a.exe"}, True),
    ("list is OR", "sel:\n  Image|endswith:\n    - '\\a.exe'\n    - '\\b.exe'\ncondition: sel",
     {"Image": "c:\\b.exe"}, True),
    ("contains all", "sel:\n  CommandLine|contains|all:\n    - 'a1'\n    - 'b2'\ncondition: sel",
     {"CommandLine": "x b2 y a1"}, True),
    ("contains all needs all", "sel:\n  CommandLine|contains|all:\n    - 'a1'\n    - 'b2'\ncondition: sel",
     {"CommandLine": "x a1"}, False),
    ("cased exact", "sel:\n  CommandLine|cased: 'AbC'\ncondition: sel", {"CommandLine": "abc"}, False),
    ("cased exact hit", "sel:\n  CommandLine|cased: 'AbC'\ncondition: sel", {"CommandLine": "AbC"}, True),
    ("cased contains", "sel:\n  CommandLine|contains|cased: 'AbC'\ncondition: sel",
     {"CommandLine": "xxAbCxx"}, True),
    ("cased contains miss", "sel:\n  CommandLine|contains|cased: 'AbC'\ncondition: sel",
     {"CommandLine": "xxABCxx"}, False),
    # --- windash ----------------------------------------------------------------------
    ("windash slash", "sel:\n  CommandLine|windash|contains: ' -enc '\ncondition: sel",
     {"CommandLine": "powershell /enc AAA"}, True),
    ("windash en dash", "sel:\n  CommandLine|windash|contains: ' -enc '\ncondition: sel",
     {"CommandLine": "powershell \u2013enc AAA"}, True),
    ("windash with all", "sel:\n  CommandLine|windash|contains|all:\n    - ' -a '\n    - ' -b '\n"
     "condition: sel", {"CommandLine": "x /a -b y"}, True),
    ("windash with all both slash", "sel:\n  CommandLine|windash|contains|all:\n    - ' -a '\n"
     "    - ' -b '\ncondition: sel", {"CommandLine": "x /a /b y"}, True),
    ("windash with all needs all", "sel:\n  CommandLine|windash|contains|all:\n    - ' -a '\n"
     "    - ' -b '\ncondition: sel", {"CommandLine": "x /a y"}, False),
    # --- base64 / base64offset / utf16 --------------------------------------------------
    ("base64 exact", "sel:\n  Payload|base64: 'http'\ncondition: sel", {"Payload": "aHR0cA=="}, True),
    ("base64 contains", "sel:\n  Payload|base64|contains: 'http://'\ncondition: sel",
     {"Payload": "xx" + base64.b64encode(b"http://").decode() + "yy"}, True),
    *[(f"base64offset offset {i}", "sel:\n  CommandLine|base64offset|contains: 'http://evil'\n"
       "condition: sel", {"CommandLine": "powershell -enc " + text}, True)
      for i, text in enumerate(b64_at_offsets(b"http://evil"))],
    ("base64offset miss", "sel:\n  CommandLine|base64offset|contains: 'http://evil'\ncondition: sel",
     {"CommandLine": base64.b64encode(b"http://good").decode()}, False),
    *[(f"utf16le base64offset offset {i}",
       "sel:\n  CommandLine|utf16le|base64offset|contains: 'Invoke-'\ncondition: sel",
       {"CommandLine": text}, True)
      for i, text in enumerate(b64_at_offsets("Invoke-".encode("utf-16le")))],
    *[(f"wide base64offset offset {i}",
       "sel:\n  CommandLine|wide|base64offset|contains: 'Invoke-'\ncondition: sel",
       {"CommandLine": text}, True)
      for i, text in enumerate(b64_at_offsets("Invoke-".encode("utf-16le")))],
    ("utf16 (BOM) base64offset", "sel:\n  CommandLine|utf16|base64offset|contains: 'iex'\ncondition: sel",
     {"CommandLine": base64.b64encode(b"\xff\xfe" + "iex".encode("utf-16le")).decode()}, True),
    ("utf16be base64", "sel:\n  CommandLine|utf16be|base64offset|contains: 'iex'\ncondition: sel",
     {"CommandLine": base64.b64encode("  iex".encode("utf-16be")).decode()}, True),
    ("wide plain", "sel:\n  Data|wide|contains: 'ab'\ncondition: sel", {"Data": "xa\x00b\x00y"}, True),
    # --- regular expressions -----------------------------------------------------------
    ("re is unanchored", "sel:\n  CommandLine|re: 'f[o]+'\ncondition: sel", {"CommandLine": "xx foo yy"}, True),
    ("re is case-sensitive", "sel:\n  CommandLine|re: 'foo'\ncondition: sel", {"CommandLine": "FOO"}, False),
    ("re i flag", "sel:\n  CommandLine|re|i: 'foo'\ncondition: sel", {"CommandLine": "FOO"}, True),
    ("re anchors", "sel:\n  CommandLine|re: '^foo$'\ncondition: sel", {"CommandLine": "a\nfoo"}, False),
    ("re m flag", "sel:\n  CommandLine|re|m: '^foo$'\ncondition: sel", {"CommandLine": "a\nfoo"}, True),
    ("re dot no newline", "sel:\n  CommandLine|re: 'a.b'\ncondition: sel", {"CommandLine": "a\nb"}, False),
    ("re s flag", "sel:\n  CommandLine|re|s: 'a.b'\ncondition: sel", {"CommandLine": "a\nb"}, True),
    ("re backslashes", "sel:\n  Image|re: '\\\\cmd\\.exe$'\ncondition: sel", {"Image": "c:\\cmd.exe"}, True),
    ("re contains", "sel:\n  CommandLine|re|contains: 'a|b'\ncondition: sel", {"CommandLine": "xbx"}, True),
    # --- null / exists ----------------------------------------------------------------
    ("null matches missing", "sel:\n  ParentImage: null\ncondition: sel", {"Image": "x"}, True),
    ("null matches empty", "sel:\n  ParentImage: null\ncondition: sel", {"ParentImage": ""}, True),
    ("null rejects value", "sel:\n  ParentImage: null\ncondition: sel", {"ParentImage": "x"}, False),
    ("not null", "sel:\n  ParentImage: null\ncondition: not sel", {"ParentImage": "x"}, True),
    ("exists true", "sel:\n  ParentImage|exists: true\ncondition: sel", {"ParentImage": ""}, True),
    ("exists true missing", "sel:\n  ParentImage|exists: true\ncondition: sel", {}, False),
    ("exists false", "sel:\n  ParentImage|exists: false\ncondition: sel", {}, True),
    ("exists false present", "sel:\n  ParentImage|exists: false\ncondition: sel", {"ParentImage": "x"}, False),
    # --- fieldref, cidr, comparisons, neq, timestamps ---------------------------------
    ("fieldref equal", "sel:\n  Image|fieldref: ParentImage\ncondition: sel",
     {"Image": "C:\\a.exe", "ParentImage": "c:\\A.exe"}, True),
    ("fieldref differ", "sel:\n  Image|fieldref: ParentImage\ncondition: sel",
     {"Image": "C:\\a.exe", "ParentImage": "c:\\b.exe"}, False),
    ("fieldref missing other", "sel:\n  Image|fieldref: ParentImage\ncondition: sel", {"Image": "a"}, False),
    ("fieldref endswith", "sel:\n  CommandLine|fieldref|endswith: Image\ncondition: sel",
     {"CommandLine": "run c:\\a.exe", "Image": "c:\\a.exe"}, True),
    ("fieldref contains", "sel:\n  CommandLine|fieldref|contains: Image\ncondition: sel",
     {"CommandLine": "run c:\\a.exe now", "Image": "c:\\a.exe"}, True),
    ("cidr v4", "sel:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel", {"DestinationIp": "10.2.3.4"}, True),
    ("cidr v4 miss", "sel:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel",
     {"DestinationIp": "11.2.3.4"}, False),
    ("cidr v6", "sel:\n  DestinationIp|cidr: 'fe80::/10'\ncondition: sel",
     {"DestinationIp": "fe80::1"}, True),
    ("cidr not an ip", "sel:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel",
     {"DestinationIp": "10.host"}, False),
    ("gt", "sel:\n  DestinationPort|gt: 1024\ncondition: sel", {"DestinationPort": 8080}, True),
    ("gt equal", "sel:\n  DestinationPort|gt: 1024\ncondition: sel", {"DestinationPort": 1024}, False),
    ("gte", "sel:\n  DestinationPort|gte: 1024\ncondition: sel", {"DestinationPort": "1024"}, True),
    ("lt", "sel:\n  DestinationPort|lt: 1024\ncondition: sel", {"DestinationPort": 80}, True),
    ("lte", "sel:\n  DestinationPort|lte: 1024\ncondition: sel", {"DestinationPort": 1025}, False),
    ("gt non-numeric", "sel:\n  DestinationPort|gt: 1\ncondition: sel", {"DestinationPort": "http"}, False),
    ("neq", "sel:\n  User|neq: 'SYSTEM'\ncondition: sel", {"User": "alice"}, True),
    ("neq equal", "sel:\n  User|neq: 'SYSTEM'\ncondition: sel", {"User": "system"}, False),
    ("hour", "sel:\n  UtcTime|hour: 3\ncondition: sel", {"UtcTime": "2024-03-05 03:20:30.123"}, True),
    ("hour miss", "sel:\n  UtcTime|hour: 4\ncondition: sel", {"UtcTime": "2024-03-05 03:20:30.123"}, False),
    ("minute", "sel:\n  UtcTime|minute: 20\ncondition: sel", {"UtcTime": "2024-03-05 03:20:30"}, True),
    ("day", "sel:\n  UtcTime|day: 5\ncondition: sel", {"UtcTime": "2024-03-05T03:20:30Z"}, True),
    ("week", "sel:\n  UtcTime|week: 10\ncondition: sel", {"UtcTime": "2024-03-05 03:20:30"}, True),
    ("month", "sel:\n  UtcTime|month: 3\ncondition: sel", {"UtcTime": "2024-03-05 03:20:30"}, True),
    ("year epoch", "sel:\n  UtcTime|year: 2024\ncondition: sel", {"UtcTime": 1709608830}, True),
    # --- keywords ---------------------------------------------------------------------
    ("keyword anywhere", "keywords:\n  - 'mimikatz'\ncondition: keywords",
     {"CommandLine": "run MimiKatz.exe"}, True),
    ("keyword any field", "keywords:\n  - 'sekurlsa'\ncondition: keywords",
     {"Image": "a", "ParentCommandLine": "x sekurlsa::logonpasswords"}, True),
    ("keyword miss", "keywords:\n  - 'mimikatz'\ncondition: keywords", {"CommandLine": "calc"}, False),
    ("keyword number field", "keywords:\n  - '4242'\ncondition: keywords", {"ProcessId": 4242}, True),
    ("keyword all", "keywords:\n  '|all':\n    - 'alpha'\n    - 'beta'\ncondition: keywords",
     {"A": "alpha", "B": "beta"}, True),
    ("keyword all needs all", "keywords:\n  '|all':\n    - 'alpha'\n    - 'beta'\ncondition: keywords",
     {"A": "alpha"}, False),
    ("keyword with selection", "keywords:\n  - 'evil'\nsel:\n  Image|endswith: '.exe'\n"
     "condition: keywords and sel", {"Image": "a.exe", "CommandLine": "evil"}, True),
    # --- conditions -------------------------------------------------------------------
    ("and", "a:\n  A: '1'\nb:\n  B: '2'\ncondition: a and b", {"A": "1", "B": "2"}, True),
    ("and miss", "a:\n  A: '1'\nb:\n  B: '2'\ncondition: a and b", {"A": "1"}, False),
    ("or", "a:\n  A: '1'\nb:\n  B: '2'\ncondition: a or b", {"B": "2"}, True),
    ("not", "a:\n  A: '1'\nb:\n  B: '2'\ncondition: a and not b", {"A": "1", "B": "2"}, False),
    ("parens", "a:\n  A: '1'\nb:\n  B: '2'\nc:\n  C: '3'\ncondition: a and (b or c)",
     {"A": "1", "C": "3"}, True),
    ("precedence: and binds tighter", "a:\n  A: '1'\nb:\n  B: '2'\nc:\n  C: '3'\n"
     "condition: a or b and c", {"A": "1"}, True),
    ("not parens", "a:\n  A: '1'\nb:\n  B: '2'\ncondition: not (a or b)", {"C": "1"}, True),
    ("1 of pattern", "sel_a:\n  A: '1'\nsel_b:\n  B: '2'\nfilter:\n  C: '3'\n"
     "condition: 1 of sel_* and not filter", {"B": "2"}, True),
    ("all of pattern", "sel_a:\n  A: '1'\nsel_b:\n  B: '2'\ncondition: all of sel_*", {"B": "2"}, False),
    ("all of pattern hit", "sel_a:\n  A: '1'\nsel_b:\n  B: '2'\ncondition: all of sel_*",
     {"A": "1", "B": "2"}, True),
    ("1 of them", "sel_a:\n  A: '1'\nsel_b:\n  B: '2'\ncondition: 1 of them", {"A": "1"}, True),
    ("all of them", "sel_a:\n  A: '1'\nsel_b:\n  B: '2'\ncondition: all of them", {"A": "1"}, False),
    ("any of", "sel_a:\n  A: '1'\nsel_b:\n  B: '2'\ncondition: any of sel*", {"B": "2"}, True),
    ("1 of pattern names the prefix itself", "selection:\n  A: '1'\ncondition: 1 of selection*",
     {"A": "1"}, True),
    ("list of maps is OR", "sel:\n  - A: '1'\n    B: '2'\n  - C: '3'\ncondition: sel", {"C": "3"}, True),
    ("map is AND", "sel:\n  - A: '1'\n    B: '2'\n  - C: '3'\ncondition: sel", {"A": "1"}, False),
    ("multiple conditions are OR", "a:\n  A: '1'\nb:\n  B: '2'\ncondition:\n  - a\n  - b", {"B": "2"}, True),
]


@pytest.mark.parametrize(("detection", "fields", "expected"),
                         [pytest.param(d, f, e, id=name) for name, d, f, e in CASES])
def test_value_semantics(load_rules: RuleLoader, detection: str, fields: dict[str, Any],
                         expected: bool) -> None:
    engine, report = load_rules(rule(detection))
    assert report.rejected == 0, [r.reason for r in report.rejections]
    assert report.loaded == 1
    assert bool(fired(engine, fields)) is expected


def test_one_of_with_no_matching_identifier_is_reported(load_rules: RuleLoader) -> None:
    engine, report = load_rules(
        rule("selection:\n  A: '1'\ncondition: 1 of sel_*", title="Bad Selector"),
        rule("selection:\n  A: '1'\ncondition: selection", title="Good"),
    )
    assert [r.title for r in report.rejections] == ["Bad Selector"]
    assert "matches no detection" in report.rejections[0].reason
    assert report.rejections[0].path.endswith(".yml")
    assert fired(engine, {"A": "1"}) == ["Good"]


def test_filter_identifiers_not_selected_by_them(load_rules: RuleLoader) -> None:
    # pySigma renames merged filter detections to _filt_*: "1 of them" must not pick them up
    engine, report = load_rules(
        rule("sel:\n  A: '1'\ncondition: 1 of them", title="R", rule_id="8a6f8e0b-6c4c-4d5e-9f1a-0d4a3b2c1e0f"),
        """
        title: Filter out B
        logsource:
            product: windows
            category: process_creation
        filter:
            rules:
                - 8a6f8e0b-6c4c-4d5e-9f1a-0d4a3b2c1e0f
            selection:
                B: 'benign'
            condition: not selection
        """,
    )
    assert report.rejected == 0, report.rejections
    assert fired(engine, {"A": "1"}) == ["R"]
    assert fired(engine, {"A": "1", "B": "benign"}) == []


def test_expand_placeholders(load_rules: RuleLoader) -> None:
    detection = ("sel:\n  User|expand: '%admins%'\nfilter:\n  Image|expand: '%allowed%'\n"
                 "condition: sel and not filter")
    engine, report = load_rules(rule(detection), placeholders={"admins": ["alice", "bob*"]})
    assert report.loaded == 1
    # %allowed% is unresolved: the rule still loads, with a warning, and the filter is void
    assert any("%allowed%" in w["warning"] for w in report.warnings)
    assert fired(engine, {"User": "BOBBY", "Image": "x"}) == ["Test Rule"]
    assert fired(engine, {"User": "carol", "Image": "x"}) == []


def test_unresolved_placeholder_in_selection_never_matches(load_rules: RuleLoader) -> None:
    engine, report = load_rules(rule("sel:\n  User|expand: '%admins%'\ncondition: sel"))
    assert report.loaded == 1 and report.warnings
    assert fired(engine, {"User": "%admins%"}) == []


def test_regex_not_supported_by_re2_is_reported(load_rules: RuleLoader) -> None:
    # a backreference needs backtracking; RE2 refuses it and so must we
    _engine, report = load_rules(rule("sel:\n  CommandLine|re: '(a)\\1'\ncondition: sel"))
    assert report.loaded == 0 and report.rejected == 1
    assert "regular expression" in report.rejections[0].reason.lower()
