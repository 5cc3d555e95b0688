"""SigmaHQ fires on live Event Log channels exactly as ``edr replay`` fires on the same EVTX files.

Every record of ../shared/evtx-attack-samples is rendered to the XML
EvtRender gives (the ``evtx`` package prints each record as XML;
:func:`~tests.sources.etw.standin_eventlog.windows_xml` takes away its
pretty-printing) and logged, from a thread of its own, into its channel of
a stand-in Event Log service (:mod:`tests.sources.etw.standin_eventlog`). The real
Windows graph reads them through the real ``eventlog_source`` (pull
subscriptions over the stand-in ``win32evtlog``/``win32event``, built by
its real builder), its normalizer and the full SigmaHQ rule set (its
compiled-rule cache in the temporary directory). The replay graph reads the
same files, as ``edr replay`` does, with the same rules. Both alert files
must hold the same alerts: per rule, the same records.

Records are told apart by (file, position in the file): a live channel
numbers its records itself, as Windows does when it logs them.
One recording has no channel (``etw_rpc_zerologon.evtx``: an ETW trace of
the RPC provider saved as EVTX; no subscription could deliver it): its
records are replayed and not logged, and its alerts are the only ones the
live run cannot have.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from edr.alerts.daily_file import DailyFile
from edr.config import EventLogConfig, load_config
from edr.enrich.actor import EnricherActor
from edr.runtime.supervisor import Supervisor
from edr.sources.etw.eventlog_xml import parse_event_xml
from edr.sources.etw.host import DeviceMap, NoProcessFacts, SidResolver, WindowsHost
from edr.wiring import builders
from edr.wiring.context import AgentContext, Shared
from edr.wiring.graphs import mode_graph
from tests.conftest import shared_path
from tests.sources.etw.standin_etw import SessionTable, make_module
from tests.sources.etw.standin_eventlog import EventLogService, windows_xml

pytestmark = [pytest.mark.shared, pytest.mark.slow]

Key = tuple[str, int]  # (file, record position in it)


def _alerts(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(directory.glob("alerts.json*"))
            for line in path.read_text().splitlines() if line.strip()]


def _feed(files: list[Path]) -> tuple[list[tuple[str, str, Key]], set[Key]]:
    """(channel, XML as EvtRender gives it, key) of every record with a channel; the keys of those without."""
    import evtx

    feed: list[tuple[str, str, Key]] = []
    no_channel: set[Key] = set()
    for path in files:
        for position, record in enumerate(evtx.PyEvtxParser(str(path)).records(), start=1):
            xml = windows_xml(record["data"])
            channel = parse_event_xml(xml).record["Event"]["System"].get("Channel")
            if channel:
                feed.append((channel, xml, (str(path), position)))
            else:
                no_channel.add((str(path), position))
    return feed, no_channel


async def test_sigmahq_fires_on_live_channels_as_on_replayed_evtx(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted(shared_path("evtx-attack-samples").rglob("*.evtx"))
    rules = shared_path("sigma")
    feed, no_channel = _feed(files)
    channels = sorted({channel for channel, _, _ in feed})
    assert len(feed) > 7800 and len(channels) >= 10 and {"Security", "System", "Application"} <= set(channels)

    cache = Path(tempfile.gettempdir()) / "edr-eventlog-sigma-cache"
    cache.mkdir(exist_ok=True)
    config = load_config(None, environ={}, overrides={
        "scanner.sigma_rules_path": str(rules), "sigma.cache_dir": str(cache), "scanner.yara_enabled": False,
        "ioc.enabled": False, "simple.enabled": False, "events.enabled": False,
        "agent.state_directory": str(tmp_path / "state"), "logging.directory": str(tmp_path / "logs"),
        # one alert per matching record on both sides (a live agent folds identical ones by default; replay not)
        "alerts.dedup_enabled": False,
    }).config
    shared = Shared(config)
    assert len(shared.detection.engines) == 1  # Sigma only: both runs load the rules once, here

    # --- live: the Windows graph reads the channels of the stand-in Event Log -------------------------------
    service = EventLogService(channels)
    evtlog, events = service.modules()
    monkeypatch.setitem(sys.modules, "win32evtlog", evtlog)
    monkeypatch.setitem(sys.modules, "win32event", events)
    monkeypatch.setitem(sys.modules, "etw", make_module(SessionTable(), list))  # ETW: a session that logs nothing
    host = WindowsHost(DeviceMap({}), SidResolver(lambda sid: None), NoProcessFacts())
    live_dir = tmp_path / "live"
    ctx = AgentContext.create(config, "windows", shared=shared, windows_host=host,
                              alert_file=DailyFile(live_dir, "alerts.json"))
    # the [eventlog] section names every channel of the samples
    section = EventLogConfig(channels=channels, bookmark_directory=str(tmp_path / "bookmarks"))
    eventlog_ctx = AgentContext.create(attrs.evolve(config, eventlog=section), "windows", shared=shared)
    source = builders.eventlog_source(eventlog_ctx, "eventlog")
    sup = Supervisor(mode_graph("windows"), ctx, actors={"eventlog": source})

    logged: dict[tuple[str, int], Key] = {}

    def windows_logs_them() -> None:
        service.wait_for_subscribers(len(channels))
        for channel, xml, key in feed:
            logged[(channel, service.log(channel, xml))] = key

    writer = threading.Thread(target=windows_logs_them, name="event-log-service")

    async def stop_when_all_were_sent(s: Supervisor) -> None:
        with trio.fail_after(600):
            while source.sent < len(feed):
                await trio.sleep(0.05)
        s.stop()

    writer.start()
    code = await sup.run(handle_signals=False, background=[stop_when_all_were_sent])
    writer.join()
    assert code == 0
    stats = sup.actor_statistics()
    assert stats["eventlog"]["sent"] == len(feed)
    assert sum(c["read"] for c in stats["eventlog"]["channels"].values()) == len(feed)
    assert all(c["rejected"] == 0 and c["subscribed"] is False for c in stats["eventlog"]["channels"].values())
    assert stats["eventlog_normalizer"] == {"decoded": len(feed), "rejected": 0}

    # --- replay: the same files through the replay graph, as `edr replay` runs them ------------------------
    replay_dir = tmp_path / "replay"
    rctx = AgentContext.create(config, "replay", shared=shared, files=[str(f) for f in files],
                               alert_file=DailyFile(replay_dir, "alerts.json"))
    # Replay also correlates each recording's processes (edr.enrich.replay), which the live Windows graph
    # leaves to the records themselves: compared here is what the channels deliver, so no enrichment on either
    passthrough = EnricherActor("enricher", None)
    assert await Supervisor(mode_graph("replay"), rctx, actors={"enricher": passthrough}).run(
        handle_signals=False) == 0

    replayed = Counter((a["rule.id"], (a["log.file.path"], a["edr.log.record"])) for a in _alerts(replay_dir))
    unreachable = Counter({k: n for k, n in replayed.items() if k[1] in no_channel})
    live_alerts = _alerts(live_dir)
    live = Counter((a["rule.id"], logged[(a["winlog.channel"], int(a["winlog.record_id"]))]) for a in live_alerts)
    assert sum(replayed.values()) > 1500
    assert live == replayed - unreachable
    # live alerts name the channel and record, never a file
    assert all("log.file.path" not in a and a["winlog.channel"] for a in live_alerts)
    assert {a["edr.logsource.service"] for a in live_alerts if "edr.logsource.service" in a} >= \
        {"security", "system", "sysmon", "windefend", "application"}
    print(f"\n{len(feed)} records logged in {len(channels)} channels, {sum(live.values())} alerts live = replayed; "
          f"{len(no_channel)} records without a channel replayed only ({sum(unreachable.values())} alerts)")
