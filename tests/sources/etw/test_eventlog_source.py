"""The Event Log source and normalizer over a stand-in Event Log: send, bookmark, stop, resume, lose nothing."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import trio

from edr.event import Event, RejectedRecord
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort, OutPort
from edr.sources.etw import eventlog_actor
from edr.sources.etw.eventlog_actor import EventLogNormalizer, EventLogSource, live_event
from edr.sources.etw.eventlog_bookmarks import FILE_NAME, BookmarkFile
from edr.sources.etw.eventlog_reader import EventLogReader, LiveRecord
from edr.sources.replay.winlog import winlog_record_to_event
from tests.sources.etw.standin_eventlog import EventLogService
from tests.sources.etw.test_eventlog_reader import xml

CHANNELS = ["Security", "System"]


def _source(service: EventLogService, state: Path, batch_size: int = 16) -> EventLogSource:
    store = BookmarkFile(state)
    bookmarks = store.load()
    evtlog, events = service.modules()
    reader = EventLogReader(evtlog, events, CHANNELS, start_after=bookmarks.positions(), retry_secs=0.1)
    return EventLogSource("eventlog", reader, bookmarks, store, batch_size, save_interval=0.05)


def _wire(capacity: int) -> tuple[Ports, OutPort, InPort, Edge]:
    edge = Edge("eventlog.out->eventlog_normalizer.in", capacity, Policy.BLOCK)
    out, inp = OutPort("eventlog.out"), InPort("eventlog_normalizer.in")
    out.attach(edge)
    inp.attach(edge)
    return Ports(inputs={}, outputs={"out": out}), out, inp, edge


def _users(items: list[LiveRecord]) -> list[str]:
    out = []
    for item in items:
        assert not isinstance(item.record, RejectedRecord)
        out.append(item.record["Event"]["EventData"]["TargetUserName"])
    return out


async def _run_until(source: EventLogSource, service: EventLogService, writes: list[tuple[str, str]],
                     sent: int) -> list[LiveRecord]:
    """Run the source, log ``writes`` from a thread once it subscribed, stop it once ``sent`` were sent."""
    ports, out, inp, _edge = _wire(64)
    got: list[LiveRecord] = []

    def writer() -> None:
        service.wait_for_subscribers(len(CHANNELS))
        for channel, user in writes:
            service.log(channel, xml(channel, 4624, user))

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await source.run(ports)
            out.close()

        async def consume() -> None:
            async for batch in inp:
                got.extend(batch)

        nursery.start_soon(run)
        nursery.start_soon(consume)
        thread = threading.Thread(target=writer)
        thread.start()
        with trio.fail_after(30):
            while source.sent < sent:
                await trio.sleep(0.01)
        scope.cancel()
    thread.join()
    return got


async def test_sends_what_the_channels_log_and_resumes_after_the_bookmark(tmp_path: Path) -> None:
    service = EventLogService(CHANNELS)
    service.log("Security", xml("Security", 4624, "before-first-start"))  # never read: the first start is new events
    first = _source(service, tmp_path)
    writes = [("Security" if n % 3 else "System", f"u{n}") for n in range(50)]
    got = await _run_until(first, service, writes, 50)
    assert sorted(_users(got)) == sorted(u for _, u in writes)
    assert first.sent == 50
    saved = BookmarkFile(tmp_path).load().positions()
    assert saved == {"Security": 34, "System": 17}  # 1 before + 33 written; 17 written
    assert first.statistics()["channels"]["Security"]["bookmark"] == 34

    # logged while the agent is down, then more after the restart: all read once, in order per channel
    for n in range(5):
        service.log("System", xml("System", 7045, f"down{n}"))
    second = _source(service, tmp_path)
    got = await _run_until(second, service, [("Security", "after")], 6)
    assert _users(got) == [f"down{n}" for n in range(5)] + ["after"]
    assert BookmarkFile(tmp_path).load().positions() == {"Security": 35, "System": 22}


async def test_what_could_not_be_sent_before_the_stop_is_read_again_after_it(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The bookmark only covers records sent on: records read but stuck behind a full edge at the stop are not lost."""
    monkeypatch.setattr(eventlog_actor, "DRAIN_SECS", 0.2)
    service = EventLogService(CHANNELS)
    source = _source(service, tmp_path, batch_size=4)
    ports, out, _inp, edge = _wire(1)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await source.run(ports)
            out.close()

        nursery.start_soon(run)
        await trio.to_thread.run_sync(service.wait_for_subscribers, 2)
        for n in range(10):
            service.log("Security", xml("Security", 4624, f"u{n}"))
        with trio.fail_after(10):
            while source.sent < 4:  # one batch fills the edge, the next waits: nobody consumes
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        scope.cancel()
    first = list(edge._take() or [])
    assert _users(first) == ["u0", "u1", "u2", "u3"]
    assert BookmarkFile(tmp_path).load().positions() == {"Security": 4}

    again = _source(service, tmp_path)
    got = await _run_until(again, service, [], 6)
    assert _users(got) == [f"u{n}" for n in range(4, 10)]


async def test_a_bookmark_that_cannot_be_written_is_reported_and_retried(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    service = EventLogService(CHANNELS)
    state = tmp_path / "state"
    source = _source(service, state)
    state.rmdir()
    state.write_text("a file where the state directory was")  # the bookmarks cannot be written there
    with caplog.at_level(logging.ERROR, logger="edr.eventlog"):
        await _run_until(source, service, [("Security", "x")], 1)
    assert source.save_failures >= 1 and source.bookmarks.dirty and source.saves == 0
    assert f"eventlog: cannot write the bookmarks to {state / FILE_NAME}" in caplog.text
    assert "(a restart would read those records again)" in caplog.text


def test_the_normalizer_makes_the_event_replay_makes_with_the_channel_as_provenance(
        caplog: pytest.LogCaptureFixture) -> None:
    from edr.sources.etw.eventlog_xml import parse_event_xml

    record = parse_event_xml(xml("Security", 4625, "mallory", record_id=77)).record
    event = live_event(LiveRecord("Security", record, 77), 5)
    replayed = winlog_record_to_event(parse_event_xml(xml("Security", 4625, "mallory", record_id=77)).record, "x")
    assert (event.category, event.service, event.fields, event.timestamp) == \
        (replayed.category, replayed.service, replayed.fields, replayed.timestamp)
    assert event.seq == 5
    assert event.origin == {"winlog.channel": "Security", "winlog.event_id": 4625, "winlog.record_id": 77,
                            "winlog.computer_name": "h1"}

    normalizer = EventLogNormalizer("eventlog_normalizer")
    batch = [LiveRecord("Security", record, 77), LiveRecord("Application", RejectedRecord("event XML broken"), 12),
             LiveRecord("System", {"Event": {"System": {}}}, None)]
    with caplog.at_level(logging.WARNING, logger="edr.eventlog"):
        events = normalizer.decode(batch)
    assert [type(e) for e in events] == [Event]
    assert normalizer.statistics() == {"decoded": 1, "rejected": 2}
    assert "eventlog: channel 'Application' record 12 skipped: event XML broken" in caplog.text
    assert "eventlog: channel 'System' record ? skipped: no EventID" in caplog.text


def test_pywin32_missing_says_what_to_do() -> None:
    from edr.sources.etw.eventlog_actor import EventLogUnavailable, import_pywin32

    with pytest.raises(EventLogUnavailable, match=r"pywin32 \(win32evtlog, win32event\) cannot be loaded: .*"
                                                   r"runs on Windows only"):
        import_pywin32()
