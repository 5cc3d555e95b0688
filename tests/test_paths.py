"""Where edr looks and writes: the installed layout, paths relative to the config file, shipped rules, packs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from edr.config import BUNDLED, PACK, ConfigError, installed_layout, load_config
from edr.resources import shipped
from tests.conftest import REPO

EDR = [sys.executable, "-m", "edr"]
RULES_YML = """\
title: Marker exec
id: 5a1c8d2e-0000-4000-8000-00000000a11e
status: test
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /edr-paths-marker}
  condition: sel
level: high
"""


def test_defaults_follow_the_installed_layout() -> None:
    linux = installed_layout("linux")
    assert (linux.config_file, linux.state, linux.logs) == ("/etc/edr/config.toml", "/var/lib/edr", "/var/log/edr")
    win = installed_layout("windows", {"ProgramData": "D:\\Data"})
    assert (win.config_file, win.state, win.logs) == (
        "D:\\Data\\edr\\config.toml", "D:\\Data\\edr\\state", "D:\\Data\\edr\\logs")
    cfg = load_config(None, environ={}).config
    assert cfg.logging.directory == cfg.alerts.directory == cfg.events.directory == linux.logs
    assert cfg.agent.state_directory == linux.state
    assert cfg.sigma.cache_dir == f"{linux.state}/cache" and cfg.rules.store_directory == f"{linux.state}/rules"


def test_bundled_names_the_shipped_rules_and_pack_stays_for_the_loaders() -> None:
    cfg = load_config(None, environ={}).config
    rules = shipped("rules")
    assert cfg.sigma_paths() == [str(rules / "sigma"), PACK]
    assert cfg.scanner.yara_rules_path == str(rules / "yara")
    assert cfg.ioc.hashes_path == str(rules / "ioc" / "hashes.txt")
    assert cfg.simple.rules_path == str(rules / "edr-rules.toml")
    for path in (cfg.sigma_paths()[0], cfg.scanner.yara_rules_path, cfg.ioc.paths_regex_path, cfg.simple.rules_path):
        assert os.path.exists(path), path


def test_bundled_is_only_for_rule_paths() -> None:
    with pytest.raises(ConfigError, match=r"logging\.directory .*names shipped rules"):
        load_config(None, environ={"EDR__LOGGING__DIRECTORY": BUNDLED})


def test_relative_paths_in_a_config_file_are_relative_to_that_file_whatever_the_working_directory(
        tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    (conf_dir / "rules" / "sigma").mkdir(parents=True)
    (conf_dir / "rules" / "sigma" / "marker.yml").write_text(RULES_YML)
    conf = conf_dir / "config.toml"
    conf.write_text('[scanner]\nsigma_rules_path = "rules/sigma"\n[alerts]\ndirectory = "out"\n'
                    '[sigma]\ncache_dir = ""\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd in (elsewhere, Path("/")):
        assert _load_in(cwd, conf) == ([str(conf_dir / "rules" / "sigma")], str(conf_dir / "out"))
    # from the environment a relative path is the operator's, relative to where edr runs
    r = subprocess.run([*EDR, "config", "show", "--config", str(conf)], cwd=elsewhere, capture_output=True,
                       text=True, env={**os.environ, "EDR__EVENTS__DIRECTORY": "ev"})
    assert r.returncode == 0, r.stderr
    assert f'directory = "{elsewhere / "ev"}"  # environment variable EDR__EVENTS__DIRECTORY' in r.stdout
    # and a replay run from anywhere finds the rules beside the config (the marker rule fires)
    events = tmp_path / "events.ndjson"
    events.write_bytes(orjson.dumps({"ts": 1.7e9, "category": "process_creation", "product": "linux",
                                     "fields": {"Image": "/tmp/edr-paths-marker", "ProcessId": 7}}) + b"\n")
    r = subprocess.run([*EDR, "replay", "--config", str(conf), str(events)], cwd="/", capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(line)["rule.name"] for line in r.stdout.splitlines()] == ["Marker exec"]


def _load_in(cwd: Path, conf: Path) -> tuple[list[str], str]:
    code = ("import json, sys\nfrom edr.config import load_config\n"
            "c = load_config(sys.argv[1], environ={}).config\n"
            "print(json.dumps([c.sigma_paths(), c.alerts.directory]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(conf)], cwd=cwd, capture_output=True, text=True, check=True)
    paths, alerts = orjson.loads(r.stdout)
    return paths, alerts


def test_replay_writes_nothing_under_the_live_alert_directory(tmp_path: Path) -> None:
    live = tmp_path / "live"
    conf = tmp_path / "config.toml"
    conf.write_text(f'[alerts]\ndirectory = "{live}"\n[logging]\ndirectory = "{live}"\n'
                    f'[events]\nenabled = true\ndirectory = "{live}"\n[sigma]\ncache_dir = ""\n'
                    f'[scanner]\nsigma_rules_path = "{tmp_path / "rules"}"\n')
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "marker.yml").write_text(RULES_YML)
    events = tmp_path / "events.ndjson"
    events.write_bytes(orjson.dumps({"ts": 1.7e9, "category": "process_creation", "product": "linux",
                                     "fields": {"Image": "/tmp/edr-paths-marker", "ProcessId": 7}}) + b"\n")
    r = subprocess.run([*EDR, "replay", "--config", str(conf), str(events)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 and not live.exists()
    out = tmp_path / "out"
    r = subprocess.run([*EDR, "replay", "--config", str(conf), "--output", str(out), str(events)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and not live.exists()
    assert [p.name.split(".")[0] for p in sorted(out.iterdir())] == ["alerts", "edr", "events"]


def test_a_closed_standard_output_ends_edr_graph_quietly() -> None:
    """Its reader gone before it writes (``edr graph | head`` once head has exited): exit 0, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        r = subprocess.run([*EDR, "graph", "--mode", "replay"], stdout=write_end, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (0, "")
