"""EbpfSensor.poll's ordering across rings, with the ring poller faked (the drain logic is pure Python)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edr.sources.ebpf import records as r
from edr.sources.ebpf.sensor import HOLD_NS, EbpfSensor
from tests.sources.ebpf import rawrec as rr


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class FakeRings:
    """Stands in for the ring poller: each consume() delivers what is scripted for it."""

    def __init__(self, deliveries: list[list[r.RawRecord]]) -> None:
        self.deliveries = deliveries
        self.timeouts: list[int] = []

    def poll(self, timeout_ms: int) -> bool:
        self.timeouts.append(timeout_ms)
        return bool(self.deliveries)

    def consume(self, sink_for_tag: Callable[[str], Callable[[bytes], object]]) -> int:
        if not self.deliveries:
            return 0
        batch = self.deliveries.pop(0)
        for rec in batch:
            sink_for_tag(rec.family)(rec.data)
        return len(batch)


def _sensor(deliveries: list[list[r.RawRecord]]) -> EbpfSensor:
    sensor = EbpfSensor(batch_window_ms=0)
    fake: Any = FakeRings(deliveries)
    sensor._poller = fake
    return sensor


def test_records_are_merged_across_rings_in_kernel_time_order() -> None:
    t = _now_ns() - 10 * HOLD_NS
    exec_ = rr.exec_rec(7, "/usr/bin/id", ["id"], ts_ns=t + 2)
    fork = rr.fork_rec(1, 7, ts_ns=t + 1)
    opened = rr.file_rec(7, 1, "/tmp/x", ts_ns=t + 3)
    sensor = _sensor([[opened, fork, exec_]])
    assert sensor.poll(0) == [fork, exec_, opened]


def test_a_record_stamped_during_the_drain_waits_for_the_next_batch() -> None:
    # The file ring was drained after the process ring: it holds a record
    # stamped just now, whose process's exec (stamped just before) was
    # committed to the process ring too late for this drain.
    now = _now_ns()
    early = rr.fork_rec(1, 8, ts_ns=now - 10 * HOLD_NS)
    late_file = rr.file_rec(8, 1, "/etc/cron.d/x", ts_ns=now + HOLD_NS)
    late_exec = rr.exec_rec(8, "/bin/sh", ["sh"], ts_ns=now + HOLD_NS - 1)
    sensor = _sensor([[early, late_file], [late_exec]])
    assert sensor.poll(0) == [early]
    time.sleep(3 * HOLD_NS / 1e9)
    assert sensor.poll(0) == [late_exec, late_file]
    assert sensor.held() == []
    assert sensor.statistics()["process"]["events"] == 2 and sensor.statistics()["file"]["events"] == 1


def test_held_records_are_handed_over_at_shutdown() -> None:
    late = rr.file_rec(9, 1, "/tmp/y", ts_ns=_now_ns() + 10 * HOLD_NS)
    sensor = _sensor([[late]])
    assert sensor.poll(0) == []
    assert sensor.held() == [late]


def test_a_held_record_is_waited_for_only_until_its_hold_has_passed() -> None:
    # stamped half a hold before now, committed only when the drain began (after the wake-up's collect):
    # held by this drain, due half a hold later
    soon = rr.exec_rec(9, "/bin/true", ["true"], ts_ns=_now_ns() - HOLD_NS // 2)
    sensor = _sensor([[], [soon], [], []])
    assert sensor.poll(100) == []
    sensor.poll(100)
    rings: Any = sensor._poller
    # not the whole hold again (3 ms): at most the millisecond left of it
    assert rings.timeouts[0] == 100 and rings.timeouts[1] <= (HOLD_NS // 2 + 999_999) // 1_000_000


def test_records_collected_but_not_drained_are_handed_over_at_shutdown() -> None:
    # the event loop's driver was cancelled in the batch pause, between collect() and drain()
    t = _now_ns() - 10 * HOLD_NS
    fork = rr.fork_rec(1, 10, ts_ns=t)
    late = rr.file_rec(10, 1, "/tmp/z", ts_ns=_now_ns() + 10 * HOLD_NS)
    exec_ = rr.exec_rec(10, "/bin/true", ["true"], ts_ns=t + 1)
    sensor = _sensor([[late], [], [exec_, fork]])  # a poll consumes twice: when woken, then at the cut
    assert sensor.poll(0) == []
    sensor.collect()
    assert sensor.held() == [fork, exec_, late]
    assert sensor.held() == []


def test_wait_ns_is_unbounded_without_held_records_and_the_hold_left_with_them() -> None:
    soon = rr.exec_rec(11, "/bin/true", ["true"], ts_ns=_now_ns() - HOLD_NS // 2)
    sensor = _sensor([[], [soon]])  # committed as the drain began: held
    assert sensor.wait_ns() is None
    assert sensor.poll(0) == []
    wait = sensor.wait_ns()
    assert wait is not None and 0 <= wait <= HOLD_NS // 2


def test_a_fresh_record_goes_out_in_one_poll_once_its_hold_has_passed() -> None:
    # seen at the wake-up: the pause before the drain covers its hold, so no second drain is needed
    fresh = rr.exec_rec(12, "/bin/true", ["true"], ts_ns=_now_ns())
    sensor = _sensor([[fresh], []])
    assert sensor.collect() > HOLD_NS // 2
    time.sleep(HOLD_NS / 1e9)
    assert sensor.drain() == [fresh]
    assert sensor.wait_ns() is None


def test_the_pause_for_a_hold_is_at_most_one_hold() -> None:
    future = rr.exec_rec(13, "/bin/true", ["true"], ts_ns=_now_ns() + 1_000 * HOLD_NS)
    assert _sensor([[future]]).collect() <= HOLD_NS
