"""The eBPF source actor's loop: its polls have no timeout (an idle source does not wake), a cancellation wakes
the poll under way, and what that poll returned still goes down the pipeline."""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

import pytest
import trio

from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort, OutPort
from edr.sources.ebpf.actor import EbpfSource
from edr.sources.ebpf.pollthread import LOST_WAKEUP_MS
from tests.conftest import ebpf_unavailable
from tests.scan.harness import wait_for


class PipeSensor:
    """A sensor stand-in whose poll blocks on a pipe (records: the bytes a test writes) and an eventfd (wake)."""

    udp_hooks_error = None

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.timeouts: list[int] = []
        self.woken = threading.Event()
        self.closed = False

    def poll(self, timeout_ms: int) -> list[Any]:
        self.timeouts.append(timeout_ms)
        ready, _, _ = select.select([self.read_fd, self.wake_fd], [], [],
                                    None if timeout_ms < 0 else timeout_ms / 1000)
        out: list[Any] = []
        if self.read_fd in ready:
            out = list(os.read(self.read_fd, 100))
        if self.wake_fd in ready:
            os.eventfd_read(self.wake_fd)
            self.woken.set()
        return out

    def wake(self) -> None:
        os.eventfd_write(self.wake_fd, 1)

    def held(self) -> list[Any]:
        return []

    def statistics(self) -> dict[str, dict[str, int]]:
        return {}

    def close(self) -> None:
        self.closed = True
        for fd in (self.read_fd, self.write_fd, self.wake_fd):
            os.close(fd)


def _ports() -> tuple[Ports, InPort]:
    edge = Edge("source.out->sink.in", 64, Policy.BLOCK)
    out, inp = OutPort("source.out"), InPort("sink.in")
    out.attach(edge)
    inp.attach(edge)
    return Ports(inputs={}, outputs={"out": out}), inp


async def test_an_idle_source_polls_once_with_only_the_lost_wakeup_bound_and_stops_when_cancelled() -> None:
    sensor = PipeSensor()
    source = EbpfSource("source", sensor, batch_size=10)
    ports, inp = _ports()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, ports)
        await wait_for(lambda: len(sensor.timeouts) == 1)
        await trio.sleep(0.5)
        # one poll, still waiting: no wake-up on a quiet host but the kernel's (or the bound's, seconds away)
        assert sensor.timeouts == [LOST_WAKEUP_MS] and LOST_WAKEUP_MS >= 1_000
        os.write(sensor.write_fd, b"ab")
        with trio.fail_after(2):
            assert await inp.receive() == [ord("a"), ord("b")]
        await wait_for(lambda: len(sensor.timeouts) == 2)
        with trio.fail_after(2):  # well before the bound: the wake-up ends the poll
            nursery.cancel_scope.cancel()
    assert sensor.woken.is_set() and sensor.closed
    assert source.polls == 2


async def test_the_records_of_the_poll_a_cancellation_woke_still_go_out() -> None:
    sensor = PipeSensor()
    source = EbpfSource("source", sensor, batch_size=10)
    ports, inp = _ports()
    received: list[Any] = []

    async def sink() -> None:
        async for batch in inp:
            received.extend(batch)

    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await source.run(ports)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink)
        nursery.start_soon(run)
        await wait_for(lambda: len(sensor.timeouts) == 1)
        os.write(sensor.write_fd, b"z")   # read by the poll the cancellation ends
        sensor.wake()
        scope.cancel()
        await wait_for(lambda: sensor.closed)
        await wait_for(lambda: received == [ord("z")], state=lambda: (received, sensor.timeouts, source.polls))
        nursery.cancel_scope.cancel()


@pytest.mark.root
@pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))
async def test_the_real_sensor_stops_within_half_a_second_when_cancelled_while_polling() -> None:
    from edr.sources.ebpf.sensor import EbpfSensor

    sensor = EbpfSensor(families={"process"}, ignore_pids={os.getpid()})
    sensor.open()
    source = EbpfSource("source", sensor, batch_size=512)
    ports, inp = _ports()

    async def sink() -> None:
        async for _ in inp:
            pass

    cancelled_at = 0.0

    async def cancel_in_the_poll(scope: trio.CancelScope) -> None:
        nonlocal cancelled_at
        await trio.sleep(1.0)   # well inside a poll: no timeout ends it any more
        cancelled_at = trio.current_time()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink)
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_in_the_poll, scope)
            await source.run(ports)
        stopped = trio.current_time() - cancelled_at
        nursery.cancel_scope.cancel()
    # the poll is woken at once; closing the sensor takes about a tenth of a second
    assert stopped < 0.5, stopped
    assert source._final is not None


class CountingSensor:
    """A sensor stand-in whose poll never waits: each returns the next number; ``fail_at`` makes that poll raise.

    It records whether a poll was running when it was closed (closing unmaps the real sensor's rings).
    """

    udp_hooks_error = None

    def __init__(self, fail_at: int = 0) -> None:
        self.fail_at = fail_at
        self.polls = 0
        self.polling = False
        self.closed_while_polling = False
        self.closed = False
        self.threads: set[str] = set()

    def poll(self, timeout_ms: int) -> list[Any]:
        self.polling = True
        try:
            self.threads.add(threading.current_thread().name)
            self.polls += 1
            if self.polls == self.fail_at:
                raise OSError(5, "ring read failed")
            time.sleep(0.001)
            return [self.polls]
        finally:
            self.polling = False

    def wake(self) -> None:
        pass

    def held(self) -> list[Any]:
        return []

    def statistics(self) -> dict[str, dict[str, int]]:
        return {}

    def close(self) -> None:
        self.closed_while_polling = self.polling
        self.closed = True


def _small_ports(capacity: int) -> tuple[Ports, InPort]:
    edge = Edge("source.out->sink.in", capacity, Policy.BLOCK)
    out, inp = OutPort("source.out"), InPort("sink.in")
    out.attach(edge)
    inp.attach(edge)
    return Ports(inputs={}, outputs={"out": out}), inp


async def test_the_thread_stops_polling_while_the_edge_is_full_and_nothing_is_lost_or_reordered() -> None:
    sensor = CountingSensor()
    source = EbpfSource("source", sensor, batch_size=10)
    ports, inp = _small_ports(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, ports)
        await wait_for(lambda: sensor.polls >= 3)
        await trio.sleep(0.3)   # nobody receives: ~300 polls if the thread did not wait
        # 2 batches queued on the edge, 1 in the blocked send, 1 polled ahead, and the poll that found no room
        assert sensor.polls <= 5, sensor.polls
        received: list[Any] = []
        while len(received) < 50:
            received.extend(await inp.receive() or [])
        nursery.cancel_scope.cancel()
    assert received[:50] == list(range(1, 51))
    assert sensor.threads == {"edr-ebpf-poll"}   # one thread for the source's lifetime
    assert sensor.closed and not sensor.closed_while_polling


async def test_an_error_in_the_poll_thread_is_raised_by_the_actor_and_the_sensor_still_closes() -> None:
    sensor = CountingSensor(fail_at=3)
    source = EbpfSource("source", sensor, batch_size=10)
    ports, inp = _small_ports(64)
    with trio.fail_after(5), pytest.raises(OSError, match="ring read failed"):
        await source.run(ports)
    assert [inp.receive_nowait(), inp.receive_nowait()] == [[1], [2]]
    assert sensor.closed and not sensor.closed_while_polling
    assert source.polls == 2   # the two that returned


async def test_the_start_up_drain_s_records_go_before_the_thread_s() -> None:
    sensor = CountingSensor()
    source = EbpfSource("source", sensor, batch_size=1000)
    source.start_draining()
    await wait_for(lambda: sensor.polls >= 5)
    ports, inp = _small_ports(64)
    received: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.run, ports)
        while len(received) < 30:
            received.extend(await inp.receive() or [])
        nursery.cancel_scope.cancel()
    assert received[:30] == list(range(1, 31))
    assert source.startup_records >= 5
