"""The ETW source actor over a stand-in pywintrace: start, forward, stop, never lose a taken batch."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort, OutPort
from edr.sources.etw.actor import EtwSource
from edr.sources.etw.bridge import CallbackBridge
from edr.sources.etw.providers import PROVIDERS
from edr.sources.etw.session import EtwSession, EtwUnavailable
from tests.sources.etw.standin_etw import SessionTable, make_module


def _record(i: int) -> tuple[int, dict[str, Any]]:
    head = {"ProviderId": "{EDD08927-9CC4-4E65-B970-C2560FB5C289}", "ProcessId": 100,
            "TimeStamp": 134360063013601680 + i, "EventDescriptor": {"Id": 14, "Opcode": 0, "Version": 1}}
    return 14, {"EventHeader": head, "FileObject": f"0x{i:X}", "Task Name": "CLOSE", "Description": ""}


def _source(records: list[Any], table: SessionTable, batch_size: int = 512, capacity: int = 4096,
            **standin: Any) -> EtwSource:
    module = make_module(table, lambda: records, **standin)
    bridge = CallbackBridge(capacity)
    session = EtwSession(module, name="edr-etw", providers=list(PROVIDERS.values()), callback=bridge.callback)
    return EtwSource("source", session, bridge, batch_size)


def _wire(capacity: int) -> tuple[Ports, OutPort, InPort, Edge]:
    edge = Edge("source.out->normalizer.in", capacity, Policy.BLOCK)
    out, inp = OutPort("source.out"), InPort("normalizer.in")
    out.attach(edge)
    inp.attach(edge)
    return Ports(inputs={}, outputs={"out": out}), out, inp, edge


async def _collect(inp: InPort) -> list[Any]:
    got: list[Any] = []
    async for batch in inp:
        got.extend(batch)
    return got


async def test_forwards_in_batches_and_stops_the_session() -> None:
    records = [_record(i) for i in range(1000)]
    table = SessionTable()
    source = _source(records, table, batch_size=100)
    ports, out, inp, _edge = _wire(64)
    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await source.run(ports)
            out.close()

        async def consume() -> None:
            got.extend(await _collect(inp))

        nursery.start_soon(run)
        nursery.start_soon(consume)
        while source.bridge.accepted < 1000:
            await trio.sleep(0.01)
        scope.cancel()
    assert got == records
    assert source.sent == 1000
    assert table.running == {} and table.log[-1] == ("stop", "edr-etw")
    assert source.statistics()["bridge"]["overflow_total"] == 0


async def test_a_batch_taken_from_the_bridge_is_sent_even_when_cancelled_mid_send() -> None:
    """Cancelled while its send waits on a full edge, the source still sends that batch while draining."""
    records = [_record(i) for i in range(10)]
    table = SessionTable()
    source = _source(records, table)
    ports, out, inp, edge = _wire(1)
    await edge.send([("filler", None)])  # the edge is full: the source's first send must wait
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        finished = trio.Event()

        async def run() -> None:
            with scope:
                await source.run(ports)
            out.close()
            finished.set()

        nursery.start_soon(run)
        while source.bridge.delivered < 10:  # the source has taken all ten and waits to send them
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        scope.cancel()
        got = await _collect(inp)
        await finished.wait()
    assert got[1:] == records
    assert source.sent == 10


async def test_stopped_during_startup_the_session_is_started_then_stopped() -> None:
    """Cancelled while StartTrace runs in its thread: the start completes, then the session is stopped."""
    table = SessionTable()
    gate, starting = threading.Event(), threading.Event()
    source = _source([_record(1)], table, start_gate=gate, starting=starting)
    ports, out, inp, _edge = _wire(8)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await source.run(ports)
            out.close()

        nursery.start_soon(run)
        await trio.to_thread.run_sync(starting.wait)
        scope.cancel()  # the agent is told to stop while the session is starting
        await trio.sleep(0.05)
        gate.set()
        got = await _collect(inp)
    assert [entry[0] for entry in table.log] == ["start", "stop"]
    assert table.running == {} and not source.session.running
    assert got in ([], [_record(1)])  # a record delivered before the stop still goes down the pipeline


async def test_a_provider_that_cannot_be_enabled_leaves_no_session_behind() -> None:
    table = SessionTable()
    source = _source([_record(1)], table, fail_provider="Microsoft-Windows-Kernel-Registry")
    ports, _out, _inp, _edge = _wire(8)
    with pytest.raises(EtwUnavailable, match="Access is denied"):
        await source.run(ports)
    assert table.running == {}
