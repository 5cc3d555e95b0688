"""The final health record reports the true totals: the eBPF source keeps its sensor's last counters;
the final record is the last periodic one plus ``after_last``; heartbeats carry the headline totals."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson
import pytest
import trio

from edr.health import Heartbeat, after_last, health_record, log_health
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.channel import OutPort
from edr.runtime.flight import Flight
from edr.runtime.graph import parse_graph
from edr.runtime.kinds import Kinds
from edr.runtime.supervisor import Supervisor
from edr.sources.ebpf.actor import EbpfSource


class ClosingSensor:
    """Like EbpfSensor: its lost counters live in a kernel map, gone (read as 0) once closed."""

    udp_hooks_error = None

    def __init__(self) -> None:
        self.closed = False
        self.lost = 0

    def poll(self, timeout_ms: int) -> list[Any]:
        self.lost += 5  # the kernel keeps losing while nobody drains the ring fast enough
        return []

    def wake(self) -> None:
        """Its poll never blocks: nothing to wake."""

    def held(self) -> list[Any]:
        return []

    def statistics(self) -> dict[str, dict[str, int]]:
        return {"file": {"events": 7, "lost": 0 if self.closed else self.lost}}

    def close(self) -> None:
        self.closed = True


async def test_the_source_reports_the_sensors_last_counters_after_close() -> None:
    sensor = ClosingSensor()
    source = EbpfSource("source", sensor, batch_size=10)
    ports = Ports(inputs={}, outputs={"out": OutPort("source.out")}, flight=Flight())
    with trio.move_on_after(0.3):
        await source.run(ports)
    assert sensor.closed
    lost = sensor.lost
    assert lost > 0
    assert source.statistics()["families"] == {"file": {"events": 7, "lost": lost}}


class Counting(ActorBase):
    """A source whose sensor counters grow by 10 events and 1 lost per read."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.n = 0

    async def run(self, ports: Ports) -> None:
        await trio.sleep_forever()

    def statistics(self) -> dict[str, Any]:
        self.n += 1
        return {"families": {"file": {"events": 10 * self.n, "lost": self.n}}}


class Drain(ActorBase):
    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    async def run(self, ports: Ports) -> None:
        async for _ in ports.input("in"):
            pass


def _sup() -> Supervisor:
    kinds = Kinds({"t_count": f"{__name__}:Counting", "t_drain": f"{__name__}:Drain"})
    graph = parse_graph({"actors": {"source": {"kind": "t_count"}, "sink": {"kind": "t_drain"}},
                         "edges": [{"from": "source.out", "to": "sink.in", "capacity": 2, "policy": "block"}]},
                        "g.toml", "test", kinds)
    return Supervisor(graph, None, actors={"source": Counting("source"), "sink": Drain("sink")})


def test_the_final_record_is_the_last_periodic_one_plus_after_last(caplog: pytest.LogCaptureFixture) -> None:
    sup = _sup()
    with caplog.at_level(logging.INFO, logger="edr.health"):
        log_health(sup)
        log_health(sup)
        log_health(sup, final=True)
    records = [orjson.loads(r.getMessage().split("health ", 1)[1]) for r in caplog.records]
    last, final = records[1], records[2]
    assert final["final"] and "after_last" not in last
    assert final["after_last"]["source.file.lost"] == 1 and final["after_last"]["source.file.events"] == 10
    assert final["after_last"]["source.out->sink.in.sent"] == 0 and final["after_last"]["dropped_total"] == 0
    assert final["actors"]["source"]["families"]["file"]["lost"] == (
        last["actors"]["source"]["families"]["file"]["lost"] + final["after_last"]["source.file.lost"])


def test_a_final_record_without_a_periodic_one_has_no_after_last() -> None:
    assert "after_last" not in health_record(_sup(), final=True)


def test_after_last_counts_every_cumulative_counter() -> None:
    rec = {"dropped_total": 3, "actors": {"source": {"families": {"dns": {"events": 4, "lost": 1}}}},
           "edges": {"a.out->b.in": {"sent": 9, "dropped": 3}}}
    before = {"dropped_total": 1, "actors": {"source": {"families": {"dns": {"events": 1, "lost": 1}}}},
              "edges": {"a.out->b.in": {"sent": 2, "dropped": 1}}}
    assert after_last(rec, before) == {"dropped_total": 2, "source.dns.events": 3, "source.dns.lost": 0,
                                       "a.out->b.in.sent": 7, "a.out->b.in.dropped": 2}


def test_a_heartbeat_counts_itself_and_sums_the_sensor() -> None:
    now = [1000.0]
    beat = Heartbeat(clock=lambda: now[0])
    now[0] = 1012.5
    record = beat.record(_sup())
    assert record["beat"] == 1 and record["uptime_secs"] == 12.5
    assert record["events"] == 10 and record["lost"] == 1 and record["dropped"] == 0
    assert beat.count == 1 and beat.last == 1012.5
