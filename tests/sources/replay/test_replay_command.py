"""``edr replay`` as a command: what its start costs the collector, and what a worker process inherits."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.cli import main
from edr.runtime import process_pool
from edr.sources.replay import parallel
from tests.cli_helpers import clean_env, file_event, read_alerts, write_ndjson
from tests.conftest import shared_path


@pytest.fixture
def collector() -> Iterator[dict[str, Any]]:
    """For each full collection: the objects frozen then, and those it had to walk (the frozen ones are not).

    The collector is restored afterwards.
    """
    enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    seen: dict[str, Any] = {"full": [], "frozen_before": frozen}

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            seen["full"].append((gc.get_freeze_count(), len(gc.get_objects())))

    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)
        if gc.get_freeze_count() > frozen:
            gc.unfreeze()  # what the replay froze: collectable again, as for the other tests
        if enabled:
            gc.enable()


def test_the_collection_before_the_graph_runs_walks_nothing_of_the_start(workdir: Path,
                                                                         collector: dict[str, Any]) -> None:
    """Configuration, rules and actors are frozen before the supervisor's full collection: it walks
    only what was made since, not every module, rule and actor (0.07-0.1 s with SigmaHQ's set)."""
    events = write_ndjson(workdir / "events.ndjson", [file_event("/etc/cron.d/evil")])
    assert main(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(events)]) == 0
    assert read_alerts(workdir / "logs"), "the replay fired nothing: the test replays nothing"
    assert gc.isenabled()
    assert gc.get_freeze_count() > collector["frozen_before"]  # the rules and actors at least
    # the supervisor's full collection, the first one once the start was frozen, walked next to nothing
    after_freeze = [walked for frozen, walked in collector["full"] if frozen > collector["frozen_before"]]
    assert after_freeze, f"no full collection after the start was frozen: {collector['full']}"
    assert after_freeze[0] < 5_000, collector["full"]


def test_the_collector_is_enabled_again_when_the_start_fails(workdir: Path, collector: dict[str, Any],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "edr.toml").write_text('[alerts]\nno_such_key = 1\n')
    events = write_ndjson(workdir / "events.ndjson", [file_event("/etc/cron.d/evil")])
    assert main(["replay", "--config", "edr.toml", "--no-progress", str(events)]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert gc.isenabled()


def _collector_enabled() -> bool:
    return gc.isenabled()


def test_a_reader_process_collects_even_when_forked_while_the_start_paused_the_collector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_pool, "start_method", lambda: "fork")
    gc.disable()
    try:
        pool = parallel._start_pool(1, logging.INFO)
        try:
            assert pool.submit(_collector_enabled).result(timeout=60) is True
        finally:
            pool.shutdown()
    finally:
        gc.enable()


def test_a_replay_imports_nothing_of_the_doctor_nor_the_webhook_client(workdir: Path) -> None:
    """The doctor's options are added to the parser for ``edr doctor`` only, and the webhook client
    (urllib3) is imported only for a URL to deliver to, the alert sinks' delivery machinery (destinations,
    spools, retries with email.utils, syslog transports) only for a target: their modules cost a replay's
    start."""
    events = write_ndjson(workdir / "events.ndjson", [file_event("/etc/cron.d/evil")])
    unused = ("edr.doctor", "urllib3", "email.utils", "edr.alerts.sinks.destination", "edr.alerts.sinks.spool",
              "edr.alerts.sinks.retry", "edr.alerts.sinks.syslog_delivery", "edr.alerts.sinks.syslog_transport")
    probe = ("import sys\nfrom edr.cli import main\n"
             f"code = main(['replay', '--config', 'edr.toml', '--output', 'logs', '--no-progress', {str(events)!r}])\n"
             f"print(code, sorted(m for m in sys.modules if m.startswith({unused!r})))\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=workdir, env=clean_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.split("\n")[-2] == "0 []", r.stdout + r.stderr
    # and the doctor still has its options
    r = subprocess.run([sys.executable, "-m", "edr", "doctor", "--help"], env=clean_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--rule ID" in r.stdout, r.stdout + r.stderr


def _cron_rule_dir(workdir: Path) -> Path:
    """A rule directory holding one Linux file_event rule: a write under /etc/cron.d/."""
    rules = workdir / "rules"
    rules.mkdir()
    (rules / "cron.yml").write_text(
        "title: Cron write\nid: 0f1e2d3c-4b5a-4968-8776-655443322110\nlogsource:\n  category: file_event\n"
        "  product: linux\ndetection:\n  sel:\n    TargetFilename|startswith: /etc/cron.d/\n"
        "  condition: sel\nlevel: high\n")
    return rules


def test_a_replay_from_the_rule_cache_imports_no_progress_bar_process_walker_package_metadata_nor_yara(
        workdir: Path) -> None:
    """tqdm (a bar: none with --no-progress), psutil (the responder's process walk), importlib.metadata
    (the rule cache's engine key needs pySigma's version only) and yara (the replay graph has no scanner:
    its rules were compiled for nothing) and the rule pack store (no pack named: --sigma) cost a replay's
    start ~70 ms together."""
    rules = _cron_rule_dir(workdir)
    events = write_ndjson(workdir / "events.ndjson", [file_event("/etc/cron.d/evil")])
    probe = ("import sys\nfrom edr.cli import main\n"
             f"code = main(['replay', '--config', 'edr.toml', '--output', 'logs', '--no-progress', '--sigma', "
             f"{str(rules)!r}, {str(events)!r}])\n"
             "print(code, sorted(m for m in sys.modules if m in ('tqdm', 'psutil', 'importlib.metadata', 'yara', "
             "'edr.rulepacks.store')))\n")
    env = clean_env(EDR__SIGMA__CACHE_DIR=str(workdir / "cache"))
    for run in ("cold", "warm"):
        r = subprocess.run([sys.executable, "-c", probe], cwd=workdir, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.stdout.split("\n")[-2] == "0 []", (run, r.stdout + r.stderr)
    assert read_alerts(workdir / "logs"), "the rule fired"


def test_a_replay_exits_without_the_teardown_and_loses_nothing_by_it(workdir: Path) -> None:
    """``edr replay`` ends with ``os._exit`` (the teardown of SigmaHQ's rule set costs 0.05-0.1 s of CPU),
    after its threads, its reader pool and the atexit functions (logging's flush) are done with."""
    rules = _cron_rule_dir(workdir)
    events = write_ndjson(workdir / "events.ndjson", [file_event(f"/etc/cron.d/evil{i}") for i in range(3)])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        probe = ("import os, sys\n"
                 "real_exit = os._exit\n"
                 "def marked_exit(code):\n"
                 "    open('exited', 'w').write(str(code))\n"
                 "    real_exit(code)\n"
                 "os._exit = marked_exit\n"
                 f"sys.argv = ['edr', *{list(args)!r}]\n"
                 "from edr.cli import entry\n"
                 "entry()\n")
        return subprocess.run([sys.executable, "-c", probe], cwd=workdir, env=clean_env(), capture_output=True,
                              text=True, timeout=120)

    r = run("replay", "--config", "edr.toml", "--output", "logs", "--no-progress", "--workers", "2", "--sigma",
            str(rules), str(events), str(events))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (workdir / "exited").read_text() == "0"
    assert len(read_alerts(workdir / "logs")) == 6
    log = b"".join(f.read_bytes() for f in sorted((workdir / "logs").glob("edr.log.*")))
    assert log.endswith(b"\n") and b'"unwritten"' in log.splitlines()[-1], log[-400:]
    # the replay's exit code is kept (a missing file fails it); other commands exit as the interpreter does
    r = run("replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(workdir / "absent.evtx"))
    assert r.returncode == 1 and (workdir / "exited").read_text() == "1", r.stdout + r.stderr
    (workdir / "exited").unlink()
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("edr ") and not (workdir / "exited").exists()


def test_an_error_in_the_threads_shutdown_does_not_fail_a_replay(workdir: Path) -> None:
    """A shutdown hook of the thread machinery that raises (concurrent.futures' when a reader worker was
    killed: its wake-up pipe is gone) is reported, as at the interpreter's own exit, not made the exit code."""
    events = write_ndjson(workdir / "events.ndjson", [file_event("/etc/cron.d/evil")])
    probe = ("import sys, threading\n"
             "def broken():\n"
             "    raise OSError(9, 'Bad file descriptor')\n"
             "threading._register_atexit(broken)\n"
             "sys.argv = ['edr', 'replay', '--config', 'edr.toml', '--output', 'logs', '--no-progress', "
             f"{str(events)!r}]\n"
             "from edr.cli import entry\n"
             "entry()\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=workdir, env=clean_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Exception ignored while the threads shut down" in r.stderr and "Bad file descriptor" in r.stderr


def test_edr_replay_with_workers_writes_what_one_process_writes(workdir: Path) -> None:
    """The command end to end: ``--workers 2`` (a reader process beside this one) and ``--workers 1`` write
    the same alert documents in the same order (but for the time of writing and the chain link over it)."""
    samples = sorted(shared_path("evtx-attack-samples", "Lateral Movement").glob("*.evtx"))
    samples += sorted(shared_path("evtx-attack-samples", "Credential Access").glob("*.evtx"))[:20]
    rules = [str(shared_path("sigma", "rules", "windows", d)) for d in ("builtin", "process_creation",
                                                                        "create_remote_thread")]
    env = clean_env(EDR__SIGMA__CACHE_DIR=str(workdir / "cache"))
    outputs = []
    for workers in ("2", "1", "2"):  # the first run fills the rule cache, the others read it
        r = subprocess.run([sys.executable, "-m", "edr", "replay", "--no-progress", "--workers", workers,
                            *(arg for rule in rules for arg in ("--sigma", rule)), *map(str, samples), "--stdout"],
                           cwd=workdir, env=env, capture_output=True, timeout=600)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        docs = [orjson.loads(line) for line in r.stdout.splitlines()]
        for doc in docs:
            del doc["event.created"], doc["edr.chain.hash"]
        outputs.append(docs)
    assert len(outputs[1]) > 50 and len({d["log.file.path"] for d in outputs[1]}) > 10
    assert outputs[0] == outputs[1] == outputs[2]
