"""The decode boundary: a recorded record is an Event every engine and writer can take, or a named rejection."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.event import (
    MAX_FIELD_DEPTH,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    RECORD_DECODER,
    RecordError,
    RejectedRecord,
    event_from_record,
    nesting_depth_exceeds,
)
from edr.sources.replay.normalizer import NdjsonLines, Normalizer
from edr.sources.replay.winlog import (
    MAX_RECORD_DEPTH,
    UnreadableFile,
    evtx_json_records,
    evtx_records,
    winlog_record_to_event,
    winlog_to_event,
)

LOG = logging.getLogger("test")
SYSMON = "Microsoft-Windows-Sysmon/Operational"


def record(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ts": 1_763_000_000.5, "seq": 1, "category": "file_event", "product": "linux",
                            "fields": {"TargetFilename": "/etc/cron.d/x"}}
    base.update(over)
    return base


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth  # built as text: no Python object (or recursion) needed


def winlog(data: dict[str, Any] | None = None, time: str = "2024-01-02T03:04:05.123456Z") -> dict[str, Any]:
    return {"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}}, "EventID": 1,
                                 "Channel": SYSMON, "TimeCreated": {"#attributes": {"SystemTime": time}}},
                      "EventData": data if data is not None else {"Image": "C:\\w.exe"}}}


@pytest.mark.parametrize("ts", [1e300, -1e15, MAX_TIMESTAMP + 1, MIN_TIMESTAMP - 1, 10**30])
def test_a_time_no_date_can_hold_is_rejected(ts: float) -> None:
    line = orjson.dumps(record(ts=ts)) if isinstance(ts, float) else json.dumps(record(ts=ts)).encode()
    with pytest.raises(ValueError):
        RECORD_DECODER.decode(line)  # the fast route refuses it in C
    with pytest.raises(RecordError, match=r"'ts'.* is outside the representable times"):
        event_from_record(orjson.loads(line))


@pytest.mark.parametrize("ts", [MIN_TIMESTAMP, MAX_TIMESTAMP, 0, -1.5])
def test_the_edges_of_the_range_are_kept(ts: float) -> None:
    line = orjson.dumps(record(ts=ts))
    assert RECORD_DECODER.decode(line).timestamp == ts == event_from_record(orjson.loads(line)).timestamp


def test_field_depth_limit() -> None:
    ok = record(fields={"a": nested(MAX_FIELD_DEPTH), "b": nested(MAX_FIELD_DEPTH, kind="dict")})
    assert event_from_record(ok).fields == ok["fields"]
    for kind in ("list", "dict"):
        with pytest.raises(RecordError, match=f"field 'deep' is nested deeper than {MAX_FIELD_DEPTH} levels"):
            event_from_record(record(fields={"deep": nested(MAX_FIELD_DEPTH + 1, kind=kind)}))


def test_nesting_depth_is_measured_without_recursion() -> None:
    very = nested(100_000)  # far beyond the recursion limit
    assert nesting_depth_exceeds(very, 99_999) and not nesting_depth_exceeds(very, 100_000)
    assert not nesting_depth_exceeds("scalar", 0) and nesting_depth_exceeds([], 0)
    assert nesting_depth_exceeds([1, [2, {"k": [3]}]], 3) and not nesting_depth_exceeds([1, [2, {"k": [3]}]], 4)


def test_the_fast_route_takes_only_what_sysmon_fields_hold() -> None:
    flat = orjson.dumps(record(fields={"a": "x", "b": 1, "c": 1.5, "d": True, "e": None, "f": ["x", 1]}))
    assert RECORD_DECODER.decode(flat).fields["f"] == ["x", 1]
    for value in ([["x"]], {"k": 1}):
        with pytest.raises(ValueError):
            RECORD_DECODER.decode(orjson.dumps(record(fields={"a": value})))
        # the checked route keeps it (within the limit)
        assert event_from_record(record(fields={"a": value})).fields == {"a": value}


@pytest.mark.parametrize(("line", "reason"), [
    (orjson.dumps(record(ts=1e300)), "'ts' 1e+300 is outside the representable times"),
    (orjson.dumps(record(ts=-1e15)), "'ts' -1000000000000000.0 is outside"),
    (b'{"ts":1,"category":"file_event","product":"linux","fields":{"deep":' + deep_json(260) + b"}}",
     f"field 'deep' is nested deeper than {MAX_FIELD_DEPTH} levels"),
    # beyond msgspec's recursion guard and orjson's fixed limit of 1024
    (b'{"ts":1,"category":"file_event","product":"linux","fields":{"deep":' + deep_json(5000) + b"}}",
     "invalid JSON: depth limit exceeded"),
    (b'{"ts":1,"category":"file_event","product":"linux","fields":{},"junk":' + deep_json(100_000) + b"}",
     "invalid JSON: depth limit exceeded"),
])
def test_the_normalizer_rejects_each_with_its_reason_and_keeps_the_rest(
        line: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    norm = Normalizer("normalizer", LOG)
    good = orjson.dumps(record())
    with caplog.at_level(logging.WARNING):
        events = norm.decode(NdjsonLines([good, line, good], "f.ndjson", 1))
    assert [e.line for e in events] == [1, 3]
    assert norm.statistics() == {"decoded": 2, "rejected": 1, "errors": 0}
    assert f"replay: f.ndjson:2: skipped: {reason}" in caplog.text


def test_rejected_records_of_a_reader_are_reported_where_they_are(caplog: pytest.LogCaptureFixture) -> None:
    norm = Normalizer("normalizer", LOG)
    with caplog.at_level(logging.WARNING):
        events = norm.decode([("evtx", RejectedRecord("unreadable: bad chunk"), "a.evtx", 7),
                              ("evtx_json", winlog(), "b.json", 12),
                              ("evtx_json", RejectedRecord("invalid JSON: x"), "b.json", 40),
                              ("evtx_json", {"Event": {"System": "x"}}, "b.json", 50)])
    assert [e.fields["Image"] for e in events] == ["C:\\w.exe"]
    assert norm.statistics() == {"decoded": 1, "rejected": 3, "errors": 0}
    assert "replay: a.evtx: record 7: skipped: unreadable: bad chunk" in caplog.text
    assert "replay: b.json:40: skipped: invalid JSON: x" in caplog.text
    assert "replay: b.json:50: skipped: no System block" in caplog.text


def test_a_decoder_bug_skips_the_record_counted_and_logged_with_its_traceback(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import edr.sources.replay.normalizer as stages

    def broken(payload: Any, path: str, number: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(stages.DECODERS, "evtx", broken)
    norm = Normalizer("normalizer", LOG)
    with caplog.at_level(logging.WARNING):
        events = norm.decode([("evtx", {}, "a.evtx", 1), ("evtx_json", winlog(), "b.json", 1)])
    assert len(events) == 1
    assert norm.statistics() == {"decoded": 1, "rejected": 1, "errors": 1}
    failure = next(r for r in caplog.records if "decoding failed" in r.getMessage())
    assert "a.evtx: record 1: skipped: decoding failed: RuntimeError: a bug" in failure.getMessage()
    assert failure.exc_info is not None


@pytest.mark.parametrize(("rec", "reason"), [
    ({"Event": {"System": {"EventID": 1}}}, "no TimeCreated SystemTime"),
    (winlog(time="0000-01-01T00:00:00Z"), "SystemTime '0000-01-01T00:00:00Z'"),
    (winlog(time="0001-01-01T00:00:00+01:00"), "SystemTime '0001-01-01T00:00:00+01:00'"),
    (winlog(data=nested(MAX_RECORD_DEPTH + 2, kind="dict")), f"nested deeper than {MAX_RECORD_DEPTH} levels"),
    ([1], "record is not a JSON object"),
])
def test_windows_records_are_rejected_with_a_reason(rec: Any, reason: str) -> None:
    with pytest.raises(RecordError, match=re.escape(reason)):
        winlog_record_to_event(rec, "w.evtx")
    assert winlog_to_event(rec, "w.evtx") is None  # the lenient form keeps its promise


def test_evtx_json_records_are_split_at_their_first_lines_and_each_bad_one_rejected_alone() -> None:
    good = json.dumps(winlog(), indent=2).encode()
    deep = b'{"Event": {"System": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    data = b"\n".join([
        good,
        b"Record 2",
        json.dumps(winlog(data={"Image": nested(40)})).encode(),  # within orjson's limit, beyond ours
        deep,
        b'{\n  "Event": {\n    "System": {',  # truncated: the next record still starts on its own line
        b"junk between",
        good,
        b"Record 9",
        b"more junk",
    ]) + b"\n"
    items = list(evtx_json_records(data))
    lines = good.count(b"\n") + 1
    described = [(line, x["#record"] if isinstance(x, dict) else x.reason.split(":")[0]) for line, x in items]
    assert described == [
        (1, 1),
        (lines + 2, f"record is nested deeper than {MAX_RECORD_DEPTH} levels"),
        (lines + 3, "invalid JSON"),
        (lines + 4, "invalid JSON"),  # the truncated record with the junk line after it
        (lines + 8, 5),
        (2 * lines + 9, "text between records is no JSON object"),
    ]


def test_text_before_the_first_record_is_rejected() -> None:
    items = list(evtx_json_records(b"garbage\n" + json.dumps(winlog()).encode()))
    assert items[0] == (1, RejectedRecord("text before the first record is no JSON object"))
    assert isinstance(items[1][1], dict) and items[1][0] == 2


def test_an_evtx_file_the_parser_refuses_is_unreadable(tmp_path: Path) -> None:
    for name, data in (("random.evtx", os.urandom(5000)), ("short.evtx", b"ElfFile\0" + b"\0" * 50)):
        path = tmp_path / name
        path.write_bytes(data)
        with open(path, "rb") as fh, pytest.raises(UnreadableFile, match="not a readable EVTX file"):
            list(evtx_records(fh))


class PanicException(BaseException):
    """Shaped as pyo3 raises a panic of Rust code: a BaseException of that name."""


def _panicking_parser(monkeypatch: pytest.MonkeyPatch, *, at_open: bool = False,
                      error: type[BaseException] = PanicException) -> None:
    import evtx

    class Parser:
        def __init__(self, source: Any, number_of_threads: int = 0) -> None:
            if at_open:
                raise error("attempt to subtract with overflow")

        def records_json(self) -> Iterator[dict[str, str]]:
            yield {"data": json.dumps(winlog())}
            raise error("index out of bounds")

    monkeypatch.setattr(evtx, "PyEvtxParser", Parser)


def test_a_parser_panic_ends_its_file_as_unreadable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _panicking_parser(monkeypatch)
    (tmp_path / "x.evtx").write_bytes(b"ElfFile\0")
    items = evtx_records(tmp_path / "x.evtx")
    assert isinstance(next(items)[1], dict)  # what came before the panic is kept
    with pytest.raises(UnreadableFile, match="EVTX parser failed at record 2: index out of bounds"):
        next(items)
    _panicking_parser(monkeypatch, at_open=True)
    with pytest.raises(UnreadableFile, match="EVTX parser failed: attempt to subtract with overflow"):
        list(evtx_records(tmp_path / "x.evtx"))


def test_other_base_exceptions_are_not_taken_for_a_panic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _panicking_parser(monkeypatch, error=KeyboardInterrupt)
    (tmp_path / "x.evtx").write_bytes(b"ElfFile\0")
    with pytest.raises(KeyboardInterrupt):
        list(evtx_records(tmp_path / "x.evtx"))
