"""The machine check of alert keys against ECS's field list (names, types, array normalization)."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.alerts import ecs_fields
from edr.alerts.ecs import HostInfo, to_ecs
from edr.alerts.ecs_check import VENDORED, alert_files, check_alert_files, check_document, load_ecs_fields
from edr.alerts.ecs_schema import (
    COMPAT_FIELDS,
    EDR_FIELDS,
    EMITTED_ECS_FIELDS,
    WINLOGBEAT_FIELDS,
    load_ecs_field_list,
    main,
)
from edr.detect.alert import Alert
from edr.event import Event
from tests.conftest import ecs_audit, shared_path

FULL_LIST = ("ecs", "ecs-9.4.0-fields.json")


def good() -> dict[str, Any]:
    event = Event("process_creation", "linux", {"Image": "/usr/bin/id", "Uid": 0, "ProcessId": 7}, 1_763_000_000.0)
    return to_ecs(Alert("R-1", "rule", "high", "sigma", event, ecs={"rule.reference": ["https://x"]}),
                  HostInfo("h", "linux"), created=1_764_000_000.0)


#: An alert as edr wrote it before ECS 9 (issue #15): each line below is one problem the check must name.
SEED_ALERT = {
    "@timestamp": "2019-04-27T15:57:53.368Z", "ecs.version": "8.17.0", "event.kind": "alert",
    "event.created": "2019-04-27T15:57:53.368Z", "rule.id": "R-1", "rule.severity": "high", "rule.engine": "sigma",
    "log.file.path": "Security.evtx", "log.record": 3, "winlog.channel": "Security", "winlog.event_id": 4688,
    "winlog.record_id": 77, "winlog.computer_name": "IEWIN7", "process.hash.imphash": "DD", "rule.reference": ["https://x"],
    "user.id": 0, "group.id": 0, "edr.event.Type ID": "0", "edr.event.SourceIsIpv6": True,
    "edr.event.Data": ["a"], "event.count": 3,
}


def messages(doc: dict[str, Any], **kw: Any) -> dict[str, str]:
    """The first problem of each key."""
    out: dict[str, str] = {}
    for p in check_document(doc, **kw):
        out.setdefault(p.key, p.message)
    return out


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the session's basetemp: the alert files planted there with bad keys must not
    fail the session's own ECS check (tests/conftest.py), which reads every alert file under basetemp."""
    with tempfile.TemporaryDirectory(prefix="edr-ecs-check-") as root:
        yield Path(root)


def test_a_valid_alert_has_no_problem() -> None:
    assert check_document(good()) == []
    assert check_document(good(), load_ecs_fields(shared_path(*FULL_LIST))) == []


def test_every_problem_issue_15_found_is_named() -> None:
    found = messages(SEED_ALERT, ecs=load_ecs_fields(shared_path(*FULL_LIST)))
    assert found.keys() == {"ecs.version", "log.record", "winlog.event_id", "winlog.record_id",
                            "process.hash.imphash", "rule.reference", "user.id", "group.id", "edr.event.Type ID",
                            "edr.event.SourceIsIpv6", "edr.event.Data", "event.count"}
    assert "is '8.17.0', but the field list checked against is ECS 9.4.0" in found["ecs.version"]
    assert "is not an ECS 9.4.0 field" in found["process.hash.imphash"]
    assert found["rule.reference"] == "is a list; ECS has it as one keyword (normalize: [])"
    assert found["user.id"] == "is 0 (JSON number), which is no ECS keyword value"
    assert found["winlog.event_id"] == "is 4688 (JSON number), which is no Winlogbeat keyword value"
    assert "its content belongs in that object" in found["edr.event.Type ID"]


def test_types_arrays_and_the_raw_rule() -> None:
    doc = good() | {
        "event.category": "process",  # ECS normalizes it to an array
        "tags": ["a", 1],
        "process.pid": 2**63,  # beyond a long
        "event.risk_score": float("inf"),
        "source.ip": "300.1.1.1", "destination.ip": "fe80::1%eth0",
        "event.created": "yesterday",
        "threat.enrichments.matched.atomic": {"a": 1},
        "edr.event": {"Threat Name": "x", "Ok": True, "Fine": ["a"], "Deep": {"Bad Name": 1}},
        "edr.match": "not an object",
        "edr.newthing": "x",
        "edr.log.line": "3",
    }
    found = messages(doc)
    assert found == {
        "event.category": "ECS normalizes it to an array; it is a JSON string",
        "tags": "[1] is 1 (JSON number), which is no ECS keyword value",
        "process.pid": f"is {2**63} (JSON number), which is no ECS long value",
        "event.risk_score": "is inf (JSON number), which is no ECS float value",
        "source.ip": "is '300.1.1.1' (JSON string), which is no ECS ip value",
        "destination.ip": "is 'fe80::1%eth0' (JSON string), which is no ECS ip value",
        "event.created": "is 'yesterday' (JSON string), which is no ECS date value",
        "threat.enrichments.matched.atomic": "is {'a': 1} (JSON object), which is no ECS keyword value",
        "edr.event": "member 'Threat Name': the name breaks the raw-field rule (letters, digits, _ and - only)",
        "edr.match": "is 'not an object' (JSON string), which is no edr flattened value",
        "edr.newthing": "is an edr.* key edr's schema does not declare (edr.alerts.ecs_schema.EDR_FIELDS)",
        "edr.log.line": "is '3' (JSON string), which is no edr long value",
    }
    every = [str(p) for p in check_document(doc)]
    assert "edr.event: member 'Ok': True is a JSON boolean; the raw-field rule writes a string or a list of strings" \
        in every
    assert "edr.event: member 'Deep.Bad Name': the name breaks the raw-field rule (letters, digits, _ and - only)" \
        in every
    assert check_document(["not", "a", "dict"]) == [("(document)", "is a JSON list, not an object")]


def test_kinds_do_not_overlap_ecs() -> None:
    full = load_ecs_fields(shared_path(*FULL_LIST))
    for table in (WINLOGBEAT_FIELDS, COMPAT_FIELDS, EDR_FIELDS):
        assert not set(table) & set(full.fields)
    assert all(k.startswith("winlog.") for k in WINLOGBEAT_FIELDS)
    assert all(k.startswith("edr.") and " " not in k for k in EDR_FIELDS)


def test_the_vendored_field_list_is_generated_from_ecs_and_current() -> None:
    path = shared_path(*FULL_LIST)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([str(path)]) == 0
    assert out.getvalue() == Path(ecs_fields.__file__).read_text(), \
        "stale: python -m edr.alerts.ecs_schema ../shared/ecs/ecs-9.4.0-fields.json > src/edr/alerts/ecs_fields.py"
    version, full = load_ecs_field_list(path.read_bytes())
    assert version == VENDORED.version
    for name in EMITTED_ECS_FIELDS:
        assert VENDORED.fields[name] == full[name], name


def test_a_bad_field_list_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "fields.json"
    bad.write_text('{"ecs_version": "9.4.0", "fields": {"a": {"normalize": []}}}')
    with pytest.raises(ValueError, match=f"{bad}: field 'a': no type"):
        load_ecs_fields(bad)
    assert main([str(bad)]) == 1


def test_alert_files_are_checked_line_by_line(outside: Path) -> None:
    logs = outside / "logs"
    logs.mkdir()
    lines = [orjson.dumps(good()), b'{"n": "not an alert"}', b"garbage", orjson.dumps(SEED_ALERT), b""]
    (logs / "alerts.json.2026-03-01").write_bytes(b"\n".join(lines))
    (logs / "alerts.json.2026-03-02").symlink_to(logs / "alerts.json.2026-03-01")  # not followed
    (logs / "other.json.2026-03-01").write_bytes(orjson.dumps(SEED_ALERT))  # not an alert file
    files = alert_files(outside)
    assert files == [logs / "alerts.json.2026-03-01"]
    report = check_alert_files(files)
    assert (report.files, report.alerts, report.replayed, report.skipped_lines) == (1, 2, 1, 2)
    assert {(line, p.key) for _path, line, p in report.problems} >= {(4, "log.record"), (4, "user.id")}
    assert all(line == 4 for _path, line, _p in report.problems)
    assert report.summary().startswith("ECS check: 2 alert(s) in 1 alert file(s) (1 replayed, 1 live or written "
                                       "directly), ")
    assert f"{files[0]}:4: process.hash.imphash: is not an ECS" in report.summary()


def test_the_session_check_catches_a_planted_bad_key(outside: Path) -> None:
    """The audit the test session runs at its end (tests/conftest.py) names a planted key, and that the
    index template does not map it."""
    logs = outside / "logs"
    logs.mkdir()
    planted = good() | {"process.hash.imphash": "dd"}
    (logs / "alerts.json.2026-03-01").write_bytes(orjson.dumps(good()) + b"\n" + orjson.dumps(planted) + b"\n")
    report = ecs_audit(outside)
    assert report.alerts == 2
    assert [(line, str(p)) for _path, line, p in report.problems] == [
        (2, "process.hash.imphash: is not an ECS 9.4.0 field, a Winlogbeat winlog.* field edr writes, nor a "
            "compatibility key (rule.severity, rule.engine)"),
        (2, "process.hash.imphash: the index template does not map it"),
    ]


PLANTED_TEST = '''
from edr.alerts.ecs import HostInfo, alert_line
from edr.detect.alert import Alert
from edr.event import Event


def test_writes_an_alert(tmp_path):
    event = Event("process_creation", "linux", {"Image": "/usr/bin/id"}, 1_763_000_000.0)
    alert = Alert("R-1", "rule", "high", "sigma", event, ecs=EXTRA)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "alerts.json.2026-03-01").write_bytes(alert_line(alert, HostInfo("h", "linux")))
'''


def test_a_session_ends_with_the_check_of_its_alerts(outside: Path) -> None:
    """A pytest session with this suite's conftest checks the alerts its tests wrote, and says how many.
    The alert carries a key the schema does not know: the writer keeps the document valid."""
    (outside / "test_planted.py").write_text(f"EXTRA = {{'process.hash.imphash': 'dd'}}\n{PLANTED_TEST}")
    r = run_session(outside)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ECS check: 1 alert(s) in 1 alert file(s) (0 replayed, 1 live or written directly), " in r.stdout
    assert ", 0 problem(s)" in r.stdout


def test_a_session_fails_on_a_planted_bad_alert(outside: Path) -> None:
    """An alert file with a bad key under a session's basetemp fails that session, naming file, line and key."""
    (outside / "test_planted.py").write_text(
        "import orjson\n"
        "def test_plants(tmp_path):\n"
        "    (tmp_path / 'logs').mkdir()\n"
        f"    doc = {good()!r}\n"
        "    doc['log.record'] = 3\n"
        "    (tmp_path / 'logs' / 'alerts.json.2026-03-01').write_bytes(orjson.dumps(doc) + b'\\n')\n")
    r = run_session(outside)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ERROR at teardown of test_plants" in r.stdout
    assert "ECS check: 1 alert(s) in 1 alert file(s)" in r.stdout and "2 problem(s)" in r.stdout
    assert "alerts.json.2026-03-01:1: log.record: is not an ECS 9.4.0 field" in r.stdout
    assert "alerts.json.2026-03-01:1: log.record: the index template does not map it" in r.stdout


def run_session(directory: Path) -> subprocess.CompletedProcess[str]:
    """pytest on ``directory`` with tests/conftest.py as a plugin, its basetemp inside ``directory``."""
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-q", "--rootdir", str(directory), "--basetemp", str(directory / "bt"),
                           str(directory / "test_planted.py")],
                          cwd=repo, capture_output=True, text=True, timeout=120)
