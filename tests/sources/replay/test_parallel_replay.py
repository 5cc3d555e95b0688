"""Replay with reader processes (``--workers``): what one process replays, alert for alert, failure for failure."""

from __future__ import annotations

import functools
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import trio

from edr.config import load_config
from edr.runtime import process_pool
from edr.runtime.supervisor import Supervisor
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph
from tests.cli_helpers import file_event, read_alerts, write_ndjson
from tests.conftest import shared_path

#: Sigma rules of SigmaHQ that the lateral movement and credential access samples fire.
RULE_DIRS = ("windows/builtin/security", "windows/process_access", "windows/create_remote_thread",
             "windows/pipe_created")


def replay(workdir: Path, name: str, files: list[Path], workers: int, **overrides: Any) -> Supervisor:
    """Replay ``files`` in process with ``workers`` reader processes; alerts land in ``workdir/name``."""
    config = load_config("edr.toml", environ={}, overrides={"alerts.directory": str(workdir / name),
                                                            **overrides}).config
    ctx = AgentContext.create(config, "replay", files=[str(f) for f in files], workers=workers)
    sup = Supervisor(mode_graph("replay"), ctx)
    assert trio.run(functools.partial(sup.run, handle_signals=False)) == 0
    return sup


def forked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader processes forked from this one, so that they inherit what the test patched.

    The idle threads of an earlier ``trio.run`` would make the pool start
    them from a fork server, which imports the modules afresh.
    """
    monkeypatch.setattr(process_pool, "start_method", lambda: "fork")


def alerts(directory: Path) -> list[dict[str, Any]]:
    docs = read_alerts(directory)
    for doc in docs:
        del doc["event.created"]  # when it was written
        del doc["edr.chain.hash"]  # its link covers the whole line, event.created included (the seq must match)
    return docs


def outcome(sup: Supervisor) -> dict[str, Any]:
    """What the source and the normalizer counted, and the files that failed with their reasons."""
    source = sup.actors["source"]
    return {"source": source.statistics(), "failures": source.failures,
            "normalizer": sup.actors["normalizer"].statistics()}


def test_reader_processes_replay_what_one_process_replays(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    samples = sorted(shared_path("evtx-attack-samples", "Lateral Movement").glob("*.evtx"))
    samples += sorted(shared_path("evtx-attack-samples", "Credential Access").glob("*.evtx"))[:20]
    rules = [str(shared_path("sigma", "rules", *d.split("/"))) for d in RULE_DIRS]
    (workdir / "random.evtx").write_bytes(os.urandom(70_000).replace(b"\0", b"\1"))
    (workdir / "short.evtx").write_bytes(b"ElfFile\0" + b"\0" * 100)
    dump = workdir / "dump.json"
    dump.write_text('{"Event": {"System": {"EventID": 4624, "Channel": "Security"}}}\nnot json\n')
    ndjson = write_ndjson(workdir / "cron.ndjson", [file_event("/etc/cron.d/x")])
    files = [*samples[:10], workdir / "random.evtx", ndjson, *samples[10:30], workdir / "short.evtx", dump,
             *samples[30:]]
    overrides = {"scanner.sigma_enabled": True, "scanner.sigma_rules_path": rules,
                 "sigma.cache_dir": str(workdir / "cache")}
    caplog.set_level(logging.WARNING)
    one = replay(workdir, "one", files, 1, **overrides)
    logged_by_one = sorted(r.getMessage() for r in caplog.records if r.name.startswith("edr"))
    caplog.clear()
    pooled = replay(workdir, "pooled", files, 2, **overrides)
    logged_pooled = sorted(r.getMessage() for r in caplog.records if r.name.startswith("edr"))

    expected = alerts(workdir / "one")
    assert len(expected) > 50 and len({a["log.file.path"] for a in expected}) > 10
    assert alerts(workdir / "pooled") == expected  # the same documents in the same order
    assert outcome(pooled) == outcome(one)
    assert [Path(p).name for p, _ in outcome(one)["failures"]] == ["random.evtx", "short.evtx"]
    assert outcome(one)["normalizer"]["rejected"] >= 1  # the dump's line that is not JSON
    assert logged_pooled == logged_by_one
    # every file but the NDJSON one went through the reader processes (which report the unusable files too)
    assert (one.actors["source"].files_pooled, pooled.actors["source"].files_pooled) == (0, len(files) - 1)


def test_a_decoder_error_in_a_reader_process_is_reported_as_in_this_process(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from edr.sources.replay import winlog

    samples = sorted(shared_path("evtx-attack-samples", "Lateral Movement").glob("*.evtx"))[:6]
    real = winlog.winlog_record_to_event
    calls: dict[str, int] = {}

    def fragile(record: Any, path: str) -> Any:
        calls[path] = calls.get(path, 0) + 1
        if path == str(samples[3]) and calls[path] == 2:
            raise ZeroDivisionError("a bug this record reveals")
        return real(record, path)

    monkeypatch.setattr(winlog, "winlog_record_to_event", fragile)
    forked(monkeypatch)
    results = []
    for workers in (1, 2):
        calls.clear()
        caplog.clear()
        caplog.set_level(logging.ERROR)
        sup = replay(workdir, f"w{workers}", samples, workers)
        failed = [r for r in caplog.records if "decoding failed: ZeroDivisionError" in r.getMessage()]
        assert len(failed) == 1 and str(samples[3]) in failed[0].getMessage()
        # the traceback names the decoder, whether it is attached here or carried from the worker
        trace = failed[0].getMessage() + "".join(
            traceback.format_exception(*failed[0].exc_info) if failed[0].exc_info else [])
        assert "in fragile" in trace
        results.append(outcome(sup))
    assert results[0] == results[1]
    assert results[0]["normalizer"]["errors"] == 1
    assert sup.actors["source"].files_pooled == len(samples)


def test_a_file_that_kills_its_reader_process_fails_alone(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evtx

    samples = sorted(shared_path("evtx-attack-samples", "Lateral Movement").glob("*.evtx"))[:5]
    killer = workdir / "kills.evtx"
    killer.write_bytes(b"ElfFile\0" + bytes(4088))
    real = evtx.PyEvtxParser

    class Parser:
        """Dies as a parser that crashes the process would (a segfault in native code) on ``killer``."""

        def __new__(cls, source: Any, *args: Any, **kwargs: Any) -> Any:
            start = source.tell()
            if source.read() == killer.read_bytes():
                os._exit(70)
            source.seek(start)
            return real(source, *args, **kwargs)

    monkeypatch.setattr(evtx, "PyEvtxParser", Parser)
    forked(monkeypatch)
    files = [samples[0], samples[1], killer, *samples[2:]]
    sup = replay(workdir, "out", files, 2)
    source = sup.actors["source"]
    assert source.failures == [(str(killer), "the process reading it died (twice; the EVTX parser crashed on it?)")]
    assert source.files_done == len(files)
    reference = replay(workdir, "reference", samples, 1)
    assert source.records == reference.actors["source"].records
    assert alerts(workdir / "out") == alerts(workdir / "reference")


def test_the_replaying_process_counts_as_one_of_the_workers(workdir: Path) -> None:
    """``--workers N``: this process, which detects and writes (the larger part), and N - 1 readers."""
    from edr.sources.replay.actor import ReplaySource

    files = [str(write_ndjson(workdir / f"{i}.ndjson", [file_event(f"/tmp/{i}")])) for i in range(4)]
    log = logging.getLogger("test")
    assert ReplaySource("source", files, 64, log, workers=1)._pool is None
    for workers, readers in ((2, 1), (3, 2)):
        source = ReplaySource("source", files, 64, log, workers=workers)
        try:
            assert source._pool is not None and source._pool.workers == readers
        finally:
            source._pool.close()


class _Pool:
    """A pool that only records what it is given; its futures are finished by the test."""

    def __init__(self) -> None:
        self.given: list[str] = []
        #: how many files each submission gave
        self.groups: list[int] = []
        self.futures: list[Any] = []

    def submit(self, fn: Any, paths: list[str], batch_size: int) -> Any:
        from concurrent.futures import Future

        future: Future[list[bytes]] = Future()
        self.given.extend(Path(path).name for path in paths)
        self.groups.append(len(paths))
        self.futures.append(future)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def test_readers_read_far_ahead_through_small_files_and_not_through_large_ones(workdir: Path) -> None:
    from edr.sources.replay.parallel import AHEAD, AHEAD_BYTES, GROUP_FILES, PooledFiles, WireFile, _encode

    small = [workdir / f"s{i:02}.evtx" for i in range(30)]
    for f in small:
        f.write_bytes(b"x" * 1024)
    pool = _Pool()
    pooled = PooledFiles([str(f) for f in small], 64, 1, pool_factory=lambda workers, level: pool)
    assert len(pool.given) == 1 + AHEAD  # one per worker, and AHEAD files ahead
    assert pool.groups == [GROUP_FILES, GROUP_FILES, 1 + AHEAD - 2 * GROUP_FILES]  # given together
    pool.futures[0].set_result([_encode(WireFile(True, "evtx", size=i)) for i in range(GROUP_FILES)])
    assert [pooled.result(i).size for i in range(GROUP_FILES)] == list(range(GROUP_FILES))
    # the window is topped up once a whole group fits, not a file at a time
    assert pool.groups == [GROUP_FILES, GROUP_FILES, 1 + AHEAD - 2 * GROUP_FILES, GROUP_FILES]
    pooled.close()

    large = [workdir / f"l{i}.evtx" for i in range(6)]
    for f in large:
        with open(f, "wb") as fh:
            fh.truncate(AHEAD_BYTES * 5 // 8)  # two of them are more than AHEAD_BYTES
    pool = _Pool()
    pooled = PooledFiles([str(f) for f in large], 64, 1, pool_factory=lambda workers, level: pool)
    assert pool.given == ["l0.evtx", "l1.evtx"]  # the worker's file, and the first file ahead whatever its size
    pool.futures[0].set_result([_encode(WireFile(True, "evtx"))])
    assert pooled.result(0).pooled
    assert pool.given == ["l0.evtx", "l1.evtx", "l2.evtx"]  # one more when one is replayed
    pooled.close()
