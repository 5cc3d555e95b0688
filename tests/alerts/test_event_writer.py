"""The event stream writer: what it gathers reaches the file in few writes, soon, and all of it at the end."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import trio

from edr.alerts.actor import EventWriter
from edr.alerts.daily_file import DailyFile
from edr.event import PROCESS_CREATION, PROCESS_TERMINATION, Event
from edr.runtime.buffer import Policy
from tests.scan.harness import running, wait_for

LOG = logging.getLogger("test.events")


def _event(seq: int, category: str = PROCESS_CREATION) -> Event:
    return Event(category=category, product="linux", fields={"ProcessId": seq, "Image": "/usr/bin/true"},
                 timestamp=1_760_000_000.0 + seq, seq=seq)


def _written(directory: Path) -> list[int]:
    return [orjson.loads(line)["seq"] for f in sorted(directory.glob("events.json.*"))
            for line in f.read_bytes().splitlines()]


async def test_batches_within_the_delay_are_written_together_and_soon(tmp_path: Path) -> None:
    writer = EventWriter("events", DailyFile(tmp_path, "events.json"), LOG, write_delay=1.0)
    async with running(writer, output=None, policy=Policy.BLOCK) as h:
        for i in range(5):
            await h.send([_event(3 * i + k) for k in range(3)])
        # gathered, not yet written: they count as unwritten
        await wait_for(lambda: writer.unwritten() == {"events": 15} and not h.edge.statistics().depth)
        assert _written(tmp_path) == []
        # written once the first has waited write_delay, while the input is still open
        await wait_for(lambda: writer.events == 15, timeout=5)
        assert _written(tmp_path) == list(range(15)) and writer.writes == 1
        assert writer.unwritten() == {"events": 0}
        await h.send([_event(15)])
        await wait_for(lambda: writer.events == 16, timeout=5)
        assert writer.writes == 2
        h.close()
        with trio.fail_after(5):
            await h.done.wait()


async def test_the_end_of_the_input_writes_what_was_gathered_at_once(tmp_path: Path) -> None:
    writer = EventWriter("events", DailyFile(tmp_path, "events.json"), LOG,
                         frozenset({PROCESS_CREATION}), write_delay=3600)
    async with running(writer, output=None, policy=Policy.BLOCK) as h:
        await h.send([_event(1), _event(2, PROCESS_TERMINATION), _event(3)])
        await h.send([_event(4, PROCESS_TERMINATION)])
        h.close()
        with trio.fail_after(5):
            await h.done.wait()
    assert _written(tmp_path) == [1, 3] and writer.writes == 1 and writer.unwritten() == {"events": 0}


async def test_a_full_gathering_is_written_without_waiting_for_the_delay(tmp_path: Path) -> None:
    writer = EventWriter("events", DailyFile(tmp_path, "events.json"), LOG, write_delay=3600, write_lines=10)
    async with running(writer, output=None, policy=Policy.BLOCK) as h:
        for i in range(5):
            await h.send([_event(4 * i + k) for k in range(4)])
        await wait_for(lambda: writer.events == 12, timeout=5)  # 4+4+4: the third batch filled it
        assert _written(tmp_path) == list(range(12)) and writer.unwritten() == {"events": 8}
        h.close()
        with trio.fail_after(5):
            await h.done.wait()
    assert _written(tmp_path) == list(range(20))


async def test_cancelled_while_gathering_counts_the_gathered_as_unwritten(tmp_path: Path) -> None:
    writer = EventWriter("events", DailyFile(tmp_path, "events.json"), LOG, write_delay=3600)
    with trio.CancelScope() as stop:  # the supervisor's stop timeout, in short
        async with running(writer, output=None, policy=Policy.BLOCK) as h:
            await h.send([_event(1), _event(2)])
            await wait_for(lambda: not h.edge.statistics().depth)
            stop.cancel()
            await trio.sleep_forever()
    assert _written(tmp_path) == [] and writer.unwritten() == {"events": 2}
