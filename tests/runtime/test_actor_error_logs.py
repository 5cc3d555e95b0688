"""Errors that repeat without end are logged a few times per key, then only counted (edr.runtime.errlog).

The detection actor keys engine failures by engine, the eBPF normalizer
undecodable records by family: one noisy engine or family neither floods
the log nor hides another's first failures.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from edr.detect.actor import DetectActor
from edr.detect.alert import Alert
from edr.event import FILE_EVENT, Event
from edr.sources.ebpf import records as r
from edr.sources.ebpf.actor import EbpfNormalizer
from tests.scan.harness import running, wait_for

LOG = logging.getLogger("edr.test.errlog")


class Broken:
    """An engine that raises on every event."""

    def __init__(self, name: str) -> None:
        self.name = name

    def match(self, event: Event) -> list[Alert]:
        raise RuntimeError(f"{self.name} is broken")


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [rec for rec in caplog.records if text in rec.getMessage()]


def test_detect_logs_the_first_failures_of_each_engine_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger=LOG.name)
    actor = DetectActor("detect", [Broken("one"), Broken("two")], LOG)
    batch = [Event(FILE_EVENT, "linux", {}, 0.0, seq) for seq in range(30)]
    assert actor.detect(batch) == [] and actor.detect(batch[:5]) == []
    assert actor.errors == 70 and actor.statistics()["errors"] == 70
    for name in ("one", "two"):
        logged = lines(caplog, f"engine {name} failed on a file_event event")
        assert len(logged) == 20 and all(rec.exc_info is not None for rec in logged)
        [more] = lines(caplog, f"more engine failures on events ({name})")
        assert more.levelno == logging.ERROR
    assert len(caplog.records) == 42


class BrokenDecoder:
    """A decoder with a bug: it raises on every process record."""

    def decode(self, raw: r.RawRecord) -> list[Any]:
        if raw.family == r.PROCESS:
            raise ValueError("decoder bug")
        return []

    def flush(self, now: float | None) -> list[Any]:
        return []

    def next_flush(self) -> float | None:
        return None

    def statistics(self) -> dict[str, int]:
        return {}


async def test_ebpf_normalizer_logs_the_first_undecodable_records_per_family_then_counts(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger=LOG.name)
    norm = EbpfNormalizer("normalizer", BrokenDecoder(), LOG)
    async with running(norm, output="out") as h:
        await h.send([r.RawRecord(r.PROCESS, b"x") for _ in range(25)] + [r.RawRecord(r.FILE, b"y")])
        await wait_for(lambda: norm.errors == 25)
        h.close()
        with trio.fail_after(5):
            await h.done.wait()
    assert norm.statistics()["errors"] == 25
    logged = lines(caplog, f"ebpf: undecodable {r.PROCESS} record skipped")
    assert len(logged) == 20 and all(rec.exc_info is not None for rec in logged)
    assert len(lines(caplog, f"more undecodable records ({r.PROCESS})")) == 1
