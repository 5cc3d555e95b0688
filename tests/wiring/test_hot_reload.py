"""Hot reload without the sensor: the Reloader's decisions, correlation carry-over, batch-boundary swaps, SIGHUP.

Real rule files in a temporary directory, real Sigma compiles, a real
SIGHUP to this process and a real datagram socket as NOTIFY_SOCKET.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import types
from pathlib import Path

import attrs
import pytest
import trio

from edr.config import load_config
from edr.detect.actor import DetectActor
from edr.detect.engines import Detection, load_detection
from edr.detect.reloadable import RuleSet, RuleSetHolder, carry_correlations, sigma_digests
from edr.detect.sigma import load_sigma
from edr.event import Event
from edr.wiring.reload import Reloader, config_changes, is_reloadable, merge_reloadable

RULE = """title: {title}
id: {rule_id}
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: '{needle}'
    condition: selection
level: high
"""

BROKEN = """title: Broken
id: 00000000-0000-4000-8000-00000000dead
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'x'
    condition: selection and nowhere
level: high
"""

CORRELATION = """title: Three Markers
id: 00000000-0000-4000-8000-0000000000c1
status: test
correlation:
    type: event_count
    rules:
        - marker-rule
    group-by:
        - User
    timespan: 1h
    condition:
        gte: 3
level: high
"""

MARKER_RULE = """title: Marker
id: 00000000-0000-4000-8000-0000000000a1
name: marker-rule
status: test
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'marker'
    condition: selection
level: low
"""


def _event(cmd: str, seq: int = 1, ts: float = 1000.0) -> Event:
    return Event(category="process_creation", product="linux",
                 fields={"CommandLine": cmd, "Image": "/bin/true", "User": "root"}, timestamp=ts, seq=seq)


def _rule(title: str, needle: str, n: int) -> str:
    return RULE.format(title=title, rule_id=f"00000000-0000-4000-8000-{n:012d}", needle=needle)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sigma"
    d.mkdir()
    (d / "one.yml").write_text(_rule("One", "needle-one", 1))
    return d


def _loaded(tmp_path: Path, rules_dir: Path, extra: str = ""):
    conf = tmp_path / "config.toml"
    conf.write_text(f"""
[scanner]
sigma_rules_path = "{rules_dir}"
yara_enabled = false
[ioc]
enabled = false
[simple]
enabled = false
[sigma]
cache_dir = "{tmp_path / 'cache'}"
{extra}
""")
    return load_config(str(conf), environ={})


def _reloader(tmp_path: Path, rules_dir: Path, **kw) -> tuple[Reloader, RuleSetHolder]:
    loaded = _loaded(tmp_path, rules_dir)
    holder = RuleSetHolder(RuleSet(1, load_detection(loaded.config)))
    return Reloader(loaded, loaded.config, holder, environ={}, **kw), holder


def test_keys_that_reload_and_keys_that_need_a_restart() -> None:
    assert is_reloadable("sigma.placeholders") and is_reloadable("scanner.sigma_rules_path")
    assert is_reloadable("ioc.hashes_path") and is_reloadable("simple.rules_path")
    assert not is_reloadable("sensor.page_count") and not is_reloadable("ioc.enabled")
    assert not is_reloadable("alerts.directory")


def test_changed_keys_split_and_only_reloadable_ones_merged(tmp_path: Path, rules_dir: Path) -> None:
    running = _loaded(tmp_path, rules_dir).config
    new = attrs.evolve(running, sensor=attrs.evolve(running.sensor, page_count=128),
                       scanner=attrs.evolve(running.scanner, sigma_rules_path=["/elsewhere"]))
    reload_keys, restart_keys = config_changes(running, new)
    assert reload_keys == ["scanner.sigma_rules_path"]
    assert restart_keys == ["sensor.page_count"]
    merged = merge_reloadable(running, new)
    assert merged.scanner.sigma_rules_path == ["/elsewhere"]
    assert merged.sensor.page_count == running.sensor.page_count


def test_reload_swaps_in_a_rule_set_with_one_rule_more(tmp_path: Path, rules_dir: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    reloader, holder = _reloader(tmp_path, rules_dir)
    (rules_dir / "two.yml").write_text(_rule("Two", "needle-two", 2))
    with caplog.at_level(logging.INFO, logger="edr.reload"):
        outcome = reloader.apply(reloader.compile())
    assert outcome.accepted and holder.version == 2
    assert holder.current.counts()["sigma rules"] == 2
    assert "rule set #2 in force (was #1)" in caplog.text and "sigma rules 1 -> 2" in caplog.text


def test_a_new_broken_rule_is_refused_naming_its_file_and_the_old_set_stays(
        tmp_path: Path, rules_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader, holder = _reloader(tmp_path, rules_dir)
    running = holder.current
    (rules_dir / "two.yml").write_text(_rule("Two", "needle-two", 2))
    (rules_dir / "broken.yml").write_text(BROKEN)
    with caplog.at_level(logging.INFO, logger="edr.reload"):
        outcome = reloader.apply(reloader.compile())
    assert not outcome.accepted
    assert holder.current is running and holder.version == 1
    assert any(str(rules_dir / "broken.yml") in r and "nowhere" in r for r in outcome.reasons), outcome.reasons
    assert f"{rules_dir / 'broken.yml'}" in caplog.text and "rule set #1 stays in force" in caplog.text


def test_an_error_the_running_set_already_had_is_no_reason_to_refuse(tmp_path: Path, rules_dir: Path) -> None:
    (rules_dir / "broken.yml").write_text(BROKEN)
    reloader, holder = _reloader(tmp_path, rules_dir)
    reloader.problems = holder.current.problems  # as the agent starts it: accepted with this error
    (rules_dir / "two.yml").write_text(_rule("Two", "needle-two", 2))
    assert reloader.apply(reloader.compile()).accepted
    assert holder.version == 2


def test_a_configuration_that_no_longer_loads_is_refused(tmp_path: Path, rules_dir: Path) -> None:
    reloader, holder = _reloader(tmp_path, rules_dir)
    (tmp_path / "config.toml").write_text("[sigma]\nno_such_key = 1\n")
    outcome = reloader.apply(reloader.compile())
    assert not outcome.accepted and holder.version == 1
    assert "no_such_key" in outcome.reasons[0]


def test_a_non_reloadable_change_is_logged_as_needing_a_restart(tmp_path: Path, rules_dir: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    reloader, _holder = _reloader(tmp_path, rules_dir)
    _loaded(tmp_path, rules_dir, "[sensor]\npage_count = 128\n")
    with caplog.at_level(logging.INFO, logger="edr.reload"):
        assert reloader.apply(reloader.compile()).accepted
    assert "needs restart" in caplog.text and "sensor.page_count" in caplog.text
    assert reloader.config.sensor.page_count != 128


def test_detect_actor_takes_new_rules_only_between_batches(tmp_path: Path, rules_dir: Path) -> None:
    loaded = _loaded(tmp_path, rules_dir)
    holder = RuleSetHolder(RuleSet(1, load_detection(loaded.config)))
    actor = DetectActor("detect", list(holder.current.detection.engines), logging.getLogger("test"), rules=holder)
    assert not actor.detect([_event("x needle-two")])
    (rules_dir / "two.yml").write_text(_rule("Two", "needle-two", 2))
    holder.replace(load_detection(loaded.config), None)
    alerts = actor.detect([_event("x needle-two"), _event("y needle-one", 2)])
    assert sorted(a.rule_id for a in alerts) == ["00000000-0000-4000-8000-000000000001",
                                                 "00000000-0000-4000-8000-000000000002"]
    assert actor.rules_version == 2


def _sigma(directory: Path):
    """A Sigma engine of ``directory`` and its file digests, taken as the agent takes them (no cache)."""
    engine = load_sigma([str(directory)])[0]
    return engine, sigma_digests(Detection((engine,), sigma=engine))


def test_correlation_state_carries_over_when_its_identity_is_unchanged(tmp_path: Path) -> None:
    d = tmp_path / "corr"
    d.mkdir()
    (d / "b_marker.yml").write_text(MARKER_RULE)
    (d / "c_corr.yml").write_text(CORRELATION)
    old, old_digests = _sigma(d)
    for i in range(2):
        old.match(_event("marker", i, 1000.0 + i))
    # one more rule, sorted before the others: every rule number shifts
    (d / "a_first.yml").write_text(_rule("First", "first", 9))
    new, new_digests = _sigma(d)
    assert carry_correlations(old, new, old_digests, new_digests) == (1, 1)
    fired = [a for a in new.match(_event("marker", 3, 1003.0)) if a.rule_id.endswith("c1")]
    assert fired, "the two matches counted before the reload were lost"


def test_correlation_state_is_dropped_when_its_rule_changed(tmp_path: Path) -> None:
    d = tmp_path / "corr"
    d.mkdir()
    (d / "b_marker.yml").write_text(MARKER_RULE)
    (d / "c_corr.yml").write_text(CORRELATION)
    old, old_digests = _sigma(d)
    for i in range(2):
        old.match(_event("marker", i, 1000.0 + i))
    (d / "b_marker.yml").write_text(MARKER_RULE.replace("'marker'", "'marker-v2'"))
    new, new_digests = _sigma(d)
    assert carry_correlations(old, new, old_digests, new_digests) == (0, 0)
    assert not [a for a in new.match(_event("marker-v2", 3, 1003.0)) if a.rule_id.endswith("c1")]


def test_sighups_during_a_reload_coalesce_and_systemd_hears_reloading_then_ready(
        tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edr.agent import EarlyHangup, ReloadRequests
    from edr.platform import current

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))

    def slow_prepare(loaded):  # the compile takes long enough for signals to arrive meanwhile
        time.sleep(0.6)
        return loaded.config, None, ()

    reloader, holder = _reloader(tmp_path, rules_dir, prepare=slow_prepare)
    early = EarlyHangup()
    sup = types.SimpleNamespace(stopping=False)

    def signals() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGHUP)  # starts a reload
        time.sleep(0.3)
        for _ in range(4):  # all while it compiles: one more reload in all
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ReloadRequests(reloader, current().service, early, signals=True).run, sup)
            await trio.to_thread.run_sync(signals)
            with trio.fail_after(10):
                while reloader.attempts < 2:
                    await trio.sleep(0.05)
            await trio.sleep(1.0)  # no third reload comes
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        early.restore()
    assert reloader.attempts == 2 and holder.version == 3
    got = []
    sock.settimeout(0.5)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    sock.close()
    assert [m.split("\n")[0] for m in got] == ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1"], got
    assert all(m.split("\n")[1].startswith("MONOTONIC_USEC=") for m in got[::2]), got


def test_sighup_before_the_reload_task_listens_is_kept_for_after_the_start() -> None:
    from edr.agent import EarlyHangup

    early = EarlyHangup()
    try:
        os.kill(os.getpid(), signal.SIGHUP)  # would end the process with the default disposition
        deadline = time.monotonic() + 2
        while not early.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert early.take() and not early.take()
    finally:
        early.restore()
    assert signal.getsignal(signal.SIGHUP) is not early._handler
