"""`edr replay` over recordings a hostile review used to crash it with (issue #12, points 4-6).

Each case replays a bad record or file together with good data, through the
real command (a subprocess): the bad part gets a named rejection, every alert
of the good part is written, and the exit code is non-zero only where a file
was unusable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edr.sources.replay.winlog import MAX_RECORD_DEPTH
from tests.cli_helpers import file_event, read_alerts, run_edr, write_ndjson
from tests.conftest import shared_path

CRON = "BUILTIN-CRON"
REDSUN = "f2e4b7d9-5c3a-4f8b-9e1d-7a6c2b3f4e5d"  # a SigmaHQ rule and its regression sample
REDSUN_DIR = "regression_data/rules-emerging-threats/2026/Exploits/RedSun/file_event_win_exploit_redsun_indicators"
MIB = 1 << 20


def cron(n: int, **over: Any) -> dict[str, Any]:
    return {**file_event(f"/etc/cron.d/job{n}"), **over}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth  # as text: no Python object that deep is needed to write it


def deep_field_line(depth: int) -> bytes:
    record = json.dumps(cron(0))
    return record[:-2].encode() + b', "Deep": ' + deep(depth).encode() + b"}}"  # inside "fields"


@dataclass
class Case:
    lines: list[Any]  # the NDJSON file: records or raw lines
    rejected: dict[int, str] = field(default_factory=dict)  # line -> reason
    alerted: list[int] = field(default_factory=list)  # lines with a BUILTIN-CRON alert


NDJSON_CASES = {
    "ts 1e300": Case([cron(0, ts=1e300), cron(1), cron(2)],
                     {1: "'ts' 1e+300 is outside the representable times (years 1 to 9999)"}, [2, 3]),
    "ts -1e15": Case([cron(1), cron(0, ts=-1e15), cron(2)],
                     {2: "'ts' -1000000000000000.0 is outside the representable times"}, [1, 3]),
    "field nested 260 deep": Case([cron(1), deep_field_line(260), cron(2)],
                                  {2: "field 'Deep' is nested deeper than 16 levels"}, [1, 3]),
    "field nested 5,000 deep": Case([cron(1), deep_field_line(5000), cron(2)],
                                    {2: "invalid JSON: depth limit exceeded"}, [1, 3]),
    "invalid first line of 2 MiB": Case([b'{"ts": 1, "fields": {"x": "' + b"a" * (2 * MIB), cron(1), cron(2)],
                                        {1: "invalid JSON: unexpected end of data"}, [2, 3]),
    "valid first line of 2 MiB": Case([cron(1, fields={**cron(1)["fields"], "CommandLine": "v" * (2 * MIB)}),
                                       cron(2)], {}, [1, 2]),
    "first line starting with { but invalid": Case([b"{not json", cron(1), cron(2)],
                                                   {1: "invalid JSON: unexpected character"}, [2, 3]),
}


def log_text(workdir: Path) -> str:
    return "".join(f.read_text() for f in (workdir / "logs").glob("edr.log.*"))


@pytest.mark.parametrize("name", NDJSON_CASES)
def test_ndjson(workdir: Path, name: str) -> None:
    case = NDJSON_CASES[name]
    events = write_ndjson(workdir / "events.ndjson", case.lines)
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(events)], cwd=workdir)
    assert r.returncode == 0, r.stderr
    alerts = read_alerts(workdir / "logs")
    assert sorted((a["edr.log.line"], a["rule.id"]) for a in alerts) == [(n, CRON) for n in case.alerted]
    assert f"{len(case.lines) - len(case.rejected)} events, {len(case.rejected)} rejected" in r.stderr
    log = log_text(workdir)
    for line, reason in case.rejected.items():
        assert f"replay: {events}:{line}: skipped: {reason}" in log


@pytest.fixture
def redsun(workdir: Path) -> tuple[Path, Path]:
    """The RedSun regression sample (EVTX, evtx JSON), and a config whose Sigma rule is SigmaHQ's for it."""
    rule = shared_path("sigma", REDSUN_DIR.replace("regression_data/", "") + ".yml")
    sample = shared_path("sigma-regression", REDSUN_DIR, f"{REDSUN}.evtx")
    (workdir / "sigma.toml").write_text(f'[scanner]\nsigma_rules_path = "{rule}"\n[sigma]\ncache_dir = ""\n'
                                        '[ioc]\nenabled = false\n')
    return sample, sample.with_suffix(".json")


@pytest.mark.parametrize(("depth", "reason"), [
    (260, f"record is nested deeper than {MAX_RECORD_DEPTH} levels"),
    (5000, "invalid JSON: depth limit exceeded"),
])
def test_evtx_json_nested_deep(workdir: Path, redsun: tuple[Path, Path], depth: int, reason: str) -> None:
    good = redsun[1].read_text().strip()
    record = json.loads(good)
    record["Event"]["EventData"]["Deep"] = "DEEP"
    bad = json.dumps(record, indent=2).replace('"DEEP"', deep(depth))
    dump = workdir / "dump.json"
    dump.write_text("\n".join([good, bad, good]) + "\n")
    r = run_edr(["replay", "--config", "sigma.toml", "--output", "logs", "--no-progress", str(dump)], cwd=workdir)
    assert r.returncode == 0, r.stderr
    alerts = read_alerts(workdir / "logs")
    assert sorted((a["edr.log.record"], a["rule.id"]) for a in alerts) == [(1, REDSUN), (3, REDSUN)]
    assert "2 events, 1 rejected" in r.stderr
    assert f"replay: {dump}:{good.count(chr(10)) + 2}: skipped: {reason}" in log_text(workdir)


def test_random_bytes_evtx_then_a_good_file(workdir: Path, redsun: tuple[Path, Path]) -> None:
    random_evtx = workdir / "random.evtx"
    random_evtx.write_bytes(os.urandom(70_000).replace(b"\0", b"\1"))  # no NUL: as unlike text as it gets
    corrupt_header = workdir / "corrupt.evtx"
    corrupt_header.write_bytes(b"\0" * 8 + redsun[0].read_bytes()[8:])
    truncated = workdir / "truncated.evtx"
    truncated.write_bytes(redsun[0].read_bytes()[:100])
    r = run_edr(["replay", "--config", "sigma.toml", "--output", "logs",
                "--no-progress", str(random_evtx), str(redsun[0]),
                 str(corrupt_header), str(truncated), str(redsun[1])], cwd=workdir)
    assert r.returncode == 1, r.stderr  # three files were unusable
    alerts = read_alerts(workdir / "logs")
    assert sorted((a["log.file.path"], a["rule.id"]) for a in alerts) == [(str(redsun[0]), REDSUN),
                                                                          (str(redsun[1]), REDSUN)]
    assert f"replay: {random_evtx}: not a recognised format: binary data that is no EVTX file" in r.stderr
    assert f"replay: {corrupt_header}: not a recognised format" in r.stderr
    assert f"replay: {truncated}: cannot parse: not a readable EVTX file" in r.stderr


def test_a_fifo_is_reported_and_skipped_without_blocking(workdir: Path) -> None:
    fifo = workdir / "events.ndjson"
    os.mkfifo(fifo)
    good = write_ndjson(workdir / "good.ndjson", [cron(1), cron(2)])
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", str(fifo), str(good)],
                cwd=workdir, timeout=30)
    assert r.returncode == 1, r.stderr  # the FIFO was unusable
    assert f"replay: {fifo}: not a regular file (a FIFO)" in r.stderr
    assert "no such file" not in r.stderr
    assert sorted((a["log.file.path"], a["edr.log.line"]) for a in read_alerts(workdir / "logs")) == [
        (str(good), 1), (str(good), 2)]


def test_only_usable_files_with_rejections_exit_zero(workdir: Path) -> None:
    files = []
    for i, name in enumerate(NDJSON_CASES):
        files.append(str(write_ndjson(workdir / f"case{i}.ndjson", NDJSON_CASES[name].lines)))
    r = run_edr(["replay", "--config", "edr.toml", "--output", "logs", "--no-progress", *files], cwd=workdir)
    assert r.returncode == 0, r.stderr
    want = sum(len(c.alerted) for c in NDJSON_CASES.values())
    assert len(read_alerts(workdir / "logs")) == want
