"""NDJSON replayed through the whole pipeline (subprocess and in-process): exactly the expected ECS alerts."""

from __future__ import annotations

import errno
import functools
import io
import json
from pathlib import Path
from typing import Any

import orjson
import trio

from edr.config import load_config
from edr.runtime.supervisor import Supervisor
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph
from tests.cli_helpers import BASE_CONFIG, clean_env, file_event, net, proc, read_alerts, run_edr, write_ndjson

RULES = """
[[rules]]
id = "T-PROC-1"
name = "Shell from web server"
type = "process"
severity = "high"
parent_names = ["nginx"]
process_names = ["bash", "sh"]

[[rules]]
id = "T-NET-1"
name = "netcat to a suspicious port"
type = "network"
severity = "critical"
direction = "outbound"
ports = [4444]
process_names = ["nc"]

[[rules]]
id = "T-FILE-1"
name = "authorized_keys written"
type = "file"
severity = "high"
paths = ["/root/.ssh/", "/home/"]
patterns = ["authorized_keys"]
operations = ["file_create", "file_write"]

[[rules]]
id = "T-DISABLED"
name = "disabled rule"
enabled = false
type = "process"
process_names = ["ls"]
"""

#: (record, rule ids it must raise), one per line, in order.
CASES: list[tuple[dict[str, Any], list[str]]] = [
    (proc(), []),
    (proc({"Image": "/usr/bin/bash", "ParentImage": "/usr/sbin/nginx", "CommandLine": "bash -i"}), ["T-PROC-1"]),
    (file_event("/etc/systemd/system/evil.service"), ["BUILTIN-SYSTEMD-UNIT"]),
    (file_event("/etc/systemd/system/notes.txt"), []),
    (file_event("/etc/cron.d/backdoor"), ["BUILTIN-CRON"]),
    (file_event("/etc/crontab", "file_change"), ["BUILTIN-CRON"]),
    (net(443), []),
    (net(4444), ["BUILTIN-SUSPICIOUS-PORT", "T-NET-1"]),
    (net(1337, Image="/usr/bin/python3"), ["BUILTIN-SUSPICIOUS-PORT"]),
    (net(4444, initiated="false"), []),
    (file_event("/root/.ssh/authorized_keys"), ["T-FILE-1"]),
    (file_event("/root/.ssh/authorized_keys", "file_delete"), []),  # operation file_unlink not listed
    (file_event("/tmp/authorized_keys"), []),
    (proc({"Image": "/usr/bin/bash", "ParentImage": "/usr/sbin/apache2"}), []),
]

REQUIRED = ("@timestamp", "ecs.version", "event.kind", "event.category", "event.action", "event.module",
            "rule.id", "rule.name", "rule.severity", "rule.engine", "process.executable", "process.command_line",
            "process.pid", "process.parent.pid", "process.parent.executable", "process.parent.name", "user.name",
            "host.os.type", "log.file.path", "edr.log.line", "edr.replay")

#: Every ECS field src/edr/alerts/ecs.py may write for these Linux events (ECS 9.x), plus the two Rustinel keys.
ECS_FIELDS = frozenset({
    "@timestamp", "ecs.version", "message", "tags",
    "event.id", "event.kind", "event.category", "event.type", "event.action", "event.module", "event.dataset",
    "event.severity", "event.risk_score", "event.created", "event.sequence",
    "rule.id", "rule.name", "rule.ruleset", "rule.description",
    "host.name", "host.os.type", "agent.type", "agent.version",
    "process.executable", "process.name", "process.command_line", "process.working_directory", "process.pid",
    "process.entity_id", "process.pe.original_file_name",
    "process.parent.executable", "process.parent.name", "process.parent.command_line", "process.parent.pid",
    "process.parent.entity_id",
    "user.name", "user.domain", "user.id", "group.id", "container.id",
    "source.ip", "source.port", "source.domain", "destination.ip", "destination.port", "destination.domain",
    "network.transport", "network.direction", "dns.question.name", "dns.question.type", "dns.resolved_ip",
    "file.path", "file.name", "file.directory", "registry.path", "dll.path", "log.file.path",
})
RUSTINEL_KEYS = frozenset({"rule.severity", "rule.engine"})
HASH_PREFIXES = ("process.hash.", "file.hash.")


def expected_pairs(first_line: int = 1) -> list[tuple[int, str]]:
    return sorted((i, rid) for i, (_, rids) in enumerate(CASES, first_line) for rid in rids)


def setup(workdir: Path, extra_rules: str = "") -> Path:
    rules = workdir / "rules.toml"
    rules.write_text(RULES + extra_rules)
    (workdir / "edr.toml").write_text(BASE_CONFIG.replace('rules_path = "rules/edr-rules.toml"',
                                                          f'rules_path = "{rules}"'))
    return write_ndjson(workdir / "events.ndjson", [r for r, _ in CASES])


def check_alert(a: dict[str, Any], events_path: Path) -> None:
    for key in REQUIRED:
        assert key in a, f"{a['rule.id']}: missing {key}"
    for key in a:
        assert key in ECS_FIELDS or key in RUSTINEL_KEYS or key.startswith("edr.") or key.startswith(HASH_PREFIXES), key
    assert a["ecs.version"] == "9.4.0"
    assert a["event.kind"] == "alert" and a["event.module"] == "edr"
    assert a["rule.engine"] == "simple"
    assert a["log.file.path"] == str(events_path)
    assert a["@timestamp"].endswith("Z")
    assert isinstance(a["process.pid"], int) and isinstance(a["event.category"], list)
    # a replayed alert describes the recorded host, never this one: these records name no computer
    assert a["host.os.type"] == "linux" and a["edr.replay"] is True and "host.name" not in a


def test_replay_subprocess_stdout_and_file(workdir: Path) -> None:
    events = setup(workdir)
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--stdout", "--no-progress", str(events)],
                cwd=workdir)
    assert r.returncode == 0, r.stderr
    stdout_alerts = [orjson.loads(x) for x in r.stdout.splitlines()]
    file_alerts = read_alerts(workdir / "logs")
    assert stdout_alerts == file_alerts
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in file_alerts) == expected_pairs()
    for a in file_alerts:
        check_alert(a, events)
    severities = {a["rule.id"]: a["rule.severity"] for a in file_alerts}
    assert severities == {"T-PROC-1": "high", "BUILTIN-SYSTEMD-UNIT": "high", "BUILTIN-CRON": "high",
                          "BUILTIN-SUSPICIOUS-PORT": "medium", "T-NET-1": "critical", "T-FILE-1": "high"}
    by_line = {a["edr.log.line"]: a for a in file_alerts}
    shell = by_line[2]
    assert shell["process.executable"] == "/usr/bin/bash" and shell["process.parent.name"] == "nginx"
    assert shell["process.command_line"] == "bash -i" and shell["user.name"] == "alice"
    assert shell["event.category"] == ["process"] and shell["event.action"] == "process_creation"
    port = by_line[8]
    assert port["destination.port"] == 4444 and port["network.direction"] == "egress"
    assert by_line[3]["file.path"] == "/etc/systemd/system/evil.service"
    assert f"{len(CASES)} records, {len(CASES)} events, 0 rejected, {len(file_alerts)} alerts" in r.stderr


def test_replay_in_process(workdir: Path) -> None:
    events = setup(workdir)
    config = load_config("edr.toml", environ={}, overrides={"alerts.directory": str(workdir / "inproc")}).config
    ctx = AgentContext.create(config, "replay", files=[str(events)])
    sup = Supervisor(mode_graph("replay"), ctx)
    code = trio.run(functools.partial(sup.run, handle_signals=False))
    assert code == 0
    alerts = read_alerts(workdir / "inproc")
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in alerts) == expected_pairs()
    for a in alerts:
        check_alert(a, events)
    assert sup.actors["detect"].statistics()["events"] == len(CASES)
    assert all(s.dropped == 0 and s.depth == 0 and s.closed for s in sup.statistics().values())


def test_replay_lets_one_batch_into_the_graph_at_a_time(workdir: Path) -> None:
    """Each batch goes through every stage before the next enters (edr.runtime.flight), and nothing is lost."""
    rounds, batch = 40, 16
    setup(workdir)
    events = write_ndjson(workdir / "many.ndjson", [r for _ in range(rounds) for r, _ in CASES])
    config = load_config("edr.toml", environ={}, overrides={
        "alerts.directory": str(workdir / "paced"), "pipeline.batch_size": batch}).config
    ctx = AgentContext.create(config, "replay", files=[str(events)])
    sup = Supervisor(mode_graph("replay"), ctx)
    assert trio.run(functools.partial(sup.run, handle_signals=False)) == 0
    alerts = read_alerts(workdir / "paced")
    want = sorted((line + n * len(CASES), rid) for n in range(rounds) for line, rid in expected_pairs())
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in alerts) == want
    stats = sup.statistics()
    event_edges = [s for name, s in stats.items() if not name.endswith(("alerts.in", "syslog.in", "webhook.in"))]
    assert len(event_edges) == 6
    # with the graph's capacities of 8 batches, a source that did not wait would queue up to 8
    assert all(s.high_water <= batch for s in event_edges), {s.name: s.high_water for s in event_edges}
    assert stats["source.out->normalizer.in"].high_water == batch
    assert sup.flight.count == 0


def test_lines_split_across_reads_are_joined(workdir: Path, monkeypatch: Any) -> None:
    """Reads that end mid-line (and lines longer than a read) still give every line, numbered right."""
    import edr.sources.replay.actor as replay_actor

    events = setup(workdir)
    size = events.stat().st_size
    for chunk in (7, 100, size - 1, size, size + 1):
        monkeypatch.setattr(replay_actor, "CHUNK", chunk)
        out = workdir / f"chunk-{chunk}"
        config = load_config("edr.toml", environ={}, overrides={"alerts.directory": str(out)}).config
        ctx = AgentContext.create(config, "replay", files=[str(events)])
        sup = Supervisor(mode_graph("replay"), ctx)
        assert trio.run(functools.partial(sup.run, handle_signals=False)) == 0
        assert sup.actors["normalizer"].statistics() == {"decoded": len(CASES), "rejected": 0, "errors": 0}, chunk
        assert sorted((a["edr.log.line"], a["rule.id"]) for a in read_alerts(out)) == expected_pairs(), chunk


def test_a_read_error_mid_file_keeps_what_was_read_and_reports_the_file(workdir: Path, monkeypatch: Any,
                                                                         caplog: Any) -> None:
    import edr.sources.replay.actor as replay_actor

    events = setup(workdir)
    data = events.read_bytes()
    first = data.index(b"\n", len(data) // 2) + 1  # whole lines up to the middle, then EIO

    class FailingFile(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() >= first:
                raise OSError(errno.EIO, "Input/output error")
            return super().read(min(size if size is not None and size >= 0 else first, first - self.tell()))

    monkeypatch.setattr(replay_actor, "open_recording", lambda path: (FailingFile(data), "ndjson"))
    config = load_config("edr.toml", environ={}, overrides={"alerts.directory": str(workdir / "eio")}).config
    ctx = AgentContext.create(config, "replay", files=[str(events)])
    sup = Supervisor(mode_graph("replay"), ctx)
    assert trio.run(functools.partial(sup.run, handle_signals=False)) == 0
    read = data[:first].count(b"\n")
    assert 0 < read < len(CASES)
    assert sup.actors["normalizer"].statistics()["decoded"] == read
    assert sup.actors["source"].failed_files == [str(events)]
    assert f"replay: {events}: cannot read: [Errno 5] Input/output error" in caplog.text
    want = [(line, rid) for line, rid in expected_pairs() if line <= read]
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in read_alerts(workdir / "eio")) == want


def test_builtin_switched_off_in_rules_file(workdir: Path) -> None:
    events = setup(workdir, '\n[[rules]]\nid = "BUILTIN-CRON"\nenabled = false\n')
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(events)], cwd=workdir)
    assert r.returncode == 0, r.stderr
    got = sorted((a["edr.log.line"], a["rule.id"]) for a in read_alerts(workdir / "logs"))
    assert got == [p for p in expected_pairs() if p[1] != "BUILTIN-CRON"]


def test_builtins_switched_off_by_config(workdir: Path) -> None:
    events = setup(workdir)
    env_off = {"EDR__SIMPLE__BUILTIN_ENABLED": "false"}

    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(events)],
                cwd=workdir, env=clean_env(**env_off))
    assert r.returncode == 0, r.stderr
    got = sorted((a["edr.log.line"], a["rule.id"]) for a in read_alerts(workdir / "logs"))
    assert got == [p for p in expected_pairs() if not p[1].startswith("BUILTIN-")]


def test_bad_lines_are_reported_and_skipped(workdir: Path) -> None:
    setup(workdir)
    bad: list[Any] = [
        b"this is not json",
        b'{"category": 5, "product": "linux", "fields": {}}',
        b"[1, 2, 3]",
        b'{"category": "process_creation", "product": "linux", "fields": "oops"}',
        b"",  # blank lines are not errors
        b'{"category": "network_connection", "product": "linux", "fields": {}, "ts": "yesterday"}',
        b'{"truncated": ',
    ]
    records = bad + [r for r, _ in CASES]
    events = write_ndjson(workdir / "mixed.ndjson", records)
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(events)], cwd=workdir)
    assert r.returncode == 0, r.stderr
    got = sorted((a["edr.log.line"], a["rule.id"]) for a in read_alerts(workdir / "logs"))
    assert got == expected_pairs(first_line=len(bad) + 1)  # replay continued past every bad line
    assert "6 rejected" in r.stderr
    log = "".join(f.read_text() for f in (workdir / "logs").glob("edr.log.*"))
    for lineno, reason in [(1, "invalid JSON"), (2, "'category'"), (3, "not a JSON object"), (4, "'fields'"),
                           (6, "'ts'"), (7, "invalid JSON")]:
        assert f"replay: {events}:{lineno}: skipped: " in log
        line = next(x for x in log.splitlines() if f"{events}:{lineno}: skipped" in x)
        assert reason in line, line
    assert f"{events}:5:" not in log


def test_event_stream_records_what_replay_reads(workdir: Path) -> None:
    """[events]: every event recorded in the replay format; replaying the recording gives the same alerts."""
    events = setup(workdir)
    # a replay's event stream goes with its --output, like its alerts
    env = clean_env(EDR__EVENTS__ENABLED="true")
    r = run_edr(["replay", "--config", "edr.toml", "--output", "rec", "--no-progress", str(events)], cwd=workdir,
                env=env)
    assert r.returncode == 0, r.stderr
    recorded = sorted((workdir / "rec").glob("events.json.*"))
    assert len(recorded) == 1
    lines = recorded[0].read_bytes().splitlines()
    assert len(lines) == len(CASES)
    # the router's two lanes may reorder lifecycle and bulk events; the set is what counts
    assert sorted(orjson.loads(x)["fields"]["Image"] for x in lines) == sorted(c["fields"]["Image"] for c, _ in CASES)
    first = read_alerts(workdir / "rec")
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in first) == expected_pairs()

    r = run_edr(["replay", "--config", "edr.toml", "--output", "again", "--no-progress", str(recorded[0])],
                cwd=workdir)
    assert r.returncode == 0, r.stderr
    again = read_alerts(workdir / "again")
    assert len(again) == len(first)

    def same(alerts: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
        # where the event was read from differs, and with it each line's id and chain link (both cover the
        # whole line, and the order of lines may differ); everything about the event must not
        where = ("log.", "edr.log", "event.created", "edr.chain.", "event.id")
        return sorted(sorted((k, repr(v)) for k, v in a.items() if not k.startswith(where)) for a in alerts)

    assert same(again) == same(first)


def test_event_stream_category_filter(workdir: Path) -> None:
    events = setup(workdir)
    env = clean_env(EDR__EVENTS__ENABLED="true", EDR__EVENTS__CATEGORIES='["network_connection"]')
    r = run_edr(["replay", "--config", "edr.toml", "--output", "rec", "--no-progress", str(events)], cwd=workdir,
                env=env)
    assert r.returncode == 0, r.stderr
    lines = next((workdir / "rec").glob("events.json.*")).read_bytes().splitlines()
    want = [c for c, _ in CASES if c["category"] == "network_connection"]
    assert want and len(lines) == len(want)
    assert {orjson.loads(x)["category"] for x in lines} == {"network_connection"}

    bad = clean_env(EDR__EVENTS__CATEGORIES='["process_creaton"]')
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(events)],
                cwd=workdir, env=bad)
    assert r.returncode != 0
    assert "events.categories" in r.stderr and "EDR__EVENTS__CATEGORIES" in r.stderr
    assert "process_creaton" in r.stderr


def test_replay_of_a_directory_walks_it_for_recorded_logs(workdir: Path) -> None:
    events = setup(workdir)
    tree = workdir / "logs-archive" / "host1"
    tree.mkdir(parents=True)
    (tree / "events.json.2026-11-01").write_bytes(events.read_bytes())
    (tree / "notes.txt").write_text("not a log\n")
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs",
                "--no-progress", str(workdir / "logs-archive"), "nope"],
                cwd=workdir)
    assert r.returncode == 1  # one argument named nothing
    assert "nope: no such file or directory" in r.stderr
    assert "replay: 1 file(s)" in r.stderr
    alerts = read_alerts(workdir / "logs")
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in alerts) == expected_pairs()
    assert {a["log.file.path"] for a in alerts} == {str(tree / "events.json.2026-11-01")}


def test_values_json_writers_refuse_neither_stop_the_agent(workdir: Path) -> None:
    # A replayed record may hold an integer beyond 64 bits, which orjson will not write; the
    # alert for it (and the recorded event) must still be written, and the replay end with 0.
    setup(workdir)
    huge = file_event("/etc/cron.d/backdoor")
    huge["fields"]["Inode"] = 10**30
    events = write_ndjson(workdir / "huge.ndjson", [json.dumps(huge).encode(), file_event("/etc/cron.d/after")])
    env = clean_env(EDR__EVENTS__ENABLED="true")
    r = run_edr(["replay", "--config", "edr.toml", "--output", "rec", "--no-progress", str(events)], cwd=workdir,
                env=env)
    assert r.returncode == 0, r.stderr
    alerts = read_alerts(workdir / "rec")
    assert [(a["edr.log.line"], a["rule.id"]) for a in alerts] == [(1, "BUILTIN-CRON"), (2, "BUILTIN-CRON")]
    assert alerts[0]["edr.event"]["Inode"] == str(10**30)
    recorded = [orjson.loads(x) for f in sorted((workdir / "rec").glob("events.json.*"))
                for x in f.read_bytes().splitlines()]
    assert [e["fields"].get("Inode") for e in recorded] == [str(10**30), None]
