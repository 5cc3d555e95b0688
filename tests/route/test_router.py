"""The router's lanes and the aggregation of repeated network connections (sans-IO cores)."""

from __future__ import annotations

from pathlib import Path

from edr.detect.sigma import load_sigma
from edr.event import FILE_EVENT, NETWORK_CONNECTION, PROCESS_CREATION, PROCESS_FORK, PROCESS_TERMINATION, Event
from edr.route.aggregation import ConnectionAggregator
from edr.route.router import Router
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort, OutPort


def ev(category: str, seq: int, **fields: object) -> Event:
    return Event(category=category, product="linux", fields=dict(fields), timestamp=float(seq), seq=seq)


def conn(seq: int, sport: int = 40000, dport: int = 443, **extra: object) -> Event:
    return ev(NETWORK_CONNECTION, seq, ProcessId=10, Image="/usr/bin/curl", Protocol="tcp", Initiated="true",
              SourceIp="10.0.0.2", SourcePort=sport, DestinationIp="203.0.113.5", DestinationPort=dport, **extra)


def test_lifecycle_events_take_the_priority_lane_in_order() -> None:
    batch = [ev(PROCESS_FORK, 1), ev(FILE_EVENT, 2), ev(PROCESS_CREATION, 3), conn(4), ev(PROCESS_TERMINATION, 5)]
    prio, bulk = Router("router", None).split(batch, 0.0)
    assert [e.seq for e in prio] == [1, 3, 5]
    assert [e.seq for e in bulk] == [2, 4]
    prio, bulk = Router("router", None).split([ev(FILE_EVENT, 1)], 0.0)
    assert prio == [] and [e.seq for e in bulk] == [1]


def _aggregator(read: frozenset[str] | None, window: float = 10.0, max_entries: int = 100) -> ConnectionAggregator:
    return ConnectionAggregator(lambda category: read, window=window, max_entries=max_entries)


def test_repeats_are_collapsed_into_one_event_carrying_their_count() -> None:
    router = Router("router", _aggregator(frozenset({"DestinationPort"})))
    # the repeats differ only in fields no rule reads (source port, time)
    _, bulk = router.split([conn(1, sport=40001), conn(2, sport=40002), conn(3, sport=40003)], now=0.0)
    assert [e.seq for e in bulk] == [1]  # the first passes at once
    _, bulk = router.split([ev(FILE_EVENT, 4)], now=5.0)
    assert [e.seq for e in bulk] == [4]  # window still open
    _, bulk = router.split([ev(FILE_EVENT, 5)], now=10.0)
    assert [(e.seq, e.count) for e in bulk] == [(3, 2), (5, 1)]  # the aggregate of the two repeats, first
    assert router.aggregator is not None and router.aggregator.aggregated == 2


def test_batches_without_connections_keep_their_lanes_and_order_with_aggregates_due() -> None:
    router = Router("router", _aggregator(frozenset({"DestinationPort"})))
    router.split([conn(1), conn(2)], now=0.0)
    prio, bulk = router.split([ev(PROCESS_FORK, 3), ev(PROCESS_CREATION, 4)], now=1.0)
    assert [e.seq for e in prio] == [3, 4] and bulk == []
    prio, bulk = router.split([ev(PROCESS_FORK, 5), ev(FILE_EVENT, 6), ev(PROCESS_TERMINATION, 7),
                               ev(FILE_EVENT, 8)], now=10.0)
    assert [e.seq for e in prio] == [5, 7]
    assert [(e.seq, e.count) for e in bulk] == [(2, 1), (6, 1), (8, 1)]  # the due aggregate first
    prio, bulk = router.split([ev(FILE_EVENT, 9)], now=11.0)
    assert prio == [] and [e.seq for e in bulk] == [9]


def test_a_field_a_rule_reads_is_part_of_the_key() -> None:
    agg = _aggregator(frozenset({"CommandLine"}))
    router = Router("router", agg)
    _, bulk = router.split([conn(1, CommandLine="curl a"), conn(2, CommandLine="curl b"), conn(3, dport=80)], 0.0)
    assert [e.seq for e in bulk] == [1, 2, 3]
    assert agg.aggregated == 0


def test_unknown_fields_read_keys_on_everything_but_source_port_and_time() -> None:
    agg = _aggregator(None)
    _, bulk = Router("router", agg).split([conn(1, sport=1), conn(2, sport=2), conn(3, User="x")], 0.0)
    assert [e.seq for e in bulk] == [1, 3]


def test_eviction_emits_the_pending_aggregate_and_flush_emits_the_rest() -> None:
    agg = _aggregator(frozenset(), max_entries=1)
    router = Router("router", agg)
    _, bulk = router.split([conn(1), conn(2), conn(3, dport=22), conn(4, dport=22)], 0.0)
    assert [(e.seq, e.count) for e in bulk] == [(1, 1), (2, 1), (3, 1)]
    assert agg.evicted == 1
    assert [(e.seq, e.count) for e in agg.flush()] == [(4, 1)]


def test_sigma_correlation_counts_aggregated_connections(tmp_path: Path) -> None:
    """An aggregate never hides a detection: its count feeds event_count correlations."""
    rule = tmp_path / "rules.yml"
    rule.write_text("""\
title: Connection to 203.0.113.5
id: 6e1b2f0a-0000-4000-8000-000000000001
name: conn_rule
status: test
logsource: {category: network_connection, product: linux}
detection:
    sel: {DestinationIp: 203.0.113.5}
    condition: sel
level: low
---
title: Many connections to 203.0.113.5
id: 6e1b2f0a-0000-4000-8000-000000000002
status: test
correlation:
    type: event_count
    rules: [conn_rule]
    group-by: [Image]
    timespan: 1m
    condition: {gte: 5}
level: high
""")
    engine, report = load_sigma([str(rule)], cache_dir=None)
    assert not report.rejected
    agg = ConnectionAggregator(lambda category: engine.fields_read(category), window=10.0, max_entries=100)
    router = Router("router", agg)
    _, first = router.split([conn(i, sport=40000 + i) for i in range(1, 6)], 0.0)
    _, later = router.split([], 10.0)
    assert [e.count for e in first + later] == [1, 4]
    titles = [a.rule_name for e in first + later for a in engine.match(e)]
    assert titles.count("Many connections to 203.0.113.5") == 1


def _wired() -> tuple[Ports, Edge, InPort]:
    """A router's ports: its input edge to send on, and one port receiving both lanes."""
    inp, edge = InPort("in"), Edge("in", 8, Policy.BLOCK)
    inp.attach(edge)
    outs, received = {}, InPort("out")
    for lane in ("priority", "bulk"):
        port, out_edge = OutPort(lane), Edge(lane, 8, Policy.BLOCK)
        port.attach(out_edge)
        received.attach(out_edge)
        outs[lane] = port
    return Ports(inputs={"in": inp}, outputs=outs), edge, received


async def test_an_open_aggregate_is_emitted_while_the_input_is_idle() -> None:
    """The router wakes on its own (every second) only while an aggregate is open, and emits it when due."""
    import trio

    router = Router("router", _aggregator(frozenset(), window=0.2))
    ports, edge, received = _wired()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(router.run, ports)
        await edge.send([conn(1), conn(2), conn(3)])
        with trio.fail_after(5):
            first = await received.receive()
            later = await received.receive()  # no more input: the timer's doing
        assert first is not None and [e.seq for e in first] == [1]
        assert later is not None and [(e.seq, e.count) for e in later] == [(3, 2)]
        edge.close()


async def test_no_timer_while_no_aggregate_is_open(monkeypatch: object) -> None:
    """Waiting for a batch costs no cancel scope unless some aggregate may fall due meanwhile."""
    import pytest
    import trio

    from edr.route import router as router_module

    timers: list[float] = []
    move_on_at = trio.move_on_at

    def counted(deadline: float) -> trio.CancelScope:
        timers.append(deadline)
        return move_on_at(deadline)

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(router_module.trio, "move_on_at", counted)
    router = Router("router", _aggregator(frozenset(), window=0.2))
    ports, edge, received = _wired()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(router.run, ports)
        with trio.fail_after(5):
            for seq in range(1, 4):  # lifecycle only: no aggregate opens
                await edge.send([ev(PROCESS_FORK, seq), ev(PROCESS_CREATION, seq)])
                assert await received.receive() is not None
            assert timers == []
            await edge.send([conn(10), conn(11)])  # an aggregate opens: the next wait has a timer
            assert await received.receive() is not None
            await edge.send([ev(PROCESS_TERMINATION, 12)])
            assert await received.receive() is not None
        assert len(timers) >= 1
        edge.close()
