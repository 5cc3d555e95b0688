"""What operators see of a live `edr run`: a real Prometheus scraping it, loss alerts, the true final health.

- A real Prometheus server (Debian's ``prometheus``; installed with apt when
  absent and this is root) is started on a loopback port with a generated
  configuration and a temporary storage directory; it scrapes the agent's
  ``[metrics]`` endpoint, and the test asks Prometheus's HTTP API
  (``/api/v1/query``), not the agent, for ``edr_events_total`` rising while
  processes run, and for the kernel-lost series of every sensor family.
- A tiny ring (``[sensor] page_count = 1``) and a storm of file writes make
  the kernel lose records: an ``EDR-TELEMETRY-LOSS`` alert carries the counts,
  and the final health record is the last periodic one plus ``after_last``
  (see :mod:`edr.health`), with a ``lost`` that is not 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import REPO, ebpf_unavailable
from tests.live.agent import read_alerts, start_agent, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(ebpf_unavailable() is not None, reason=str(ebpf_unavailable()))]

FAMILIES = ("process", "network", "file", "dns")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_binary() -> str:
    """Debian's prometheus, installed with apt-get when absent (root only); skips when it cannot be had."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"],
                   env=env, capture_output=True, timeout=600)
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("prometheus could not be installed with apt-get")
    return found


def agent_config(work: Path, extra: str) -> str:
    """The bundled rules, logs and alerts under ``work``, health every second, plus ``extra``."""
    return f"""
[scanner]
sigma_rules_path = "{REPO / 'rules' / 'sigma'}"
yara_rules_path = "{REPO / 'rules' / 'yara'}"
[simple]
rules_path = "{REPO / 'rules' / 'edr-rules.toml'}"
[logging]
directory = "{work / 'logs'}"
level = "info"
[alerts]
directory = "{work / 'logs'}"
[health]
interval_secs = 1
[sigma]
cache_dir = "{work / 'cache'}"
{extra}
"""


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query to Prometheus's HTTP API ([] on any error)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
    except OSError:
        return []
    return body["data"]["result"] if body.get("status") == "success" else []


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code (killed after 60 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def test_prometheus_scrapes_events_rising_and_lost_per_family(tmp_path: Path) -> None:
    binary = prometheus_binary()
    agent_port, prom_port = free_port(), free_port()
    proc, logs = start_agent(tmp_path, agent_config(tmp_path, f"""
[metrics]
enabled = true
listen = "127.0.0.1:{agent_port}"
"""), timeout=120)
    prom_dir = tmp_path / "prometheus"
    (prom_dir / "data").mkdir(parents=True)
    (prom_dir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: edr
    static_configs:
      - targets: ["127.0.0.1:{agent_port}"]
""")
    prom = subprocess.Popen([binary, f"--config.file={prom_dir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={prom_dir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=(prom_dir / "prometheus.log").open("wb"))
    base = f"http://127.0.0.1:{prom_port}"
    try:
        # Prometheus has scraped the agent: the target is up and the per-family series exist.
        up = wait_for(lambda: [r for r in query(base, 'up{job="edr"}') if r["value"][1] == "1"], 60, 0.5)
        log_tail = (prom_dir / "prometheus.log").read_text()[-2000:]
        assert up, f"prometheus never scraped the agent: {log_tail}"
        lost = wait_for(lambda: query(base, 'edr_events_lost_total{job="edr"}'), 30, 0.5)
        assert {r["metric"]["family"] for r in lost} == set(FAMILIES), lost
        assert all(float(r["value"][1]) >= 0 for r in lost)

        def process_events() -> float | None:
            got = query(base, 'edr_events_total{job="edr",family="process"}')
            return float(got[0]["value"][1]) if got else None

        before = wait_for(process_events, 30, 0.5)
        assert before is not None
        # The action: 50 short-lived processes (exec, fork, exit events of the process family).
        for _ in range(50):
            subprocess.run(["/bin/true"], check=True)
        risen = wait_for(lambda: (n := process_events()) is not None and n >= before + 50 and n, 30, 0.5)
        assert risen, f"edr_events_total{{family=\"process\"}} did not rise by 50 from {before}: {process_events()}"
        # And what else an operator reads: edges, Sigma evaluations, memory, start time.
        assert query(base, 'edr_edge_sent_events_total{edge="normalizer.out->router.in"}')
        assert query(base, "edr_resident_memory_bytes > 0")
        start = query(base, "edr_start_time_seconds")
        assert start and abs(float(start[0]["value"][1]) - time.time()) < 600
        # `edr rules top` reads the same endpoint: a rule that matched is listed with its exact count.
        subprocess.run(["/bin/sh", "-c", "/usr/bin/whoami; true"], check=True, capture_output=True)
        whoami = "User Discovery With Whoami From A Shell"
        assert wait_for(lambda: [a for a in read_alerts(logs) if a.get("rule.name") == whoami], 10)

        def top() -> list[dict[str, Any]]:
            out = subprocess.run([sys.executable, "-m", "edr", "rules", "top", "--listen", f"127.0.0.1:{agent_port}",
                                  "--json"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return [r for r in json.loads(out.stdout) if r["rule"] == whoami and r["matches"] >= 1]

        assert wait_for(top, 10, 0.5), "edr rules top does not list the rule that matched"
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        rc = stop(proc)
    assert rc == 0, "".join(f.read_text() for f in logs.glob("edr.log.*"))[-3000:]


def test_metrics_port_taken_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        conf = tmp_path / "config.toml"
        conf.write_text(agent_config(tmp_path, f"""
[metrics]
enabled = true
listen = "127.0.0.1:{port}"
[agent]
state_directory = "{tmp_path / 'state'}"
"""))
        result = subprocess.run([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"],
                                cwd=tmp_path, capture_output=True, timeout=300)
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    assert f"cannot serve metrics on 127.0.0.1:{port} (metrics.listen)" in result.stderr.decode()


def health_records(logs: Path) -> list[dict[str, Any]]:
    """Every health record logged so far, in order."""
    text = "".join(f.read_text() for f in sorted(logs.glob("edr.log.*")))
    return [orjson.loads(line.split("health ", 1)[1]) for line in text.splitlines() if " health {" in line]


def file_storm(directory: Path, files: int) -> None:
    """Create, write and remove ``files`` files as fast as one process can: a burst of file events."""
    directory.mkdir(exist_ok=True)
    code = ("import os,sys\nd=sys.argv[1]\nfor i in range(int(sys.argv[2])):\n"
            " p=os.path.join(d,'f%d'%i)\n with open(p,'wb') as f: f.write(b'x')\n os.unlink(p)\n")
    subprocess.run([sys.executable, "-c", code, str(directory), str(files)], check=True, timeout=300)


def test_kernel_loss_raises_a_loss_alert_and_the_final_health_counts_it(tmp_path: Path) -> None:
    proc, logs = start_agent(tmp_path, agent_config(tmp_path, """
[sensor]
page_count = 1
[coverage]
check_secs = 0.5
heartbeat_secs = 1
"""), timeout=120)
    started = time.monotonic()
    try:
        def loss_alerts() -> list[dict[str, Any]]:
            return loss_alerts_of(logs)

        for _ in range(10):  # bounded: each storm is 20,000 files; one is normally plenty
            file_storm(tmp_path / "storm", 20_000)
            if wait_for(loss_alerts, 5, 0.2):
                break
        alerts = loss_alerts()
        assert alerts, "no EDR-TELEMETRY-LOSS alert after the file storms"
        first = alerts[0]
        assert first["rule.severity"] == "high"
        assert first["edr.telemetry.count"] > 0
        lost_by = dict(zip(first["edr.telemetry.sources"], first["edr.telemetry.counts"], strict=True))
        assert lost_by.get("file", 0) > 0, lost_by
        assert sum(first["edr.telemetry.counts"]) == first["edr.telemetry.count"]
        assert first["edr.telemetry.total"] >= first["edr.telemetry.count"]
        # Rate limited: the alerts of one kind are at most the burst (3) plus one per 30 s interval.
        assert len(loss_alerts()) <= 3 + int((time.monotonic() - started) // 30) + 1
        # A periodic record has seen the loss, and heartbeats are written.
        seen = wait_for(lambda: [r for r in health_records(logs)
                                 if not r["final"] and r["actors"]["source"]["families"]["file"]["lost"] > 0], 10)
        assert seen, "no periodic health record counts the loss"
        beats = "".join(f.read_text() for f in logs.glob("edr.log.*")).count(" heartbeat {")
        assert beats >= 1
    finally:
        rc = stop(proc)
    records = health_records(logs)
    text = "".join(f.read_text() for f in logs.glob("edr.log.*"))
    assert rc == 0, text[-3000:]
    final = records[-1]
    assert final["final"] is True
    last = [r for r in records if not r["final"]][-1]
    families = final["actors"]["source"]["families"]
    last_families = last["actors"]["source"]["families"]
    # The bug: the final lost was 0 because the sensor was read after it closed.
    assert families["file"]["lost"] > 0
    after = final["after_last"]
    for fam in FAMILIES:
        for key in ("events", "lost"):
            added = after[f"source.{fam}.{key}"]
            assert added >= 0, (fam, key, added)
            assert families[fam][key] == last_families[fam][key] + added, (fam, key)
    for edge, counts in final["edges"].items():
        for key in ("sent", "dropped"):
            assert after[f"{edge}.{key}"] >= 0
            assert counts[key] == last["edges"][edge][key] + after[f"{edge}.{key}"]
    # Every loss alert's window count adds up to at most the final total (nothing counted twice).
    assert sum(a["edr.telemetry.count"] for a in loss_alerts_of(logs)) <= sum(f["lost"] for f in families.values())


def loss_alerts_of(logs: Path) -> list[dict[str, Any]]:
    """The kernel_lost loss alerts written under ``logs``."""
    return [a for a in read_alerts(logs) if a.get("rule.id") == "EDR-TELEMETRY-LOSS"
            and a.get("edr.telemetry.kind") == "kernel_lost"]
