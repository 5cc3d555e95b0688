"""The batch pacing of the sensor's drains: at once on a quiet host, one window while records keep coming."""

from __future__ import annotations

from edr.sources.ebpf.pacing import QUICK_DRAINS, SETTLE_NS, BatchPacer

MS = 1_000_000
WINDOW = 25 * MS


def test_a_quiet_host_drains_at_once() -> None:
    pacer = BatchPacer(WINDOW)
    t = 0
    for _ in range(10):  # one record every 100 ms: never busy
        assert pacer.pause_ns(t) == SETTLE_NS
        pacer.drained(t + SETTLE_NS, 1)
        t += 100 * MS
    assert (pacer.quick, pacer.windowed) == (10, 0)


def test_records_arriving_fast_wait_one_window_and_batches_stay_bounded() -> None:
    pacer = BatchPacer(WINDOW)
    t, drains = 0, 0
    while t < 1000 * MS:  # a wake-up every millisecond for one second (a storm)
        pause = pacer.pause_ns(t)
        t += pause
        pacer.drained(t, 5)
        drains += 1
        t += MS
    # at most QUICK_DRAINS quick ones per window, then the window: about (QUICK_DRAINS + 1) per window
    assert drains <= (QUICK_DRAINS + 1) * (1000 // 25) + QUICK_DRAINS
    assert pacer.windowed > 0 and pacer.windowed >= drains // (QUICK_DRAINS + 1) - 1


def test_a_burst_after_quiet_goes_through_quickly_then_quiet_again() -> None:
    pacer = BatchPacer(WINDOW)
    t = 0
    for _ in range(QUICK_DRAINS):  # fork, exec, exit a millisecond apart
        assert pacer.pause_ns(t) == SETTLE_NS
        pacer.drained(t + SETTLE_NS, 1)
        t += 2 * MS
    assert pacer.pause_ns(t) == WINDOW  # more within the same window: records are arriving fast
    pacer.drained(t + WINDOW, 1)
    assert pacer.pause_ns(t + WINDOW + 100 * MS) == SETTLE_NS  # quiet again


def test_empty_drains_do_not_count_and_no_window_means_no_pause() -> None:
    pacer = BatchPacer(WINDOW)
    for i in range(10):
        pacer.drained(i * MS, 0)
    assert pacer.pause_ns(10 * MS) == SETTLE_NS
    assert BatchPacer(0).pause_ns(0) == 0
