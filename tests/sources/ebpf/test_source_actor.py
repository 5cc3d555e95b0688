"""The eBPF source actor's loop: it waits on the sensor's fd without waking, drains when the fd is readable or
held records fall due, and stops at once when cancelled."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
import trio.testing

from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort, OutPort
from edr.sources.ebpf.actor import EbpfSource
from tests.conftest import ebpf_unavailable


class PipeSensor:
    """A sensor stand-in whose fd is a pipe: readable when a test writes to it; each drain empties it."""

    udp_hooks_error = None

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.drains = 0
        self.collects = 0
        self.due: list[int] = []   # what wait_ns answers next (then None)
        self.closed = False

    def fileno(self) -> int:
        return self.read_fd

    def wait_ns(self) -> int | None:
        return self.due.pop(0) if self.due else None

    def collect(self) -> int:
        self.collects += 1
        return 0

    def drain(self) -> list[Any]:
        self.drains += 1
        try:
            return list(os.read(self.read_fd, 100))
        except BlockingIOError:
            return []

    def held(self) -> list[Any]:
        return []

    def statistics(self) -> dict[str, dict[str, int]]:
        return {}

    def close(self) -> None:
        self.closed = True
        os.close(self.read_fd)
        os.close(self.write_fd)


def _ports() -> tuple[Ports, InPort]:
    edge = Edge("source.out->sink.in", 64, Policy.BLOCK)
    out, inp = OutPort("source.out"), InPort("sink.in")
    out.attach(edge)
    inp.attach(edge)
    return Ports(inputs={}, outputs={"out": out}), inp


async def test_an_idle_source_never_wakes_and_drains_when_the_fd_is_readable(
        autojump_clock: trio.testing.MockClock) -> None:
    sensor = PipeSensor()
    source = EbpfSource("source", sensor, batch_size=10)
    ports, inp = _ports()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, ports)
        await trio.sleep(3600)  # an hour of (virtual) quiet
        assert (sensor.collects, sensor.drains) == (0, 0)
        os.write(sensor.write_fd, b"ab")
        with trio.fail_after(1):
            assert await inp.receive() == [ord("a"), ord("b")]
        assert sensor.drains == 1
        await trio.sleep(3600)
        assert sensor.drains == 1
        nursery.cancel_scope.cancel()
    assert sensor.closed


async def test_held_records_are_drained_when_due_without_a_wake_up(autojump_clock: trio.testing.MockClock) -> None:
    sensor = PipeSensor()
    sensor.due = [5_000_000]
    source = EbpfSource("source", sensor, batch_size=10)
    ports, _inp = _ports()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, ports)
        await trio.sleep(0.004)
        assert sensor.drains == 0
        await trio.sleep(0.002)
        assert sensor.drains == 1
        await trio.sleep(3600)
        assert sensor.drains == 1
        nursery.cancel_scope.cancel()


@pytest.mark.root
@pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))
async def test_the_real_sensor_stops_within_half_a_second_when_cancelled_while_waiting() -> None:
    from edr.sources.ebpf.sensor import EbpfSensor

    sensor = EbpfSensor(families={"process"}, ignore_pids={os.getpid()})
    sensor.open()
    source = EbpfSource("source", sensor, batch_size=512)
    ports, inp = _ports()

    async def sink() -> None:
        async for _ in inp:
            pass

    cancelled_at = 0.0

    async def cancel_in_the_wait(scope: trio.CancelScope) -> None:
        nonlocal cancelled_at
        await trio.sleep(1.0)   # well inside a wait: no timeout ends it any more
        cancelled_at = trio.current_time()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink)
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_in_the_wait, scope)
            await source.run(ports)
        stopped = trio.current_time() - cancelled_at
        nursery.cancel_scope.cancel()
    # the wait ends at once; closing the sensor takes about a tenth of a second
    assert stopped < 0.5, stopped
    assert source._final is not None
