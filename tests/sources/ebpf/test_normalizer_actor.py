"""The normalizer actor: decoding batches, and DNS queries that never get an answer."""

from __future__ import annotations

import logging
import time

import trio
import trio.testing

from edr.event import DNS_QUERY, PROCESS_CREATION, Event, F
from edr.sources.ebpf import records as r
from edr.sources.ebpf.actor import EbpfNormalizer
from edr.sources.ebpf.decode import Decoder, boot_offset_now
from tests.scan.harness import running, wait_for
from tests.sources.ebpf import rawrec as rr
from tests.sources.ebpf.fakehost import FakeHost


def _now_ns() -> int:
    return int((time.time() - boot_offset_now()) * 1e9)


async def test_unanswered_query_is_flushed_while_running() -> None:
    decoder = Decoder(host=FakeHost(), dns_timeout=0.2)  # type: ignore[arg-type]
    norm = EbpfNormalizer("normalizer", decoder, logging.getLogger("test"))
    async with running(norm, output="out") as h:
        await h.send([rr.exec_rec(41, "/usr/bin/dig", ["dig", "nx.example"], ts_ns=_now_ns()),
                      rr.dns_rec(41, rr.dns_message("nx.example"), ts_ns=_now_ns())])
        await wait_for(lambda: any(e.category == PROCESS_CREATION for e in h.received))
        assert not any(e.category == DNS_QUERY for e in h.received)
        # no answer ever comes: the flush task reports the query once dns_timeout has passed
        await wait_for(lambda: any(e.category == DNS_QUERY for e in h.received), timeout=3)
        [query] = [e for e in h.received if e.category == DNS_QUERY]
        assert query.fields[F.QUERY_NAME] == "nx.example" and F.QUERY_RESULTS not in query.fields


async def test_pending_queries_are_flushed_at_end_of_stream() -> None:
    decoder = Decoder(host=FakeHost(), dns_timeout=3600)  # type: ignore[arg-type]
    norm = EbpfNormalizer("normalizer", decoder, logging.getLogger("test"))
    async with running(norm, output="out") as h:
        query = rr.dns_rec(42, rr.dns_message("late.example"), ts_ns=_now_ns())
        await h.send([query, r.RawRecord(r.PROCESS, b"short")])
        h.close()
        with trio.fail_after(5):
            await h.done.wait()
        await trio.sleep(0.05)
    names = [e.fields[F.QUERY_NAME] for e in h.received if e.category == DNS_QUERY]
    assert names == ["late.example"]
    assert norm.statistics()["malformed"] == 1


class CountingDecoder(Decoder):
    """Counts the flushes the normalizer asks for."""

    flushes = 0

    def flush(self, now: float | None = None) -> list[Event]:
        self.flushes += 1
        return super().flush(now)


async def test_the_flush_task_sleeps_while_no_query_is_pending(autojump_clock: trio.testing.MockClock) -> None:
    decoder = CountingDecoder(host=FakeHost(), dns_timeout=0.2)  # type: ignore[arg-type]
    norm = EbpfNormalizer("normalizer", decoder, logging.getLogger("test"))
    async with running(norm, output="out") as h:
        await h.send([rr.exec_rec(43, "/usr/bin/id", ["id"], ts_ns=_now_ns())])
        await trio.sleep(3600)  # an hour of (virtual) time with no DNS query pending
        assert decoder.flushes == 0 and len(h.received) == 1


async def test_each_pending_query_is_flushed_at_its_deadline() -> None:
    decoder = CountingDecoder(host=FakeHost(), dns_timeout=0.3)  # type: ignore[arg-type]
    norm = EbpfNormalizer("normalizer", decoder, logging.getLogger("test"))
    async with running(norm, output="out") as h:
        await h.send([rr.dns_rec(44, rr.dns_message("a.example"), ts_ns=_now_ns())])
        await trio.sleep(0.1)
        await h.send([rr.dns_rec(44, rr.dns_message("b.example"), ts_ns=_now_ns())])
        await wait_for(lambda: len(h.received) == 2, timeout=3)
        await trio.sleep(0.2)
    assert [e.fields[F.QUERY_NAME] for e in h.received] == ["a.example", "b.example"]
    # one wake-up per deadline (a second one only if the clock read a hair early), none in between
    assert 2 <= decoder.flushes <= 4, decoder.flushes
