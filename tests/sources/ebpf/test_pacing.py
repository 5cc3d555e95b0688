"""The batch pacing of the sensor's drains: at once unless records arrive fast, one window while they do."""

from __future__ import annotations

from edr.sources.ebpf.pacing import (
    FAST_RECORDS,
    FOLLOW_UP_NS,
    QUICK_BURST,
    QUICK_PER_WINDOW,
    SETTLE_NS,
    BatchPacer,
)

MS = 1_000_000
WINDOW = 25 * MS


def _drain(pacer: BatchPacer, t: int, records: int) -> int:
    """One wake-up at ``t`` with ``records`` waiting: the drain's time (after the pacer's pause)."""
    t += pacer.pause_ns(t)
    pacer.drained(t, records)
    return t


def test_a_quiet_host_drains_at_once() -> None:
    pacer = BatchPacer(WINDOW)
    t = 0
    for _ in range(10):  # one record every 100 ms: never busy
        assert pacer.pause_ns(t) == SETTLE_NS
        pacer.drained(t + SETTLE_NS, 1)
        t += 100 * MS
    assert (pacer.quick, pacer.paced, pacer.windowed) == (10, 0, 0)


def test_a_burst_right_after_unrelated_drains_goes_at_once() -> None:
    """The slow marks of bench_latency: two drains of the host's own records, then a fork, its exec and
    its exit a millisecond apart. The exec used to wait one whole window (the third drain in a window)."""
    pacer = BatchPacer(WINDOW)
    t = 0
    for records in (2, 1):  # unrelated records (a log line written, a cron job) just before
        t = _drain(pacer, t, records) + 3 * MS
    for _ in range(3):  # fork, exec, exit
        assert pacer.pause_ns(t) == SETTLE_NS
        t = _drain(pacer, t, 1) + MS
    assert pacer.windowed == 0 and pacer.paced == 0


def test_records_arriving_fast_wait_one_window_and_batches_stay_bounded() -> None:
    pacer = BatchPacer(WINDOW)
    t, drains, records = 0, 0, 0
    pending = 0
    while t < 1000 * MS:  # 5 records every millisecond for one second (a storm: 5,000 records/s)
        start = t
        t += pacer.pause_ns(t)
        pending += 5 * ((t - start) // MS + 1)
        pacer.drained(t, pending)
        records += pending
        pending = 0
        drains += 1
        t += MS
    # after the first quick ones, one drain per window (+1 ms for the next wake-up)
    assert drains <= 1000 // 25 + QUICK_BURST
    assert pacer.windowed >= 1000 // 26 - QUICK_BURST
    assert records >= 5 * 990


def test_quick_drains_below_the_fast_rate_are_bounded_by_the_token_bucket() -> None:
    """A record every 2 ms (500/s, under FAST_RECORDS a window): no window, but at most QUICK_BURST back to
    back and QUICK_PER_WINDOW per window on average, each with its one free follow-up; a drain without a
    token waits for the next one only."""
    assert 2 * FAST_RECORDS > WINDOW // (2 * MS)  # this load is not "fast"
    pacer = BatchPacer(WINDOW)
    t, drains = 0, 0
    longest = 0
    while t < 1000 * MS:
        pause = pacer.pause_ns(t)
        longest = max(longest, pause)
        t += pause
        pacer.drained(t, 1)
        drains += 1
        t += 2 * MS
    assert pacer.windowed == 0
    assert pacer.paced > 0
    assert drains <= 2 * (QUICK_PER_WINDOW * (1000 // 25) + QUICK_BURST) + 1
    assert longest <= WINDOW // QUICK_PER_WINDOW + 1


def test_after_a_storm_the_first_quiet_record_waits_no_window() -> None:
    pacer = BatchPacer(WINDOW)
    t = 0
    for _ in range(40):  # a storm: every drain brings a window's worth of records
        t = _drain(pacer, t, 2 * FAST_RECORDS) + MS
    assert pacer.windowed > 0
    t += 2 * WINDOW  # quiet again
    assert pacer.pause_ns(t) < WINDOW // QUICK_PER_WINDOW + 1


def test_empty_drains_do_not_count_and_no_window_means_no_pause() -> None:
    pacer = BatchPacer(WINDOW)
    for i in range(100):
        pacer.drained(i * MS, 0)
    assert pacer.pause_ns(100 * MS) == SETTLE_NS
    assert BatchPacer(0).pause_ns(0) == 0


def test_in_a_storm_the_window_counts_from_the_last_drain_not_from_the_wake_up() -> None:
    """The graph took 20 ms with the last batch before the sensor was polled again: the drain waits the
    5 ms left of the window, not 25 more (which put a storm's records a window plus the processing behind)."""
    pacer = BatchPacer(WINDOW)
    t = _drain(pacer, 0, 2 * FAST_RECORDS)  # a storm's batch
    assert pacer.pause_ns(t + MS) == WINDOW - MS  # polled again at once: the rest of the window
    assert pacer.pause_ns(t + 20 * MS) == 5 * MS
    assert pacer.windowed == 2
    assert pacer.pause_ns(t + 40 * MS) == SETTLE_NS  # more than a window later: at once


def test_a_burst_costs_one_token_its_follow_up_drain_is_free_once() -> None:
    """The drain that hands over what the first one held back (stamped while it ran) comes a few ms later:
    it takes no token of its own, so a fork-exec-exit burst costs one; a second follow-up is not free."""
    pacer = BatchPacer(WINDOW, burst=1, per_window=1)
    t = _drain(pacer, 0, 3)  # the burst's first drain takes the only token
    assert pacer.pause_ns(t + FOLLOW_UP_NS // 2) == SETTLE_NS  # its follow-up: at once, free
    pacer.drained(t + FOLLOW_UP_NS // 2, 2)
    t += FOLLOW_UP_NS // 2
    assert pacer.pause_ns(t + MS) > SETTLE_NS  # a second follow-up waits for a token
    assert (pacer.quick, pacer.paced) == (2, 1)
