"""The pull reader over (stand-ins for) win32evtlog and win32event, records logged from another thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from edr.event import RejectedRecord
from edr.sources.etw.eventlog_reader import EventLogReader, LiveRecord, describe, record_id_of
from tests.sources.etw.standin_eventlog import ERROR_EVT_QUERY_RESULT_STALE, EventLogService, error


def xml(channel: str, event_id: int, user: str = "alice", record_id: int = 0) -> str:
    """A small record as EvtRender gives it (the service numbers it when it is logged)."""
    return ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
            "<Provider Name='Microsoft-Windows-Security-Auditing'/>"
            f"<EventID>{event_id}</EventID><TimeCreated SystemTime='2026-03-01T10:00:00.5Z'/>"
            f"<EventRecordID>{record_id}</EventRecordID><Channel>{channel}</Channel><Computer>h1</Computer>"
            f"</System><EventData><Data Name='TargetUserName'>{user}</Data></EventData></Event>")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def users(records: list[LiveRecord]) -> list[tuple[str, int | None, str]]:
    out = []
    for r in records:
        assert not isinstance(r.record, RejectedRecord), r.record
        out.append((r.channel, r.record_id, r.record["Event"]["EventData"]["TargetUserName"]))
    return out


def reader_for(service: EventLogService, channels: list[str], **kwargs: Any) -> EventLogReader:
    evtlog, events = service.modules()
    return EventLogReader(evtlog, events, channels, **kwargs)


def test_new_records_only_then_everything_logged_after_the_subscription() -> None:
    service = EventLogService(["Security", "System"])
    service.log("Security", xml("Security", 4624, "before"))  # logged before the agent: not read
    reader = reader_for(service, ["Security", "System"])
    reader.open()
    assert reader.read(100, 10) == []
    service.log("Security", xml("Security", 4625, "bob"))
    service.log("System", xml("System", 7045, "svc"))
    service.log("Security", xml("Security", 4624, "carol"))
    got = reader.read(100, 1000)
    assert sorted(users(got)) == [("Security", 2, "bob"), ("Security", 3, "carol"), ("System", 1, "svc")]
    assert reader.read(100, 10) == []
    stats = reader.statistics()["channels"]
    assert stats["Security"]["read"] == 2 and stats["Security"]["last_read"] == 3 and stats["Security"]["subscribed"]
    reader.close()


def test_a_wait_ends_when_another_thread_logs_a_record() -> None:
    service = EventLogService(["Application"])
    reader = reader_for(service, ["Application"])
    reader.open()
    assert reader.read(10, 10) == []  # the first read finds the channel empty

    def writer() -> None:
        time.sleep(0.2)
        service.log("Application", xml("Application", 1000, "late"))

    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    got = reader.read(10, 5000)
    waited = time.monotonic() - started
    thread.join()
    assert users(got) == [("Application", 1, "late")]
    assert 0.15 < waited < 2.0


def test_resumes_after_the_bookmark() -> None:
    service = EventLogService(["Security"])
    for n in range(5):
        service.log("Security", xml("Security", 4624, f"u{n}"))
    reader = reader_for(service, ["Security"], start_after={"Security": 3})
    reader.open()
    assert users(reader.read(100, 100)) == [("Security", 4, "u3"), ("Security", 5, "u4")]


def test_limit_and_turns_between_channels() -> None:
    """A busy channel cannot keep another waiting: the channel read first changes every read."""
    service = EventLogService(["Security", "System"])
    reader = reader_for(service, ["Security", "System"])
    reader.open()
    reader.read(10, 10)
    for n in range(30):
        service.log("Security", xml("Security", 4624, f"s{n}"))
    service.log("System", xml("System", 7045, "svc"))
    batches = [reader.read(8, 100) for _ in range(5)]
    assert [len(b) for b in batches] == [8, 8, 8, 7, 0]
    channels = [b[0].channel for b in batches[:4]]
    assert "System" in [r.channel for b in batches[:2] for r in b]  # served within the first two reads
    assert channels.count("Security") >= 2
    assert sum(1 for b in batches for r in b if r.channel == "Security") == 30


def test_a_channel_that_cannot_be_read_is_retried_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    service = EventLogService(["Security", "Microsoft-Windows-Windows Defender/Operational"])
    service.channel("Security").denied = True
    clock = Clock()
    reader = reader_for(service, ["Security", "Microsoft-Windows-Windows Defender/Operational", "Missing/Operational"],
                        retry_secs=30, clock=clock)
    reader.open()
    assert "eventlog: channel 'Security': cannot subscribe: EvtSubscribe: Access is denied. (error 5); trying " \
           "again every 30s" in caplog.text
    assert "channel 'Missing/Operational': cannot subscribe: EvtSubscribe: The specified channel could not be " \
           "found. (error 15007)" in caplog.text
    service.log("Microsoft-Windows-Windows Defender/Operational", xml("x", 1116, "defender"))
    service.log("Security", xml("Security", 4624, "while-denied"))
    assert users(reader.read(10, 100)) == [("Microsoft-Windows-Windows Defender/Operational", 1, "defender")]
    stats = reader.statistics()["channels"]
    denied = "cannot subscribe: EvtSubscribe: Access is denied. (error 5)"
    assert stats["Security"] == {"read": 0, "rejected": 0, "repaired": 0, "last_read": None, "subscribed": False,
                                 "failures": 1, "problem": denied}

    service.channel("Security").denied = False
    clock.now += 10
    assert reader.read(10, 10) == []  # not yet due
    clock.now += 25
    with caplog.at_level(logging.INFO, logger="edr.eventlog"):
        reader.read(10, 10)  # due: subscribed again (to new records: none was ever read)
    assert "eventlog: channel 'Security' is read again" in caplog.text
    service.log("Security", xml("Security", 4625, "after"))
    assert users(reader.read(10, 500)) == [("Security", 2, "after")]
    assert reader.statistics()["channels"]["Missing/Operational"]["failures"] == 2


def test_a_failed_subscription_resumes_after_the_last_record_read() -> None:
    """EvtNext failing (the log was cleared under the subscription...) loses nothing and repeats nothing."""
    service = EventLogService(["Security"])
    clock = Clock()
    reader = reader_for(service, ["Security"], retry_secs=5, clock=clock)
    reader.open()
    reader.read(10, 10)
    for n in range(3):
        service.log("Security", xml("Security", 4624, f"a{n}"))
    assert [u for _, _, u in users(reader.read(10, 100))] == ["a0", "a1", "a2"]
    service.channel("Security").fail_next = ERROR_EVT_QUERY_RESULT_STALE
    service.log("Security", xml("Security", 4624, "b0"))
    assert reader.read(10, 100) == []
    assert reader.statistics()["channels"]["Security"]["problem"] == \
        "reading failed: EvtNext: The query result is stale or invalid. (error 15011)"
    service.log("Security", xml("Security", 4624, "b1"))
    clock.now += 5
    assert [u for _, _, u in users(reader.read(10, 100))] == ["b0", "b1"]


def test_unreadable_xml_is_passed_on_rejected_with_its_record_id() -> None:
    service = EventLogService(["Application"])
    reader = reader_for(service, ["Application"])
    reader.open()
    reader.read(10, 10)
    service.log("Application", "<Event><System><EventRecordID>0</EventRecordID><EventID>1</System></Event>")
    service.log("Application", xml("Application", 1000, "fine"))
    first, second = reader.read(10, 100)
    assert isinstance(first.record, RejectedRecord) and first.record_id == 1
    assert first.record.reason == "event XML not well-formed XML: mismatched tag at line 1, column 59"
    assert users([second]) == [("Application", 2, "fine")]
    assert reader.statistics()["channels"]["Application"]["rejected"] == 1


def test_record_ids_and_error_descriptions() -> None:
    assert record_id_of({"Event": {"System": {"EventRecordID": "42"}}}, "") == 42
    assert record_id_of({"Event": {"System": {"EventRecordID": {"#text": "43"}}}}, "") == 43
    assert record_id_of(None, "<Event><System><EventRecordID> 44 </EventRecordID>") == 44
    assert record_id_of({"Event": {}}, "<Event/>") is None
    assert describe(error(5, "EvtSubscribe", "Access is denied.")) == "EvtSubscribe: Access is denied. (error 5)"
    assert describe(ValueError("plain")) == "plain"
