"""The tool commands as a user runs them: rules packs, the service unit, the ECS template."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

EDR = [sys.executable, "-m", "edr"]


def _run(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDR")}
    base.update(EDR__RULES__STORE_DIRECTORY=str(tmp / "store"), EDR__SIGMA__CACHE_DIR="", **env)
    return subprocess.run([*EDR, *args], cwd=tmp, env=base, capture_output=True, text=True, timeout=300)


def test_rules_install_list_rollback_and_a_broken_pack(tmp_path: Path) -> None:
    first = Path(shutil.make_archive(str(tmp_path / "one"), "zip", root_dir=REPO / "rules", base_dir="sigma"))
    r = _run(["rules", "install", str(first), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    one = json.loads(r.stdout)
    assert one["loaded"] == 3 and one["changed"]
    # a second pack: the repository's rules and one more
    extra = tmp_path / "two" / "sigma"
    shutil.copytree(REPO / "rules" / "sigma", extra)
    (extra / "more.yml").write_text(
        "title: One more\nid: 6b0e2d1a-0000-4000-8000-0000000c11e1\nstatus: test\n"
        "logsource: {product: linux, category: process_creation}\n"
        "detection:\n  sel: {Image|endswith: /edr-cli-marker}\n  condition: sel\nlevel: high\n")
    r = _run(["rules", "install", str(tmp_path / "two")], tmp_path)
    assert r.returncode == 0 and "4 loaded" in r.stdout.replace(",", ""), r.stdout + r.stderr
    broken = tmp_path / "broken.zip"
    broken.write_bytes(first.read_bytes()[:200])
    r = _run(["rules", "install", str(broken)], tmp_path)
    assert r.returncode == 1 and str(broken) in r.stderr, r.stderr
    listed = json.loads(_run(["rules", "list", "--json"], tmp_path).stdout)
    assert [p["active"] for p in listed["packs"]] == [False, True]
    r = _run(["rules", "rollback", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    listed = json.loads(_run(["rules", "list", "--json"], tmp_path).stdout)
    assert listed["active"] == one["pack_id"]
    # what the agent loads: the bundled rules and the active pack
    check = json.loads(_run(["rules", "check", "--json"], tmp_path).stdout)
    assert check["loaded"] == 3 + 3


def test_rules_update_from_a_bad_url_is_a_usage_error(tmp_path: Path) -> None:
    r = _run(["rules", "update", "--url", "ftp://mirror/pack.zip"], tmp_path)
    assert r.returncode in (1, 2) and "ftp://mirror/pack.zip" in r.stderr, r.stderr


def test_service_install_dry_run_writes_the_generated_unit(tmp_path: Path) -> None:
    exe = tmp_path / "edr-exe"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    conf = tmp_path / "config.toml"
    conf.write_text(f'[logging]\ndirectory = "{tmp_path / "logs"}"\n')
    r = _run(["service", "install", "--root", str(tmp_path / "root"), "--executable", str(exe),
              "--config", str(conf)], tmp_path)
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "root" / "etc" / "systemd" / "system" / "edr.service"
    text = unit.read_text()
    assert f"ExecStart={exe} run --config {conf} --no-console" in text
    assert "would run systemctl enable edr.service" in r.stdout and f"wrote {unit}" in r.stdout


def test_service_status_without_systemd_says_so(tmp_path: Path) -> None:
    if os.path.isdir("/run/systemd/system"):
        return  # systemd runs here: status would answer for real
    r = _run(["service", "status", "--executable", "/bin/true"], tmp_path)
    assert r.returncode == 3 and "systemd" in r.stderr, r.stderr


def test_ecs_template_is_json_for_the_alert_indices(tmp_path: Path) -> None:
    r = _run(["ecs", "template", "--index-pattern", "edr-*", "--dynamic", "strict"], tmp_path)
    assert r.returncode == 0, r.stderr
    template = json.loads(r.stdout)
    assert template["index_patterns"] == ["edr-*"]
    props = template["template"]["mappings"]["properties"]
    assert "rule" in props and "edr" in props
