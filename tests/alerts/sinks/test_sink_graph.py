"""The sinks in the replay graph: idle when not configured or not asked to deliver a replay, and a spool that is
full costs alerts to the sink (counted) but never the alert file nor the pipeline."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import pytest
import trio

from edr.alerts.ecs import HostInfo
from edr.alerts.sinks.build import build_webhook
from edr.config import WebhookConfig
from edr.runtime.actor import Ports
from edr.runtime.buffer import Policy
from edr.runtime.channel import Edge, InPort

from .conftest import cron_events, file_alert_ids, replay_in_process, sink_config, write_recording
from .test_cores import alert
from .webhook_receiver import WebhookReceiver

SECRET = b"0123456789abcdef0123456789abcdef"


def test_without_sink_configuration_the_sinks_only_drain(tmp_path: Path) -> None:
    recording = write_recording(tmp_path / "events.ndjson", cron_events(50))
    config = sink_config(tmp_path, syslog={"spool_directory": str(tmp_path / "spool")},
                         webhook={"spool_directory": str(tmp_path / "spool")})
    sup = replay_in_process(config, [recording])
    assert len(file_alert_ids(tmp_path / "out")) == 50
    for name in ("syslog", "webhook"):
        assert sup.actors[name].statistics() == {"destinations": 0}
        assert sup.actors[name].unwritten() == {}
    assert not (tmp_path / "spool").exists()


def test_a_replay_is_delivered_only_when_the_section_says_so(tmp_path: Path) -> None:
    recording = write_recording(tmp_path / "events.ndjson", cron_events(20))
    with WebhookReceiver(SECRET) as receiver:
        config = sink_config(tmp_path, webhook={"urls": [receiver.url], "spool_directory": str(tmp_path / "spool")})
        sup = replay_in_process(config, [recording])
    assert receiver.requests == [] and sup.actors["webhook"].statistics() == {"destinations": 0}


@pytest.mark.slow
def test_a_full_spool_counts_what_it_cannot_take_and_the_replay_goes_on(tmp_path: Path) -> None:
    """The receiver is down for the whole replay; the spool holds 1 MiB (about 700 alerts): the rest are lost to
    the sink (counted in ``lost``), the alert file has every one, and the replay ends within its drain time."""
    n = 3000
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    with WebhookReceiver(SECRET) as receiver:
        receiver.down = True
        webhook = {"urls": [receiver.url], "replay": True, "secret_file": str(secret), "spool_max_mb": 1,
                   "spool_directory": str(tmp_path / "spool"), "retry_initial_secs": 0.05, "retry_max_secs": 0.1}
        sup = replay_in_process(sink_config(tmp_path, webhook=webhook | {"drain_secs": 1.0}), [recording])
        file_ids = file_alert_ids(tmp_path / "out")
        assert len(file_ids) == n
        stats = sup.actors["webhook"].statistics()
        assert stats["sent"] == 0 and stats["failed"] >= 1 and receiver.accepted_ids == []
        assert stats["lost"] > 0 and stats["spooled"] + stats["lost"] == n, stats
        assert stats["queued"] == stats["spooled"] and stats["spool_bytes"] <= 1 << 20
        # the receiver is back: what the spool kept is delivered at the next start, each alert once
        receiver.down = False
        empty = write_recording(tmp_path / "nothing.ndjson", [])
        again = replay_in_process(sink_config(tmp_path, webhook=webhook | {"drain_secs": 30.0}), [empty])
    delivered = collections.Counter(receiver.accepted_ids)
    assert sum(delivered.values()) == len(delivered) == stats["spooled"]
    assert set(delivered) <= set(file_ids)
    assert again.actors["webhook"].statistics()["queued"] == 0


def test_an_item_that_cannot_be_encoded_is_logged_counted_and_skipped(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    with WebhookReceiver(SECRET) as receiver:
        actor = build_webhook(WebhookConfig(urls=[receiver.url], secret_file=str(secret), drain_secs=30.0,
                                            spool_directory=str(tmp_path / "spool")),
                              "agent", "webhook", logging.getLogger("test.sinks"), HostInfo("h", "linux"))

        async def main() -> None:
            edge = Edge("test->webhook", 8, Policy.BLOCK)
            port = InPort("in")
            port.attach(edge)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(actor.run, Ports({"in": port}, {}))
                await edge.send([alert(1), object(), alert(2)])
                edge.close()

        trio.run(main)
    stats = actor.statistics()
    assert (stats["alerts"], stats["errors"], stats["sent"]) == (2, 1, 2)
    assert len(receiver.accepted_ids) == 2
    assert "cannot encode an item of type object" in caplog.text and "it is skipped" in caplog.text
