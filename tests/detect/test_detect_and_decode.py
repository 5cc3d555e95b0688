"""The sans-IO cores on the replay hot path: NDJSON decoding and batch detection."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
import pytest

from edr.detect.actor import DetectActor
from edr.detect.alert import Alert
from edr.detect.simple import SimpleEngine, load_rules
from edr.event import FILE_EVENT, NETWORK_CONNECTION, Event, event_to_record
from edr.sources.replay.normalizer import NdjsonLines, Normalizer

LOG = logging.getLogger("test")


def line(**record: object) -> bytes:
    base: dict[str, object] = {"ts": 1.5, "seq": 7, "category": FILE_EVENT, "product": "linux",
                               "fields": {"TargetFilename": "/tmp/x"}}
    base.update(record)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_lines_decode_to_events_with_their_file_and_line() -> None:
    norm = Normalizer("normalizer", LOG)
    events = norm.decode(NdjsonLines([line(), line(seq=None, ts=None), line(service="security", count=3)],
                                     "/x/a.ndjson", 10))
    assert [(e.line, e.seq, e.timestamp, e.service, e.count) for e in events] == [
        (10, 7, 1.5, None, 1), (11, 0, 0.0, None, 1), (12, 7, 1.5, "security", 3)]
    assert all(e.origin == {"log.file.path": "/x/a.ndjson"} for e in events)
    assert events[0].fields == {"TargetFilename": "/tmp/x"}
    assert type(events[0].timestamp) is float
    assert events[0].category is FILE_EVENT  # the shared constant, hashed once


def test_a_category_this_version_does_not_know_is_kept() -> None:
    # recorded by a newer agent: the typed fast decode refuses it, the checked route keeps it
    (event,) = Normalizer("n", LOG).decode(NdjsonLines([line(category="process_hollowing")], "f", 1))
    assert (event.category, event.line, event.seq) == ("process_hollowing", 1, 7)


@pytest.mark.parametrize(("bad", "reason"), [
    (b"{not json", "invalid JSON"),
    (line(category=""), "'category'"),
    (line(product=5), "'product'"),
    (line(fields=[1]), "'fields'"),
    (line(ts=True), "'ts'"),
    (line(count=0), "'count'"),
    (line(service=1), "'service'"),
    (line(seq="a"), "'seq'"),
    (b"[]", "not a JSON object"),
])
def test_a_bad_line_is_rejected_with_its_reason_and_the_rest_kept(
        bad: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    norm = Normalizer("normalizer", LOG)
    with caplog.at_level(logging.WARNING):
        events = norm.decode(NdjsonLines([line(), bad, b"", line(seq=9)], "f.ndjson", 1))
    assert [(e.line, e.seq) for e in events] == [(1, 7), (4, 9)]
    assert norm.statistics() == {"decoded": 2, "rejected": 1, "errors": 0}
    assert "f.ndjson:2: skipped" in caplog.text and reason in caplog.text


def test_an_event_round_trips_through_the_record_format() -> None:
    event = Event(NETWORK_CONNECTION, "linux", {"DestinationPort": 443, "Initiated": "true"}, 12.25, 3,
                  service=None, count=4)
    (back,) = Normalizer("n", LOG).decode(NdjsonLines([orjson.dumps(event_to_record(event))], "p", 1))
    assert (back.category, back.product, back.fields, back.timestamp, back.seq, back.count) == (
        event.category, event.product, event.fields, event.timestamp, event.seq, event.count)


class Flaky:
    """An engine whose batch call breaks, and whose per-event call breaks on one event."""

    name = "flaky"

    def match(self, event: Event) -> list[Alert]:
        if event.fields.get("boom"):
            raise RuntimeError("boom")
        return [Alert("F", "flaky", "low", "flaky", event)]

    def match_batch(self, events: Sequence[Event]) -> list[Alert]:
        raise RuntimeError("batch broken")


class Every:
    """An engine without ``match_batch``: one alert per event."""

    name = "every"

    def match(self, event: Event) -> list[Alert]:
        return [Alert("E", "every", "low", "every", event)]


def ev(seq: int, **fields: object) -> Event:
    return Event(FILE_EVENT, "linux", dict(fields), float(seq), seq)


def test_a_failing_batch_is_rerun_event_by_event_and_only_the_bad_event_skipped() -> None:
    actor = DetectActor("detect", [Flaky(), Every()], LOG)  # type: ignore[list-item]
    batch = [ev(1), ev(2, boom=True), ev(3)]
    alerts = actor.detect(batch)
    # event order, engine order within one event
    assert [(a.event.seq, a.rule_id) for a in alerts if a.event] == [(1, "F"), (1, "E"), (2, "E"), (3, "F"), (3, "E")]
    assert actor.statistics()["errors"] == 1
    assert actor.statistics()["batch_errors"] == 1
    assert actor.statistics()["events"] == 3 and actor.statistics()["alerts"] == 5


def test_simple_batch_matching_equals_matching_each_event() -> None:
    engine = SimpleEngine(load_rules(None).rules)
    batch = [ev(1, TargetFilename="/etc/cron.d/job"), ev(2, TargetFilename="/var/tmp/x"),
             Event(NETWORK_CONNECTION, "linux", {"DestinationPort": "4444", "Initiated": "true"}, 3.0, 3),
             Event(NETWORK_CONNECTION, "linux", {"DestinationPort": 443, "Initiated": "true"}, 4.0, 4),
             ev(5, TargetFilename="/etc/systemd/system/evil.service")]
    each = [(a.rule_id, a.event) for e in batch for a in engine.match(e)]
    batched = [(a.rule_id, a.event) for a in engine.match_batch(batch)]
    assert batched == each
    assert [e.seq for _, e in batched if e] == [1, 3, 5]
