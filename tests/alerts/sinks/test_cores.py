"""The sinks' sans-IO cores: targets, backoff, Retry-After, log throttle, confirmation window, event.id,
RFC 5424 messages, webhook bodies, signatures and outcomes, configuration sections."""

from __future__ import annotations

import email.utils
import random
import re

import attrs
import orjson
import pytest

from edr.alerts.ecs import HostInfo, alert_document
from edr.alerts.sinks.confirm import ConfirmWindow
from edr.alerts.sinks.document import ID_KEY, alert_id, payload, sink_document
from edr.alerts.sinks.retry import Backoff, Throttle, retry_after
from edr.alerts.sinks.syslog_format import (
    SyslogFormatter,
    cut_utf8,
    octet_frames,
    sd_escape,
    structured_data,
)
from edr.alerts.sinks.webhook_protocol import Outcome, body, classify, headers, signature, verify_signature
from edr.config import SyslogConfig, WebhookConfig
from edr.detect.alert import Alert
from edr.event import Event
from edr.sink_targets import parse_syslog_target, parse_webhook_url, spool_name

HOST = HostInfo("web-01", "linux")


def alert(i: int = 1, severity: str = "high") -> Alert:
    event = Event(category="process_creation", product="linux", timestamp=1_763_000_000.0 + i, seq=i,
                  fields={"ProcessId": 100 + i, "Image": "/usr/bin/curl", "CommandLine": f"curl http://x/{i}",
                          "User": "root"})
    return Alert(rule_id="R-1", rule_name='Odd "curl"] run', severity=severity, engine="sigma", event=event)


# -- targets ------------------------------------------------------------------------------------------------------


def test_syslog_targets_parse_and_default_ports() -> None:
    assert parse_syslog_target("tcp://siem.example:5514").port == 5514
    assert parse_syslog_target("udp://10.0.0.1").port == 514
    assert parse_syslog_target("tls://siem").port == 6514
    six = parse_syslog_target("tcp://[::1]:601")
    assert (six.host, six.port, six.stream) == ("::1", 601, True)
    assert parse_syslog_target("unix:///dev/log").path == "/dev/log"
    assert not parse_syslog_target("udp://h:1").stream


@pytest.mark.parametrize(("text", "says"), [
    ("siem:514", "not a syslog target"), ("http://siem:514", "transport"), ("tcp://siem:0", "port"),
    ("tcp://siem:99999", "port"), ("tcp://:514", "no host"), ("tcp://siem/x", "no path"),
    ("unix://dev/log", "three slashes"), ("tcp://siem?x=1", "no query"),
])
def test_bad_syslog_targets_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_syslog_target(text)


def test_webhook_urls() -> None:
    url = parse_webhook_url("https://siem.example/in?tenant=3")
    assert (url.scheme, url.host, url.port, url.target) == ("https", "siem.example", 443, "/in?tenant=3")
    assert parse_webhook_url("http://127.0.0.1:8080").target == "/"
    for bad, says in (("ftp://x/", "https://"), ("https://u:p@x/", "credentials"), ("https:///x", "no host"),
                      ("https://x/#frag", "fragment")):
        with pytest.raises(ValueError, match=re.escape(says)):
            parse_webhook_url(bad)


def test_spool_names_are_readable_and_unique_per_url() -> None:
    a, b = spool_name("webhook", "https://siem/a"), spool_name("webhook", "https://siem/a?")
    assert a.startswith("webhook-siem-") and a != b and "/" not in a + b
    assert spool_name("syslog", "tcp://siem:514").startswith("syslog-siem-514-")


# -- backoff, Retry-After, throttle -------------------------------------------------------------------------------


def test_backoff_doubles_with_equal_jitter_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    waits = [backoff.next() for _ in range(8)]
    for n, wait in enumerate(waits):
        step = min(4.0, 0.5 * 2 ** n)
        assert step / 2 <= wait <= step
    assert len(set(waits)) == len(waits)  # jittered
    backoff.reset()
    assert 0.25 <= backoff.next() <= 0.5
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert retry_after("120", now) == 120.0
    assert retry_after(" 0 ", now) == 0.0
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for bad in (None, "", "-5", "1.5", "soon", "Wed, 21 Oct 2026 07:28:00", "9" * 100):
        assert retry_after(bad, now) is None, bad


def test_throttle_logs_first_then_once_per_interval_and_counts_the_rest() -> None:
    throttle = Throttle(60.0)
    assert throttle.hit(0.0)
    assert throttle.logged() == 1
    assert not throttle.hit(10.0, 5) and not throttle.hit(59.0)
    assert throttle.hit(61.0)
    assert throttle.logged() == 7
    assert throttle.clear() == 8 and throttle.clear() == 0
    assert throttle.hit(62.0)  # a fresh condition logs at once


# -- confirmation window ------------------------------------------------------------------------------------------


def test_confirm_window_confirms_after_hold_and_stalls_push_it_back() -> None:
    window = ConfirmWindow(2.0)
    window.sent(100, 10, now=0.0)
    window.sent(250, 5, now=1.0)
    assert window.due(1.9) is None
    assert window.due(2.0) == (100, 10)
    assert window.next_due() == 3.0
    window.sent(300, 1, now=1.5)
    window.stalled(now=2.5)  # a send blocked: both may sit unread in the receiver's buffers
    assert window.due(3.0) is None and window.next_due() == 4.5
    assert window.due(4.5) == (300, 6)
    window.sent(400, 3, now=5.0)
    assert window.reset() == 3 and window.due(100.0) is None
    window.sent(500, 2, now=6.0)
    window.sent(600, 4, now=6.1)
    assert window.confirm_all() == (600, 6) and len(window) == 0


# -- the document and its id --------------------------------------------------------------------------------------


def test_event_id_is_stable_and_ignores_what_changes_between_writings() -> None:
    doc = alert_document(alert(1), HOST)
    again = alert_document(alert(1), HOST)
    again["event.created"] = "2031-01-01T00:00:00.000000Z"
    again["edr.chain.seq"], again["edr.chain.hash"] = 7, "ab" * 32
    assert alert_id(doc) == alert_id(again)
    assert re.fullmatch(r"[0-9a-f]{32}", alert_id(doc))
    assert alert_id(doc) != alert_id(alert_document(alert(2), HOST))
    sent = sink_document(alert(1), HOST)
    assert sent[ID_KEY] == alert_id(doc)
    assert orjson.loads(payload(sent)) == sent and not payload(sent).endswith(b"\n")


def test_a_document_keeps_its_own_event_id_and_is_not_changed_in_place() -> None:
    doc = {"rule.id": "X", "event.id": "given"}
    assert sink_document(doc, HOST)["event.id"] == "given"
    bare = {"rule.id": "X"}
    assert sink_document(bare, HOST)["event.id"] == alert_id(bare) and "event.id" not in bare
    with pytest.raises(TypeError):
        sink_document(["not", "an", "alert"], HOST)  # type: ignore[arg-type]


# -- RFC 5424 -----------------------------------------------------------------------------------------------------

RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?[^\\]\]|-) (.*)$", re.S)


@pytest.mark.parametrize(("severity", "code"), [("critical", 2), ("high", 3), ("medium", 4), ("low", 5),
                                                ("informational", 6), ("bogus", 4)])
def test_pri_is_facility_times_8_plus_the_mapped_severity(severity: str, code: int) -> None:
    formatter = SyslogFormatter(facility=13, app_name="edr", procid=42)
    doc = sink_document(alert(1, severity), HOST)
    match = RFC5424.match(formatter.format(doc))
    assert match and int(match.group(1)) == 13 * 8 + code


def test_message_header_structured_data_and_json_body() -> None:
    formatter = SyslogFormatter(facility=16, app_name="edr", procid=42)
    doc = sink_document(alert(1), HOST)
    match = RFC5424.match(formatter.format(doc))
    assert match
    _pri, stamp, host, app, procid, msgid, sd, msg = match.groups()
    assert stamp.decode() == doc["event.created"] and host == b"web-01"
    assert (app, procid, msgid) == (b"edr", b"42", b"alert")
    assert sd == (f'[edr@32473 id="{doc["event.id"]}" rule="R-1" name="Odd \\"curl\\"\\] run" severity="high" '
                  f'engine="sigma"]').encode()
    assert orjson.loads(msg) == doc
    assert sd_escape('a\\b"c]') == 'a\\\\b\\"c\\]'
    assert structured_data({}) == "-"


def test_header_fields_that_are_not_printable_ascii_become_nilvalues() -> None:
    formatter = SyslogFormatter(facility=1, app_name="e d r", procid=1)
    doc = {"host.name": "hôte", "event.created": "yesterday", "rule.severity": "low"}
    assert formatter.format(doc).startswith(b'<13>1 - - - 1 alert [edr@32473 severity="low"] {')


def test_too_long_json_becomes_text_and_too_long_text_is_cut_on_a_character() -> None:
    formatter = SyslogFormatter(facility=16, app_name="edr", procid=1, max_bytes=600)
    doc = sink_document(alert(1), HOST)
    doc["process.command_line"] = "é" * 2000
    message = formatter.format(doc)
    assert len(message) <= 600 and formatter.shortened == 1 and formatter.truncated == 1
    message.decode("utf-8")  # not cut inside a character
    assert b"Odd \"curl\"] run (high): host=web-01" in message
    text = SyslogFormatter(facility=16, app_name="edr", procid=1, message="text")
    assert b"process=/usr/bin/curl" in text.format(doc) or b"cmd=" in text.format(doc)
    assert cut_utf8("aé".encode(), 2) == b"a"


def test_octet_counting_frames() -> None:
    assert octet_frames([b"<13>1 a", "é".encode()]) == b"7 <13>1 a2 \xc3\xa9"


# -- webhook protocol ---------------------------------------------------------------------------------------------


def test_bodies_signatures_and_headers() -> None:
    docs = [b'{"a":1}', b'{"b":2}']
    assert body(docs, "ndjson") == b'{"a":1}\n{"b":2}\n'
    assert orjson.loads(body(docs, "json")) == [{"a": 1}, {"b": 2}]
    secret = b"k" * 32
    data = body(docs, "ndjson")
    sig = signature(secret, data)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", sig)
    assert verify_signature(secret, data, sig)
    assert not verify_signature(secret, data + b" ", sig) and not verify_signature(b"x" * 32, data, sig)
    assert not verify_signature(secret, data, None)
    out = headers(data, "ndjson", secret, 2)
    assert out["X-Edr-Signature"] == sig and out["X-Edr-Count"] == "2"
    assert out["Content-Type"] == "application/x-ndjson"
    assert "X-Edr-Signature" not in headers(data, "json", None, 2)


@pytest.mark.parametrize(("status", "documents", "outcome"), [
    (200, 5, Outcome.DELIVERED), (204, 1, Outcome.DELIVERED), (400, 5, Outcome.SPLIT), (413, 2, Outcome.SPLIT),
    (422, 1, Outcome.REJECTED), (400, 1, Outcome.REJECTED), (503, 5, Outcome.RETRY), (429, 1, Outcome.RETRY),
    (401, 5, Outcome.RETRY), (301, 5, Outcome.RETRY), (500, 1, Outcome.RETRY),
])
def test_what_a_status_means(status: int, documents: int, outcome: Outcome) -> None:
    assert classify(status, documents) is outcome


# -- configuration ------------------------------------------------------------------------------------------------


def test_sections_default_to_no_destination_and_validate_their_keys() -> None:
    assert SyslogConfig().targets == [] and WebhookConfig().urls == []
    with pytest.raises(ValueError, match="transport"):
        SyslogConfig(targets=["smtp://x"])
    with pytest.raises(ValueError, match="twice"):
        WebhookConfig(urls=["https://a/", "https://a/"])
    with pytest.raises(ValueError, match="one of"):
        SyslogConfig(facility="local9")
    with pytest.raises(ValueError, match="480"):
        SyslogConfig(max_message_bytes=100)
    with pytest.raises(ValueError, match="seconds"):
        WebhookConfig(timeout_secs=0)
    for cls in (SyslogConfig, WebhookConfig):
        assert all(f.metadata.get("doc") for f in attrs.fields(cls)), cls
