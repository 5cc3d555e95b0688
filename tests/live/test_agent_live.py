"""`edr run` end to end on this host: real BPF programs, real actions, real alerts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, ebpf_unavailable
from tests.live.agent import read_alerts, start_agent, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]




@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    work = tmp_path_factory.mktemp("agent")
    # files of days long gone, for the retention pass at start (alerts_max_days 90, logs_max_days 30)
    (work / "logs").mkdir(mode=0o700)
    for old in ("alerts.json.2020-01-01", "edr.log.2020-01-02"):
        (work / "logs" / old).write_text("{}\n")
    proc, logs = start_agent(work, f"""
[scanner]
sigma_rules_path = "{REPO / 'rules' / 'sigma'}"
yara_rules_path = "{REPO / 'rules' / 'yara'}"
[simple]
rules_path = "{REPO / 'rules' / 'edr-rules.toml'}"
[ioc]
hashes_path = "{REPO / 'rules' / 'ioc' / 'hashes.txt'}"
ips_path = "{REPO / 'rules' / 'ioc' / 'ips.txt'}"
domains_path = "{REPO / 'rules' / 'ioc' / 'domains.txt'}"
paths_regex_path = "{REPO / 'rules' / 'ioc' / 'paths_regex.txt'}"
[logging]
directory = "{work / 'logs'}"
level = "info"
[alerts]
directory = "{work / 'logs'}"
dedup_window_secs = 3
[health]
interval_secs = 1
[sigma]
cache_dir = "{work / 'cache'}"
""", timeout=120)
    yield proc, logs
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_cron_write_alerts_within_one_second(agent) -> None:
    _proc, logs = agent
    path = Path(f"/etc/cron.d/edr-test-{uuid.uuid4().hex[:8]}")
    t0 = time.monotonic()
    subprocess.run(["/bin/sh", "-c", f"echo '# test' > {path}"], check=True)
    try:
        def found():
            return [a for a in read_alerts(logs) if a.get("file.path") == str(path)]

        hits = wait_for(found, 5.0)
        latency = time.monotonic() - t0
        assert hits, "no alert for the cron write"
        engines = {a["rule.engine"] for a in hits}
        assert "simple" in engines and "sigma" in engines, engines
        assert latency <= 1.0, f"alert took {latency:.3f}s"
        first = next(a for a in hits if a["rule.id"] == "BUILTIN-CRON")
        assert first["host.os.type"] == "linux"
    finally:
        path.unlink(missing_ok=True)



def test_cron_write_alert_names_the_writing_process(agent) -> None:
    _proc, logs = agent
    path = Path(f"/etc/cron.d/edr-test-{uuid.uuid4().hex[:8]}")
    subprocess.run(["/bin/sh", "-c", f"echo '# test' > {path}"], check=True)
    try:
        hits = wait_for(lambda: [a for a in read_alerts(logs) if a.get("file.path") == str(path)
                                  and a["rule.id"] == "BUILTIN-CRON"], 5.0)
        assert hits
        assert hits[0]["process.executable"] in ("/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/bin/dash")
    finally:
        path.unlink(missing_ok=True)


def test_file_name_that_is_not_utf8_is_alerted_and_the_agent_lives_on(agent) -> None:
    # A name with bytes that are not UTF-8 used to make RE2, the keyword automaton and
    # orjson raise: the event escaped Sigma and the alert writer stopped the agent.
    proc, logs = agent
    stem = f"edr-test-{uuid.uuid4().hex[:8]}"
    raw = os.fsencode(f"/etc/cron.d/{stem}-") + b"\xff\xfe"
    with open(raw, "w") as fh:
        fh.write("# test\n")
    try:
        written = f"/etc/cron.d/{stem}-\\xff\\xfe"  # the bytes spelt out in the alert file
        hits = wait_for(lambda: [a for a in read_alerts(logs) if a.get("file.path") == written], 5.0)
        assert hits, "no alert for the cron file with a non-UTF-8 name"
        assert {"simple", "sigma"} <= {a["rule.engine"] for a in hits}
        assert proc.poll() is None, "the agent stopped"
    finally:
        os.unlink(raw)
    # and it still alerts afterwards
    path = Path(f"/etc/cron.d/edr-test-{uuid.uuid4().hex[:8]}")
    path.write_text("# test\n")
    try:
        assert wait_for(lambda: [a for a in read_alerts(logs) if a.get("file.path") == str(path)], 5.0)
    finally:
        path.unlink(missing_ok=True)


def test_whoami_from_a_shell_fires_the_sigma_rule(agent) -> None:
    _proc, logs = agent
    subprocess.run(["/bin/sh", "-c", "/usr/bin/whoami; true"], check=True, capture_output=True)

    def found():
        return [a for a in read_alerts(logs) if a.get("rule.name") == "User Discovery With Whoami From A Shell"]

    hits = wait_for(found, 5.0)
    assert hits
    a = hits[-1]
    assert a["process.executable"] == "/usr/bin/whoami"
    assert a["process.parent.executable"] in ("/usr/bin/dash", "/bin/dash", "/usr/bin/sh", "/bin/sh")
    assert a["user.name"] == "root"


def test_retention_at_start_removes_old_files_and_logs_each(agent) -> None:
    _proc, logs = agent

    def removed() -> bool:
        return not (logs / "alerts.json.2020-01-01").exists() and not (logs / "edr.log.2020-01-02").exists()

    assert wait_for(removed, 10.0)
    oplog = "".join(f.read_text() for f in logs.glob("edr.log.*"))
    assert f"retention: removed {logs / 'alerts.json.2020-01-01'} (3 bytes)" in oplog
    assert f"retention: removed {logs / 'edr.log.2020-01-02'} (3 bytes)" in oplog


def test_a_hundred_identical_executions_are_one_alert_and_one_rollup(agent) -> None:
    """Dedup, live: the first alert at once, the other 99 counted into one rollup when the window closes."""
    _proc, logs = agent
    loop = subprocess.Popen(["/bin/sh", "-c", "i=0; while [ $i -lt 100 ]; do /usr/bin/whoami >/dev/null; "
                                              "i=$((i+1)); done"])
    t0 = time.monotonic()

    def ours() -> list[dict]:
        return [a for a in read_alerts(logs) if a.get("rule.name") == "User Discovery With Whoami From A Shell"
                and a.get("process.parent.pid") == loop.pid]

    first = wait_for(ours, 5.0)
    assert first, "no alert for the first whoami"
    assert time.monotonic() - t0 < 2.0
    assert loop.wait(timeout=30) == 0
    took = time.monotonic() - t0
    assert "edr.alert.count" not in first[0]
    time.sleep(3.5)  # the last window closes 3 s after it opened, at most 3 s after the loop ended
    alerts = wait_for(lambda: [a for a in ours() if "edr.alert.count" in a] and ours(), 10.0)
    rollups = [a for a in alerts if "edr.alert.count" in a]
    # every execution is accounted for: each alert without a count is one, each rollup its repeats
    assert sum(a["edr.alert.count"] - 1 if "edr.alert.count" in a else 1 for a in alerts) == 100
    if took < 2.5:  # all hundred inside the 3 s window (the usual case): the first, then one rollup of 100
        assert len(alerts) == 2 and rollups[0]["edr.alert.count"] == 100
    assert all(a["edr.alert.first_seen"] <= a["edr.alert.last_seen"] for a in rollups)


def test_sigterm_exits_zero_with_final_health_record(agent) -> None:
    proc, logs = agent
    assert proc.poll() is None, "agent died early"

    def periodic() -> bool:
        return any('health {"final":false' in f.read_text() for f in logs.glob("edr.log.*"))

    assert wait_for(periodic, 5.0, 0.2), "no periodic health record"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    text = "".join(f.read_text() for f in logs.glob("edr.log.*"))
    assert rc == 0, text[-3000:]
    assert 'health {"final":true' in text
    final = [line for line in text.splitlines() if 'health {"final":true' in line][-1]
    record = orjson.loads(final.split("health ", 1)[1])
    assert "source" in record["actors"] and "families" in record["actors"]["source"]
    assert os.path.exists(logs)
