"""The metrics endpoint over a real supervisor: scraped over HTTP while the graph runs, names and values checked."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any, ClassVar

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from edr.detect.sigma.costs import RuleCosts
from edr.metrics.listen import MetricsUnavailable, parse_listen
from edr.metrics.server import AgentCollector, MetricsServer
from edr.metrics.top import format_top, parse_top
from edr.runtime.actor import ActorBase, Ports
from edr.runtime.graph import parse_graph
from edr.runtime.kinds import Kinds
from edr.runtime.supervisor import Supervisor


class SensorLike(ActorBase):
    """Sends 3 batches of 10, then idles until cancelled; statistics shaped like the eBPF source's."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent = trio.Event()

    async def run(self, ports: Ports) -> None:
        for _ in range(3):
            await ports.output("out").send(list(range(10)))
        self.sent.set()
        await trio.sleep_forever()

    def statistics(self) -> dict[str, Any]:
        return {"polls": 1, "families": {"process": {"events": 30, "lost": 2}, "file": {"events": 0, "lost": 0}}}


class Sink(ActorBase):
    """Reads everything; statistics shaped like a sink's delivery counters."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got = 0

    async def run(self, ports: Ports) -> None:
        async for batch in ports.input("in"):
            self.got += len(batch)

    def statistics(self) -> dict[str, Any]:
        return {"sent": self.got, "failed": 1, "queued": 0, "spooled": 4}


KINDS = Kinds({"t_sensor": f"{__name__}:SensorLike", "t_sink": f"{__name__}:Sink"})


def scrape(port: int) -> dict[str, list[Any]]:
    """Samples by name from one GET of /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    [found] = [s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(found)


async def test_a_scrape_reads_the_running_graph() -> None:
    graph = parse_graph({"actors": {"src": {"kind": "t_sensor"}, "sink": {"kind": "t_sink"}},
                         "edges": [{"from": "src.out", "to": "sink.in", "capacity": 4, "policy": "block"}]},
                        "test-graph.toml", "test", KINDS)
    src, sink = SensorLike("src"), Sink("sink")
    sup = Supervisor(graph, None, actors={"src": src, "sink": sink})
    costs = RuleCosts(2, lambda n: (f"id-{n}", f"rule {n}"), every=4)
    costs.add([(1, 2_000)])
    costs.matches[0] = 3
    collector = AgentCollector(sup, pack="sigma-2026", costs=[costs], top_rules=5)
    server = MetricsServer(collector, "127.0.0.1:0")
    server.start()
    got: dict[str, list[Any]] = {}

    async def scrape_then_stop(s: Supervisor) -> None:
        await src.sent.wait()
        while sink.got < 30:
            await trio.sleep(0.01)
        # from a thread, as Prometheus does: the collector reads on this event loop
        got.update(await trio.to_thread.run_sync(scrape, server.port))
        s.stop()

    try:
        with trio.fail_after(10):
            assert await sup.run(handle_signals=False, background=[server.run, scrape_then_stop]) == 0
    finally:
        server.stop()
    assert collector.scrapes == 1
    assert value(got, "edr_events_total", family="process") == 30
    assert value(got, "edr_events_lost_total", family="process") == 2
    assert value(got, "edr_events_lost_total", family="file") == 0
    assert value(got, "edr_edge_sent_events_total", edge="src.out->sink.in") == 30
    assert value(got, "edr_edge_dropped_events_total", edge="src.out->sink.in") == 0
    assert value(got, "edr_edge_capacity_batches", edge="src.out->sink.in") == 4
    assert value(got, "edr_sink_sent_alerts_total", sink="sink") == 30
    assert value(got, "edr_sink_spooled_alerts", sink="sink") == 4
    assert value(got, "edr_rule_pack_info", pack="sigma-2026") == 1
    assert value(got, "edr_resident_memory_bytes") > 0
    assert value(got, "edr_start_time_seconds") == pytest.approx(collector.start_time)
    assert value(got, "edr_rule_cpu_seconds_total", rule="rule 1", rule_id="id-1") == pytest.approx(8e-6)
    assert value(got, "edr_rule_matches_total", rule="rule 0", rule_id="id-0") == 3
    # counters end in _total, gauges do not (Prometheus conventions)
    assert all(name.endswith(("_total", "_created")) for name in got if name.startswith("edr_edge_sent"))
    # after the loop has ended the collector reads directly
    assert value(scrape_after(server_for(sup)), "edr_events_total", family="process") == 30


def server_for(sup: Supervisor) -> MetricsServer:
    server = MetricsServer(AgentCollector(sup, pack=None, costs=[], top_rules=5), "127.0.0.1:0")
    server.start()
    return server


def scrape_after(server: MetricsServer) -> dict[str, list[Any]]:
    try:
        return scrape(server.port)
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        graph = parse_graph({"actors": {"src": {"kind": "t_sensor"}, "sink": {"kind": "t_sink"}},
                             "edges": [{"from": "src.out", "to": "sink.in", "capacity": 4, "policy": "block"}]},
                            "g.toml", "test", KINDS)
        sup = Supervisor(graph, None, actors={"src": SensorLike("src"), "sink": Sink("sink")})
        server = MetricsServer(AgentCollector(sup, pack=None, costs=[], top_rules=1), f"127.0.0.1:{port}")
        with pytest.raises(MetricsUnavailable, match=rf"cannot serve metrics on 127.0.0.1:{port} \(metrics.listen\)"):
            server.start()


@pytest.mark.parametrize("bad", ["9464", "127.0.0.1:", ":9464", "127.0.0.1:99999", "host:port"])
def test_a_bad_listen_address_names_the_key(bad: str) -> None:
    with pytest.raises(MetricsUnavailable, match=r"metrics\.listen must be HOST:PORT"):
        parse_listen(bad)


def test_listen_accepts_ipv6() -> None:
    assert parse_listen("[::1]:9464") == ("::1", 9464)


def test_rules_top_reads_the_exposition_costliest_first() -> None:
    text = """# TYPE edr_rule_cpu_seconds counter
edr_rule_cpu_seconds_total{rule_id="a",rule="Cheap"} 0.5
edr_rule_cpu_seconds_total{rule_id="b",rule="Costly"} 2.0
# TYPE edr_rule_evaluations counter
edr_rule_evaluations_total{rule_id="a",rule="Cheap"} 1000
edr_rule_evaluations_total{rule_id="b",rule="Costly"} 1000
# TYPE edr_rule_matches counter
edr_rule_matches_total{rule_id="a",rule="Cheap"} 7
edr_rule_matches_total{rule_id="b",rule="Costly"} 0
# TYPE edr_rule_over_budget gauge
edr_rule_over_budget{rule_id="a",rule="Cheap"} 0
edr_rule_over_budget{rule_id="b",rule="Costly"} 1
"""
    rules = parse_top(text)
    assert [r.rule for r in rules] == ["Costly", "Cheap"]
    assert rules[0].over_budget and rules[0].mean_us == pytest.approx(2000.0)
    table = format_top(rules, 1)
    assert "Costly (b) !" in table and "Cheap" not in table
    assert format_top([], 5) == "no rule has been evaluated yet"
