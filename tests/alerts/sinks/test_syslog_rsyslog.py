"""A real rsyslog receives every alert of a replay over TCP, even when it is stopped and restarted mid-run."""

from __future__ import annotations

import collections
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from edr.runtime.supervisor import Supervisor

from .conftest import cron_events, file_alert_ids, replay_in_process, sink_config, write_recording
from .rsyslog import Rsyslog

pytestmark = pytest.mark.slow

#: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [edr@32473 ...] MSG, as rsyslog writes it back.
RFC5424 = re.compile(rb'^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) '
                     rb'(\[edr@32473 (?:[a-z]+="(?:[^"\\\]]|\\.)*" ?)+\]) (.*)$')


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog")
    server.start()
    yield server
    server.stop()


def test_every_alert_of_a_replay_reaches_rsyslog_as_rfc5424(tmp_path: Path, rsyslog: Rsyslog) -> None:
    recording = write_recording(tmp_path / "events.ndjson", cron_events(500))
    config = sink_config(tmp_path, syslog={"targets": [rsyslog.target], "replay": True,
                                           "spool_directory": str(tmp_path / "spool"), "facility": "authpriv"})
    sup = replay_in_process(config, [recording])
    ids = file_alert_ids(tmp_path / "out")
    assert len(ids) == 500 == len(set(ids))
    lines = rsyslog.lines()
    assert sorted(rsyslog.ids()) == sorted(ids)  # every alert, once
    by_id = {doc_id: line for doc_id, line in zip(rsyslog.ids(), lines, strict=True)}
    line = by_id[ids[0]]
    match = RFC5424.match(line)
    assert match, line[:400]
    pri, _stamp, host, app, procid, msgid, sd, msg = match.groups()
    assert int(pri) == 10 * 8 + 3  # authpriv, high -> Error
    assert (app, msgid) == (b"edr", b"alert") and procid.isdigit()
    assert sd == (f'[edr@32473 id="{ids[0]}" rule="BUILTIN-CRON" name="Cron configuration modified" '
                  f'severity="high" engine="simple"]').encode()
    doc = orjson.loads(msg)
    assert doc["event.id"] == ids[0] and doc["rule.id"] == "BUILTIN-CRON"
    # a replayed alert names the recorded host; these recorded events name none: RFC 5424's NILVALUE
    assert doc["edr.replay"] is True and "host.name" not in doc and host == b"-"
    stats = sup.actors["syslog"].statistics()
    assert stats["sent"] == 500 and stats["queued"] == 0 and stats["lost"] == 0 and stats["failed"] == 0


@pytest.mark.parametrize("how", ["stopped", "hung-then-killed"])
def test_rsyslog_stopped_and_restarted_mid_run_still_gets_every_alert(tmp_path: Path, rsyslog: Rsyslog,
                                                                      how: str) -> None:
    """``stopped``: SIGTERM, what rsyslog had read is written. ``hung-then-killed``: SIGSTOP while alerts flow, so
    its socket buffers fill with alerts it never reads, then SIGKILL: those are lost on its side, and only the
    sink's confirmation window (edr.alerts.sinks.confirm) sends them again."""
    n = 20_000
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    config = sink_config(tmp_path, syslog={"targets": [rsyslog.target], "replay": True,
                                           "spool_directory": str(tmp_path / "spool"), "drain_secs": 120.0,
                                           "retry_initial_secs": 0.2, "retry_max_secs": 1.0})
    seen: dict[str, int] = {}

    async def stop_and_restart(sup: Supervisor) -> None:
        # Stop rsyslog once it has written a few hundred alerts, keep it down while the replay goes on, restart.
        while rsyslog.count() < 300:
            await trio.sleep(0.005)
        if how == "stopped":
            await trio.to_thread.run_sync(rsyslog.stop)
        else:
            rsyslog.pause()
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(rsyslog.stop, signal.SIGKILL)
        seen["at_stop"] = rsyslog.count()
        await trio.sleep(1.5)
        seen["failed_while_down"] = sup.actors["syslog"].statistics()["failed"]
        await trio.to_thread.run_sync(rsyslog.start)

    sup = replay_in_process(config, [recording], background=[stop_and_restart])
    assert seen["at_stop"] < n  # it really was stopped mid-run
    assert seen["failed_while_down"] >= 1
    file_ids = file_alert_ids(tmp_path / "out")
    assert len(file_ids) == n == len(set(file_ids))
    received = rsyslog.ids()
    # every alert of the alert file reached rsyslog; what it may have twice is what was sent again after the stop
    assert set(received) == set(file_ids)
    duplicates = sum(c - 1 for c in collections.Counter(received).values())
    stats = sup.actors["syslog"].statistics()
    assert duplicates <= stats["resent"], (duplicates, stats)
    assert len(received) - duplicates == len(file_ids)
    print(f"rsyslog stopped at {seen['at_stop']} of {n}; received {len(received)} lines, {duplicates} duplicates, "
          f"{stats['resent']} resent, {stats['failed']} failed attempts")
    assert stats["sent"] == n and stats["queued"] == 0 and stats["lost"] == 0
    assert rsyslog.starts == 2
