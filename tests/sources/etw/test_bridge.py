"""The callback bridge: bounded, batched, never blocking pywintrace's thread, losing only what it counts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edr.config import EtwConfig
from edr.sources.etw.bridge import CallbackBridge
from edr.sources.etw.providers import PROVIDERS

GUIDS = [p.braced_guid for p in PROVIDERS.values()]
NAMES = list(PROVIDERS)


def _records(n: int, providers: int) -> list[Any]:
    """``n`` records cycling over ``providers`` providers (shared dicts: cheap at a million)."""
    protos = [(1, {"EventHeader": {"ProviderId": GUIDS[k], "EventDescriptor": {"Id": 1}}}) for k in range(providers)]
    return [protos[i % providers] for i in range(n)]


def _produce(bridge: CallbackBridge, records: list[Any], latencies: list[float]) -> None:
    callback = bridge.callback
    clock = time.perf_counter
    for i, record in enumerate(records):
        if i % 997 == 0:  # sample the callback's latency without timing every call
            t = clock()
            callback(record)
            latencies.append(clock() - t)
        else:
            callback(record)


def _by_provider(records: list[Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _eid, data in records:
        counts[NAMES[GUIDS.index(data["EventHeader"]["ProviderId"])]] += 1
    return counts


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.integers(min_value=1, max_value=64),
    providers=st.integers(min_value=1, max_value=8),
    consumer_pause=st.sampled_from([0.0, 0.0002, 0.002]),
    cancel_after=st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.3)),
)
def test_a_million_records_into_a_small_buffer_lose_only_what_is_counted(
        capacity: int, providers: int, consumer_pause: float, cancel_after: float | None) -> None:
    produced = 1_000_000
    records = _records(produced, providers)
    bridge = CallbackBridge(capacity)
    delivered: list[Any] = []
    latencies: list[float] = []
    outcome: dict[str, Any] = {}

    async def main() -> None:
        bridge.attach()
        producer = threading.Thread(target=_produce, args=(bridge, records, latencies))

        async def consume() -> None:
            while True:
                batch = await bridge.receive()
                delivered.extend(batch)
                await trio.sleep(consumer_pause)  # a slow pipeline

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            producer.start()
            if cancel_after is not None:
                await trio.sleep(cancel_after)
                nursery.cancel_scope.cancel()  # the agent stops while the producer is still producing
            else:
                await trio.to_thread.run_sync(producer.join)
                nursery.cancel_scope.cancel()
        started = time.monotonic()
        # the producer never waits for Trio: it finishes even though nobody receives any more
        await trio.to_thread.run_sync(producer.join, 60)
        outcome["join_secs"] = time.monotonic() - started
        outcome["alive"] = producer.is_alive()
        bridge.close()
        delivered.extend(bridge.drain())
        bridge.callback(records[0])  # after close: counted as late, not queued
        outcome["drained_again"] = bridge.drain()

    trio.run(main)
    assert not outcome["alive"]
    assert outcome["drained_again"] == []
    overflow = bridge.statistics()["overflow"]
    assert len(delivered) + sum(overflow.values()) == produced
    assert bridge.late == 1
    # per provider too: what did not arrive is exactly what was counted under its provider
    sent = _by_provider(records)
    got = _by_provider(delivered)
    for name in sent:
        assert got[name] + overflow.get(name, 0) == sent[name]
    assert set(overflow) <= set(sent)
    assert bridge.accepted == len(delivered) == bridge.delivered
    assert max(latencies) < 0.5, f"a callback waited {max(latencies):.3f}s"
    # one wake-up per batch at most: not one Trio call per record
    assert bridge.wakes_scheduled <= bridge.batches + 1


@pytest.mark.slow
async def test_a_4000_process_fork_storm_fits_the_default_bridge_while_trio_is_stalled() -> None:
    """4,000 processes x 32 records (start, stop, image loads, opens) with the pipeline taking nothing."""
    storm = _records(4000 * 32, 8)
    bridge = CallbackBridge(EtwConfig().bridge_records)
    bridge.attach()
    latencies: list[float] = []
    producer = threading.Thread(target=_produce, args=(bridge, storm, latencies))
    producer.start()
    await trio.to_thread.run_sync(producer.join)  # Trio takes nothing until the storm is over
    assert bridge.statistics()["overflow_total"] == 0
    got = await bridge.receive()
    assert len(got) == len(storm) == 128_000
    assert bridge.statistics()["high_water"] == 128_000


async def test_batches_not_records_cross_into_trio() -> None:
    bridge = CallbackBridge(100_000)
    bridge.attach()
    records = _records(50_000, 3)
    producer = threading.Thread(target=_produce, args=(bridge, records, []))
    got: list[Any] = []
    producer.start()
    while len(got) < len(records):
        got.extend(await bridge.receive())
        await trio.sleep(0.001)
    producer.join()
    assert got == records
    assert bridge.batches < len(records) / 10
    assert bridge.wakes_scheduled <= bridge.batches + 1


async def test_receive_waits_and_cancelling_it_loses_nothing() -> None:
    bridge = CallbackBridge(10)
    bridge.attach()
    with trio.move_on_after(0.05) as scope:
        await bridge.receive()
    assert scope.cancelled_caught
    record = _records(1, 1)[0]
    await trio.to_thread.run_sync(bridge.callback, record)
    with trio.fail_after(5):
        assert await bridge.receive() == [record]


def test_overflow_is_counted_per_provider_and_a_bad_record_under_question_mark() -> None:
    bridge = CallbackBridge(2)
    for record in _records(5, 2):
        bridge.callback(record)
    bridge.callback(("junk",))
    stats = bridge.statistics()
    assert stats["accepted"] == 2
    assert stats["overflow"] == {NAMES[0]: 2, NAMES[1]: 1, "?": 1}  # records 2 and 4, record 3, the junk
    assert bridge.drain() == _records(2, 2)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CallbackBridge(0)
