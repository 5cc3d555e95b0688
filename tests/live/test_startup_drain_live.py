"""The eBPF source's start-up drain on the real sensor: what happens before the graph runs is forwarded, in order.

Between the programs being attached and the source actor's first poll, a
thread empties the rings into a bounded list (:class:`StartupDrain`); the
actor forwards that list first and then polls on. Here the bound is tiny,
so the drain fills up and stops, and the rest waits in the kernel's ring:
every exec made before the actor ran still comes out, once and in order.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

import pytest
import trio

from tests.conftest import ebpf_unavailable
from tests.live.agent import wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

EXECS = 40


async def test_execs_before_the_graph_runs_come_out_once_and_in_order() -> None:
    from edr.runtime.actor import Ports
    from edr.runtime.buffer import Policy
    from edr.runtime.channel import Edge, InPort, OutPort
    from edr.sources.ebpf.actor import EbpfSource
    from edr.sources.ebpf.decode import Decoder
    from edr.sources.ebpf.host import LiveHost
    from edr.sources.ebpf.sensor import EbpfSensor

    sensor = EbpfSensor(families={"process"}, ignore_pids={os.getpid()})
    sensor.open()
    source = EbpfSource("source", sensor, 512)
    source.start_draining(limit=5)
    tag = f"edr-drain-{uuid.uuid4().hex[:8]}"
    for i in range(EXECS):
        subprocess.run(["/bin/true", tag, str(i)], check=True)
    drain = source._drain
    assert drain is not None
    assert wait_for(lambda: drain.full, 10), "the drain never filled its (tiny) bound"
    assert sensor.statistics()["process"]["lost"] == 0  # the ring held the rest (read while it is open)

    edge = Edge("source.out->normalizer.in", 4096, Policy.BLOCK)
    out, inp = OutPort("source.out"), InPort("normalizer.in")
    out.attach(edge)
    inp.attach(edge)
    decoder = Decoder(host=LiveHost(), ignore_pids={os.getpid()})
    seqs: list[int] = []

    async def consume() -> None:
        async for batch in inp:
            events: list[Any] = []
            for raw in batch:
                events.extend(decoder.decode(raw))
            for e in events:
                cmd = str(e.fields.get("CommandLine", ""))
                if e.category == "process_creation" and f" {tag} " in cmd:
                    seqs.append(int(cmd.rsplit(" ", 1)[1]))

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await source.run(Ports(inputs={}, outputs={"out": out}))
            out.close()

        nursery.start_soon(run)
        nursery.start_soon(consume)
        with trio.move_on_after(20):
            while len(seqs) < EXECS:
                await trio.sleep(0.05)
        scope.cancel()
    assert seqs == list(range(EXECS)), seqs
    startup = source.statistics()["startup"]
    assert startup["full"] is True and startup["records"] >= 5, startup
