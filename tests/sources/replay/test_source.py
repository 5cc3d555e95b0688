"""The replay source: a bad file never stops the next one; a line too long to hold is rejected alone."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

import edr.sources.replay.actor as replay_actor
from tests.cli_helpers import file_event, read_alerts, write_ndjson

from .conftest import replay_in_process

CRON = "BUILTIN-CRON"


def cron(path: str = "/etc/cron.d/x") -> dict[str, Any]:
    return file_event(path)


def test_lines_longer_than_the_limit_are_rejected_and_the_rest_numbered_right(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(replay_actor, "CHUNK", 64)
    monkeypatch.setattr(replay_actor, "MAX_LINE", 512)
    fits = cron()
    fits["fields"]["Pad"] = ""
    fits["fields"]["Pad"] = "p" * (512 - len(orjson.dumps(fits)))
    records: list[Any] = [cron(), b"{" + b"x" * 2000, cron(), fits, b"y" * 513, cron()]
    events = write_ndjson(workdir / "long.ndjson", records)
    assert len(events.read_bytes().splitlines()[3]) == 512  # exactly the limit, over several reads
    events.write_bytes(events.read_bytes() + b"z" * 600)  # a last line without newline, too long too
    caplog.set_level(logging.WARNING)
    sup = replay_in_process(workdir, [events])
    assert sup.actors["normalizer"].statistics() == {"decoded": 4, "rejected": 3, "errors": 0}
    assert sup.actors["source"].records == 7 and sup.actors["source"].failures == []
    assert sorted(a["edr.log.line"] for a in read_alerts(workdir / "out")) == [1, 3, 4, 6]
    for line, size in ((2, 2001), (5, 513), (7, 600)):
        assert f"{events}:{line}: skipped: line of {size} bytes, longer than the 512 a line may have" in caplog.text


def test_a_bad_file_never_stops_the_next(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.mkfifo(workdir / "fifo.ndjson")
    (workdir / "random.evtx").write_bytes(os.urandom(70_000).replace(b"\0", b"\1"))
    (workdir / "short.evtx").write_bytes(b"ElfFile\0" + b"\0" * 100)
    (workdir / "notes.txt").write_text("nothing\nto see\n")
    good = [write_ndjson(workdir / f"good{i}.ndjson", [cron(f"/etc/cron.d/{i}")]) for i in range(5)]
    files = [good[0], workdir / "fifo.ndjson", good[1], workdir / "random.evtx", good[2], workdir / "short.evtx",
             good[3], workdir / "notes.txt", good[4]]
    caplog.set_level(logging.ERROR)
    sup = replay_in_process(workdir, files)
    source = sup.actors["source"]
    assert source.files_done == len(files)
    assert [(Path(p).name, reason.split(":")[0]) for p, reason in source.failures] == [
        ("fifo.ndjson", "not a regular file (a FIFO)"),
        ("random.evtx", "not a recognised format"),
        ("short.evtx", "cannot parse"),
        ("notes.txt", "not a recognised format"),
    ]
    assert sorted(a["log.file.path"] for a in read_alerts(workdir / "out")) == sorted(map(str, good))
    assert f"replay: {workdir / 'short.evtx'}: cannot parse: not a readable EVTX file" in caplog.text


def test_a_reader_that_raises_what_nobody_foresaw_fails_its_file_only(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from edr.sources.replay import winlog

    def broken(data: bytes) -> Any:
        yield from ()
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(winlog, "evtx_json_records", broken)
    dump = workdir / "dump.json"
    dump.write_text('{"Event": {"System": {}}}\n')
    good = write_ndjson(workdir / "good.ndjson", [cron()])
    caplog.set_level(logging.ERROR)
    sup = replay_in_process(workdir, [dump, good])
    assert sup.actors["source"].failures == [(str(dump), "reader failed: RecursionError: "
                                                         "maximum recursion depth exceeded")]
    assert [a["log.file.path"] for a in read_alerts(workdir / "out")] == [str(good)]
    failure = next(r for r in caplog.records if r.getMessage().startswith(f"replay: {dump}: reader failed"))
    assert failure.exc_info is not None and failure.exc_info[0] is RecursionError


def test_a_parser_that_panics_fails_its_file_only(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evtx

    class PanicException(BaseException):  # as pyo3 raises a Rust panic
        pass

    class Parser:
        def __init__(self, source: Any, number_of_threads: int = 0) -> None:
            pass

        def records_json(self) -> Any:
            raise PanicException("index out of bounds")
            yield

    monkeypatch.setattr(evtx, "PyEvtxParser", Parser)
    panics = workdir / "panics.evtx"
    panics.write_bytes(b"ElfFile\0" + bytes(4088))
    good = write_ndjson(workdir / "good.ndjson", [cron()])
    sup = replay_in_process(workdir, [panics, good])
    assert sup.actors["source"].failures == [(str(panics), "cannot parse: EVTX parser failed at record 1: "
                                                           "index out of bounds")]
    assert [a["log.file.path"] for a in read_alerts(workdir / "out")] == [str(good)]


def test_a_small_file_costs_one_thread_round_trip_and_batches_keep_their_bounds(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a file and reading its first batch is one round trip to a worker thread, and a
    short batch ends the file without another; the batches are those of a batch-at-a-time read."""
    import trio

    import edr.runtime.channel as channel

    def dump(name: str, records: int) -> Path:
        path = workdir / name
        path.write_text("".join(f'{{"Event": {{"System": {{"EventRecordID": {i}}}}}}}\n' for i in range(records)))
        return path

    files = [dump("one.json", 1), dump("five.json", 5), dump("four.json", 4), dump("none.json", 0)]
    round_trips: list[str] = []
    real_run_sync = trio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if (getattr(fn, "__module__", None) or "").startswith("edr.sources.replay"):
            round_trips.append(getattr(fn, "__qualname__", repr(fn)))
        return await real_run_sync(fn, *args, **kwargs)

    sent: list[list[tuple[str, int]]] = []
    real_send = channel.OutPort.send

    async def recorded(self: channel.OutPort, batch: Any) -> None:
        if batch and isinstance(batch[0], tuple):  # the source's (format, record, path, number) items
            sent.append([(Path(item[2]).name, item[3]) for item in batch])
        await real_send(self, batch)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    monkeypatch.setattr(channel.OutPort, "send", recorded)
    sup = replay_in_process(workdir, files, **{"pipeline.batch_size": 2})
    source = sup.actors["source"]
    assert source.failures == [] and source.records == 10
    # one.json: open + its only batch; five.json: that, then 2 and the short last one; four.json:
    # 2 + 2, then the empty read that finds the end; none.json: open and find nothing
    assert len(round_trips) == 1 + 3 + 3 + 1, round_trips
    numbers = [[n for _, n in batch] for batch in sent]
    assert [batch[0][0] for batch in sent] == ["one.json", "five.json", "five.json", "five.json", "four.json",
                                              "four.json"]
    assert [len(batch) for batch in numbers] == [1, 2, 2, 1, 2, 2]
    assert source.bytes_read == sum(f.stat().st_size for f in files)
