"""No event content can stop an alert (or a recorded event) from being written, nor make it invalid ECS."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from edr.alerts.actor import AlertWriter
from edr.alerts.alert_lines import AlertLines
from edr.alerts.chain import AlertChain
from edr.alerts.daily_file import DailyFile
from edr.alerts.ecs import HostInfo, alert_line, iso_time, to_ecs
from edr.alerts.ecs_check import check_document
from edr.alerts.ndjson import MAX_DEPTH, TOO_DEEP, dumps_line
from edr.detect.alert import Alert
from edr.event import Event, F, event_to_record
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort

HOST = HostInfo("h", "linux")
#: The writer's clock, injected: when the alert is made (event.created).
NOW = 1_764_000_000.25


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def alert(ts: float = 1_763_000_000.0, fields: dict[str, Any] | None = None, **event: Any) -> Alert:
    ev = Event("file_event", "linux", fields if fields is not None else {"TargetFilename": "/etc/cron.d/x"},
               ts, **event)
    return Alert(rule_id="R-1", rule_name="test rule", severity="high", engine="simple", event=ev)


def written(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = orjson.loads(line)
    assert isinstance(doc, dict)
    return doc


def alert_doc(line: bytes) -> dict[str, Any]:
    """An alert line's document, which must be valid ECS whatever its event held."""
    doc = written(line)
    assert check_document(doc) == []
    return doc


def is_date(text: str) -> bool:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_times_no_date_can_hold_are_kept_as_text_and_the_alert_still_dated() -> None:
    for ts, shown in ((1e300, "1e+300"), (-1e15, "-1000000000000000.0"), (math.nan, "nan"), (math.inf, "inf")):
        doc = alert_doc(alert_line(alert(ts), HOST, created=NOW))
        assert doc["@timestamp"] == doc["event.created"] == iso_time(NOW)  # when it was written
        assert doc["edr.alert.event_timestamp"] == shown and doc["rule.id"] == "R-1"
        assert "edr.alert.timestamp" not in doc  # the alert has no time of its own
    doc = alert_doc(alert_line(Alert("C-1", "corr", "high", "sigma", None, timestamp=1e300), HOST, created=NOW))
    assert doc["@timestamp"] == iso_time(NOW) and doc["edr.alert.timestamp"] == "1e+300"
    assert "edr.alert.event_timestamp" not in doc
    doc = alert_doc(alert_line(alert(1_763_000_000.665), HOST, created=NOW))
    assert (doc["@timestamp"], doc["event.created"]) == ("2025-11-13T02:13:20.665Z", iso_time(NOW))


def test_iso_time_spans_years_1_to_9999_and_refuses_the_rest() -> None:
    assert iso_time(-62_135_596_800.0) == "0001-01-01T00:00:00.000Z"  # four digits, and before 1970
    assert iso_time(253_402_300_799.0) == "9999-12-31T23:59:59.000Z"
    assert iso_time(1_763_000_000.665) == "2025-11-13T02:13:20.665Z"
    for bad in (253_402_300_800.0, -62_135_596_801.0, 1e300, math.nan, -math.inf, 10**400):
        assert iso_time(bad) is None


def test_deep_nesting_is_written_down_to_the_limit() -> None:
    for depth in (256, 300, 100_000):
        doc = written(dumps_line({"v": nested(depth)}))
        value = doc["v"]
        for _ in range(MAX_DEPTH - 1):
            value = value[0]
        assert value == TOO_DEEP
    line = alert_line(alert(fields={"TargetFilename": "/etc/cron.d/x", "Deep": nested(5000)}), HOST)
    assert written(line)["file.path"] == "/etc/cron.d/x"


def test_odd_values_in_every_mapped_field_do_not_stop_the_mapping() -> None:
    odd: list[Any] = [nested(300), {"k": nested(300)}, 10**30, "9" * 5000, "0x" + "f" * 5000, math.nan, None,
                      [1, None, {"a": 1}], "\udcff", True, Unprintable(), 2**5000 * 3]
    names = [F.IMAGE, F.PARENT_IMAGE, F.USER, F.PROCESS_ID, F.PARENT_PROCESS_ID, F.SOURCE_PORT, F.DESTINATION_PORT,
             F.TARGET_FILENAME, F.SOURCE_FILENAME, F.PROTOCOL, F.INITIATED, F.HASHES, F.QUERY_RESULTS,
             F.COMMAND_LINE, F.QUERY_NAME, "Other"]
    for value in odd:
        fields = dict.fromkeys(names, value)
        a = alert(fields=fields, seq=10**30, count=10**25, origin={"log.file.path": value})
        to_ecs(a, HOST)  # maps without raising
        doc = alert_doc(alert_line(a, HOST))
        assert doc["rule.id"] == "R-1" and is_date(doc["@timestamp"]) and "edr.error" not in doc
        written(dumps_line(event_to_record(a.event)))  # the event writer's line
    doc = alert_doc(alert_line(alert(fields={F.PROCESS_ID: "0x" + "f" * 5000}), HOST))
    # beyond 64 bits, so no ECS long: kept as recorded, under edr.event
    assert "process.pid" not in doc and doc["edr.event"]["ProcessId"] == "0x" + "f" * 5000
    doc = alert_doc(alert_line(alert(fields={F.PROCESS_ID: 3 * 2**15000}), HOST))
    assert "process.pid" not in doc and doc["edr.event"]["ProcessId"] == hex(3 * 2**15000)  # past 4,300 digits


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.integers(min_value=2**63) | st.text()
    | st.binary(max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape")),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner) | st.dictionaries(
        st.text(max_size=4) | st.integers() | st.none() | st.floats(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from([F.IMAGE, F.USER, F.PROCESS_ID, F.QUERY_RESULTS, F.HASHES, F.INITIATED,
                                        F.TARGET_FILENAME, F.PROTOCOL, "X"]), JSON),
       st.floats() | st.integers(), JSON)
@settings(max_examples=300, deadline=None)
def test_any_content_gives_one_line_of_json(fields: dict[str, Any], ts: float, debug: Any) -> None:
    a = alert(ts, fields)
    a.debug = {"d": debug}
    doc = alert_doc(alert_line(a, HOST))
    assert doc["rule.id"] == "R-1" and is_date(doc["@timestamp"]) and "edr.error" not in doc


def test_a_bug_in_the_mapping_still_writes_the_alert(monkeypatch: Any, caplog: Any) -> None:
    import edr.alerts.ecs as ecs

    def broken(event: Event, doc: dict[str, Any]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ecs, "event_fields_to_ecs", broken)
    with caplog.at_level(logging.ERROR, logger="edr.alerts"):
        doc = alert_doc(alert_line(alert(), HOST))
    assert (doc["rule.id"], doc["rule.severity"], doc["edr.error"]) == ("R-1", "high", "RuntimeError: a bug")
    assert is_date(doc["@timestamp"])
    assert caplog.records[0].exc_info is not None


async def test_the_alert_writer_writes_every_alert_of_a_batch_with_odd_events(tmp_path: Path) -> None:
    file = DailyFile(tmp_path, "alerts.json")
    writer = AlertWriter("alerts", file, AlertLines(HOST, AlertChain()), log=logging.getLogger("test"))
    edge = Edge("detect.alerts->alerts.in", 4, Policy.BLOCK)
    port = InPort("alerts.in")
    port.attach(edge)
    batch = [alert(1e300), alert(-1e15), alert(fields={"Deep": nested(260)}), alert(fields={"Deep": nested(5000)}),
             alert(fields={"Big": 10**30}), alert()]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, Ports(inputs={"in": port}, outputs={}))
            await edge.send(batch)
            edge.close()
    lines = file.current_path.read_bytes().splitlines()
    assert writer.alerts == len(batch) == len(lines)
    assert all(alert_doc(x + b"\n")["rule.id"] == "R-1" for x in lines)
