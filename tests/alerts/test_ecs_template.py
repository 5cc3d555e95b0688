"""`edr ecs template`'s index template (issue #15, point 4): every key edr emits mapped, with the right type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.alerts import ecs
from edr.alerts.alert_lines import AlertLines
from edr.alerts.chain import AlertChain
from edr.alerts.dedup import AlertDeduplicator
from edr.alerts.ecs import HostInfo
from edr.alerts.ecs_check import EcsFields, check_document, field_spec, load_ecs_fields
from edr.alerts.ecs_schema import ALL_FIELDS, EDR_FIELDS, FLATTENED
from edr.alerts.ecs_template import coverage_problems, index_template, mapping_of, mappings
from edr.detect.alert import Alert
from edr.detect.yara_rules import YaraHit
from edr.event import Event
from edr.metrics.actor import loss_alert
from edr.metrics.coverage import LossMonitor
from edr.response.breaker_alert import breaker_alert
from edr.response.budget import Trip
from edr.scan.alerts import file_alerts, memory_alerts
from edr.scan.file_scan import FileVerdict, MemoryVerdict
from tests.alerts.conftest import clean_env
from tests.cli_helpers import file_event, net, proc, write_ndjson
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def full() -> EcsFields:
    return load_ecs_fields(shared_path("ecs", "ecs-9.4.0-fields.json"))


def covered(docs: list[dict[str, Any]], full: EcsFields) -> set[str]:
    """The keys of ``docs``, each checked against all of ECS and mapped by the template with its type."""
    template = index_template()
    keys: set[str] = set()
    for doc in docs:
        assert check_document(doc, full) == [], doc.get("rule.name")
        assert coverage_problems(doc, template, full) == [], doc.get("rule.name")
        keys.update(doc)
    return keys


def test_every_key_of_the_schema_is_mapped_with_its_type(full: EcsFields) -> None:
    template = index_template()
    json.dumps(template)  # what `edr ecs template` prints
    assert template["index_patterns"] == ["edr-alerts-*"] and template["priority"] == 200
    assert template["_meta"]["ecs_version"] == full.version
    assert template["template"]["mappings"]["dynamic"] == "false"
    for key, spec in ALL_FIELDS.items():
        at, mapping = mapping_of(template, key) or ("", {})
        assert (at, mapping.get("type")) == (key, spec.type), key
        if key in full.fields:
            assert full.fields[key].type == spec.type, key
    assert mapping_of(template, "process.command_line") == ("process.command_line", {"type": "wildcard"})
    assert mapping_of(template, "rule.id") == ("rule.id", {"type": "keyword", "ignore_above": 1024})
    assert mapping_of(template, "message") == ("message", {"type": "match_only_text"})
    enrichments = template["template"]["mappings"]["properties"]["threat"]["properties"]["enrichments"]
    assert enrichments["type"] == "nested" == full.fields["threat.enrichments"].type
    for name in FLATTENED:
        assert mapping_of(template, f"{name}.AnyName") == (name, {"type": "flattened", "ignore_above": 8191})
    assert {"edr.event", "edr.correlation.group", "edr.yara.meta", "edr.match", "edr.unmapped"} == FLATTENED
    assert mapping_of(template, "edr.log.nothing") is None and mapping_of(template, "process") is None
    assert index_template(["a-*", "b-*"], dynamic="strict", priority=5)["template"]["mappings"]["dynamic"] == "strict"


def test_a_template_cannot_map_a_key_as_leaf_and_object() -> None:
    with pytest.raises(ValueError, match=r"^a\.b\.c: a\.b is a keyword leaf, not an object$"):
        mappings({"a.b.c": ALL_FIELDS["rule.id"], "a.b": ALL_FIELDS["rule.id"]})
    with pytest.raises(ValueError, match="dynamic must be"):
        mappings(dynamic="off")
    with pytest.raises(ValueError, match="index_patterns"):
        index_template([])


def test_coverage_names_what_the_template_misses_or_mistypes(full: EcsFields) -> None:
    template = index_template()
    assert coverage_problems({"edr.event": {"A": "b"}, "rule.id": "x"}, template, full) == []
    props = template["template"]["mappings"]["properties"]
    props["rule"]["properties"]["id"] = {"type": "long"}
    assert [str(p) for p in coverage_problems({"rule.id": "x", "log.record": 1}, template, full)] == [
        "rule.id: the index template maps rule.id as long, its ECS type is keyword",
        "log.record: the index template does not map it",
    ]


def test_real_windows_alerts_are_covered(replay_alert_lines: list[bytes], full: EcsFields) -> None:
    keys = covered([orjson.loads(line) for line in replay_alert_lines], full)
    assert {"winlog.record_id", "edr.log.record", "process.pe.imphash", "edr.event", "rule.reference"} <= keys


def test_real_linux_alerts_of_every_engine_are_covered(tmp_path: Path, full: EcsFields,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay with simple rules, Sigma (a rule and a correlation), IOCs (IP, domain, path), then dedup and
    the chain over those alerts, YARA alerts and odd ones: every key mapped, with its type, every edr.* key seen."""
    ioc = tmp_path / "ioc"
    ioc.mkdir()
    (ioc / "ips.txt").write_text("203.0.113.9 ; test range\n")
    (ioc / "domains.txt").write_text("*.evil.example\n")
    (ioc / "paths_regex.txt").write_text("^/tmp/\\.hidden/.*\n")
    (ioc / "hashes.txt").write_text("")
    sigma = tmp_path / "sigma"
    sigma.mkdir()
    (sigma / "rules.yml").write_text(SIGMA_RULES)
    (tmp_path / "edr.toml").write_text(
        f'[scanner]\nsigma_rules_path = "{sigma}"\n[sigma]\ncache_dir = ""\n'
        f'[ioc]\nips_path = "{ioc / "ips.txt"}"\ndomains_path = "{ioc / "domains.txt"}"\n'
        f'paths_regex_path = "{ioc / "paths_regex.txt"}"\nhashes_path = "{ioc / "hashes.txt"}"\n'
        f'[alerts]\ndirectory = "{tmp_path / "logs"}"\nmatch_debug = "full"\n'
        f'[logging]\ndirectory = "{tmp_path / "logs"}"\n')
    whoami = [proc({"Image": "/usr/bin/whoami", "CommandLine": "whoami", "Uid": 0, "Gid": 0}, seq=i,
                   ts=1_763_000_000.0 + i) for i in range(3)]
    dns = {"ts": 1_763_000_004.0, "seq": 9, "category": "dns_query", "product": "linux",
           "fields": {"ProcessId": 5, "Image": "/usr/bin/curl", "QueryName": "c2.evil.example", "QueryType": "A",
                      "QueryResults": "::ffff:203.0.113.9;", "QueryStatus": "0", "Uid": 1000}}
    events = write_ndjson(tmp_path / "events.ndjson", [
        *whoami, net(4444), dns, file_event("/tmp/.hidden/x", Operation="file_create", Uid=0),
        file_event("/etc/cron.d/evil", Operation="file_write"),
        {**net(4444, Image="/usr/bin/ncat"), "count": 5},
    ])
    r = subprocess.run([sys.executable, "-m", "edr", "replay", "--config", str(tmp_path / "edr.toml"),
                        "--no-progress", "--output", str(tmp_path / "logs"), str(events)], cwd=tmp_path,
                       env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    docs = [orjson.loads(line) for f in sorted((tmp_path / "logs").glob("alerts.json.*"))
            for line in f.read_bytes().splitlines()]
    engines = {d["rule.engine"] for d in docs}
    assert engines == {"simple", "sigma", "ioc"}, engines
    seen = keys = covered(docs, full)
    assert {"edr.correlation.group", "edr.correlation.type", "threat.indicator.ip", "threat.enrichments.matched.atomic",
            "edr.match", "user.id", "dns.resolved_ip", "edr.file.operation"} <= keys

    # the writer's core over the same alerts: dedup rollups, then the hash chain
    lines = AlertLines(HostInfo("h", "linux"), AlertChain(), AlertDeduplicator(60.0))
    alerts = [Alert(d["rule.id"], d["rule.name"], d["rule.severity"], d["rule.engine"],
                    Event("process_creation", "linux", {"Image": "/usr/bin/whoami", "ProcessId": 7},
                          1_763_000_000.0 + i)) for i, d in enumerate(docs * 3)]
    sealed = lines.accept(alerts) + lines.finish()
    seen |= (keys := covered([orjson.loads(line) for line in sealed], full))
    assert {"edr.alert.count", "edr.alert.first_seen", "edr.alert.last_seen", "edr.chain.seq", "edr.chain.hash",
            "edr.chain.start", "edr.chain.alg"} <= keys

    hit = YaraHit("Marked", "marker.yar", ("demo",), {"author": "edr tests", "score": 9, "ok": True},
                  ({"identifier": "$a", "offset": 0, "data": "EDR"},))
    event = Event("process_creation", "linux", {"Image": "/tmp/m", "ProcessId": 9}, 1_763_000_009.0)
    yara = [*file_alerts(FileVerdict("/tmp/m", "scanned", hits=(hit,), hashes={"sha256": "ab" * 32}), event, None,
                         debug=True),
            *memory_alerts(MemoryVerdict(9, "scanned", hits=(hit,)), event, debug=True)]
    docs = [orjson.loads(line) for line in lines.accept(yara) + lines.finish()]
    seen |= (keys := covered(docs, full))
    assert {"edr.yara.rule", "edr.yara.meta", "edr.yara.tags", "edr.scan.object", "file.hash.sha256"} <= keys
    assert docs[0]["edr.yara.meta"] == {"author": "edr tests", "score": "9", "ok": "true"}

    # the odd ones: times no date holds, keys the schema does not know, a mapping that fails
    odd = Event("winlog", "windows", {"EventID": 1}, float("nan"), service="security",
                origin={"log.file.path": "a.evtx", "log.record": 1})
    monkeypatch.setattr(ecs, "event_fields_to_ecs", lambda *_: 1 / 0)
    broken = ecs.alert_document(Alert("R-9", "broken", "low", "simple", odd), HostInfo("h", "linux"))
    monkeypatch.undo()
    docs = [broken] + [orjson.loads(line) for line in lines.accept([
        Alert("R-9", "odd", "low", "simple", odd, timestamp=1e300, ecs={"no.such.key": 1}),
        Alert("R-9", "renamed", "low", "simple", Event("file_rename", "linux", {
            "SourceFilename": "/tmp/a", "TargetFilename": "/tmp/b"}, 1_763_000_010.0)),
        Alert("R-9", "killed", "low", "simple", Event("process_termination", "linux", {
            "ProcessId": 11, "ExitCode": 137, "ExitSignal": "SIGKILL"}, 1_763_000_011.0)),
        breaker_alert(Trip("R-1", "whoami", "rule", 10, 10, 12, 4242, "/tmp/evil", 900.0, 1), prevention=True,
                      when=1_763_000_012.0)]) + lines.finish()]
    seen |= covered(docs, full)
    assert docs[0]["edr.error"] == "ZeroDivisionError: division by zero"
    # telemetry-loss alerts (the coverage actor's): a first report of each kind, then one with a window
    monitor = LossMonitor()
    loss = monitor.observe(0.0, {"file": 1}, {"a.out->b.in": 2}) + monitor.observe(40.0, {"file": 5}, {})
    seen |= covered([orjson.loads(line) for line in lines.accept([loss_alert(r, 40.0) for r in loss])], full)
    assert EDR_FIELDS.keys() - seen == set()


def test_field_spec_names_the_kind(full: EcsFields) -> None:
    assert field_spec("winlog.record_id", full) == (ALL_FIELDS["winlog.record_id"], "Winlogbeat")
    assert field_spec("rule.severity", full) == (ALL_FIELDS["rule.severity"], "compatibility")
    assert field_spec("edr.event", full) == (ALL_FIELDS["edr.event"], "edr")
    assert field_spec("labels", full) is not None and field_spec("log.record", full) is None


SIGMA_RULES = """\
title: Whoami
id: 1b1d8e0c-54a1-4c5f-9f43-000000000001
name: whoami_exec
status: test
level: medium
author: edr tests
references:
    - https://example.org/a
    - https://example.org/b
tags:
    - attack.discovery
    - attack.t1033
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        Image|endswith: /whoami
    condition: selection
---
title: Many whoami
id: 1b1d8e0c-54a1-4c5f-9f43-000000000002
status: test
level: high
correlation:
    type: event_count
    rules:
        - whoami_exec
    group-by:
        - User
        - Image
    timespan: 1m
    generate: true
    condition:
        gte: 3
"""
