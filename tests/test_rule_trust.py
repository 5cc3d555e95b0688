"""As root, configuration and rule files other users can change are refused (or, on a test rig, warned about).

Real `edr replay` / `edr rules check` / `edr run` processes, real files with real owners and modes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attrs
import orjson
import pytest

from edr.config import Config, load_config
from edr.detect.engines import load_yara
from tests.conftest import REPO, shared_path

# edr.rule_trust is imported inside the in-process tests only, so that the real-process tests above
# them also run (and fail) against a tree without it.

NOBODY = 65534
pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the checks apply to an agent running as root")]
EDR = [sys.executable, "-m", "edr"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDR")}
    env.update(extra)
    return env


def _sigma_rule(title: str, image: str) -> str:
    return f"""title: {title}
id: {abs(hash(title)) % 10**8:08d}-0000-4000-8000-000000000000
status: test
logsource:
    product: linux
    category: process_creation
detection:
    sel:
        Image|endswith: '/{image}'
    condition: sel
level: high
"""


def _events(path: Path, images: list[str]) -> Path:
    with open(path, "wb") as fh:
        for i, image in enumerate(images):
            fh.write(orjson.dumps({
                "ts": 1_763_000_000.0 + i, "seq": i, "category": "process_creation", "product": "linux",
                "fields": {"ProcessId": 100 + i, "Image": f"/usr/bin/{image}", "CommandLine": image, "User": "root",
                           "ParentProcessId": 1, "ParentImage": "/usr/lib/systemd/systemd"}}) + b"\n")
    return path


@pytest.fixture
def rig(tmp_path: Path) -> Path:
    """A working directory with Sigma rules (good/, plus a loose file), a simple-rules file, IOC lists."""
    sigma = tmp_path / "sigma"
    (sigma / "good").mkdir(parents=True)
    (sigma / "good" / "a.yml").write_text(_sigma_rule("Good rule A", "good-a"))
    (sigma / "good" / "b.yml").write_text(_sigma_rule("Good rule B", "good-b"))
    (sigma / "good" / "README.md").write_text("not a rule")
    (sigma / "good" / "README.md").chmod(0o666)  # not read by the engine: not checked
    (tmp_path / "simple.toml").write_text('[[rules]]\nid = "S-1"\nname = "Simple marker"\ntype = "process"\n'
                                          'severity = "high"\naction = "alert"\nprocess_names = ["simple-x"]\n')
    (tmp_path / "ips.txt").write_text("203.0.113.9\n")
    (tmp_path / "hashes.txt").write_text("")
    (tmp_path / "edr.toml").write_text(f"""
[scanner]
sigma_rules_path = "{sigma}"
[simple]
rules_path = "{tmp_path / 'simple.toml'}"
builtin_enabled = false
[ioc]
ips_path = "{tmp_path / 'ips.txt'}"
hashes_path = "{tmp_path / 'hashes.txt'}"
domains_path = ""
paths_regex_path = ""
[sigma]
cache_dir = ""
""")
    _events(tmp_path / "events.ndjson", ["good-a", "good-b", "bad-c", "simple-x"])
    return tmp_path


def _replay(work: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str], str]:
    """A real `edr replay` of events.ndjson: the result, its alerts' rule names (sorted) and its op log."""
    shutil.rmtree(work / "logs", ignore_errors=True)
    r = subprocess.run([*EDR, "replay", "--config", "edr.toml", "--output", "logs", "--no-progress", *args,
                        "events.ndjson"], cwd=work, env=_env(**env), capture_output=True, text=True, timeout=120)
    alerts = [orjson.loads(line)["rule.name"] for f in sorted((work / "logs").glob("alerts.json.*"))
              for line in f.read_bytes().splitlines()]
    oplog = "".join(f.read_text() for f in sorted((work / "logs").glob("edr.log.*")))
    return r, sorted(alerts), oplog


# --- the configuration file --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["replay", "--no-progress", "events.ndjson"], ["rules", "check"], ["run"]])
def test_world_writable_config_is_refused_with_exit_2(rig: Path, command: list[str]) -> None:
    conf = rig / "edr.toml"
    conf.chmod(0o666)
    r = subprocess.run([*EDR, *command, "--config", "edr.toml"], cwd=rig, env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "configuration file edr.toml: writable by group and others (mode 0666)" in r.stderr
    assert f"chmod go-w {conf}" in r.stderr and "Traceback" not in r.stderr
    assert not (rig / "logs").exists()  # nothing in the refused file was acted on, its log directory included


def test_config_owned_by_nobody_is_refused(rig: Path) -> None:
    conf = rig / "edr.toml"
    os.chown(conf, NOBODY, NOBODY)  # mode 0644: only its owner, nobody, can change it
    r, _, _ = _replay(rig)
    assert r.returncode == 2, r.stderr
    assert "owned by nobody (uid 65534)" in r.stderr and f"chown root {conf}" in r.stderr


def test_config_in_a_directory_others_can_write_is_refused(rig: Path) -> None:
    loose = rig / "loose"
    loose.mkdir()
    loose.chmod(0o777)  # not sticky: anyone can replace the file
    (loose / "edr.toml").write_text((rig / "edr.toml").read_text())
    r = subprocess.run([*EDR, "replay", "--config", "loose/edr.toml", "--no-progress", "events.ndjson"],
                       cwd=rig, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"its directory {loose} is writable by group and others" in r.stderr, r.stderr


@pytest.mark.parametrize("how", ["env", "flag"])
def test_warn_from_env_or_command_line_lets_the_config_through(rig: Path, how: str) -> None:
    (rig / "edr.toml").chmod(0o666)
    if how == "env":
        r, alerts, oplog = _replay(rig, EDR__AGENT__PERMISSIONS="warn")
    else:
        r, alerts, oplog = _replay(rig, "--permissions", "warn")
    assert r.returncode == 0, r.stderr
    assert "configuration file edr.toml: writable by group and others" in r.stderr and "loaded anyway" in r.stderr
    assert "WARNING edr: configuration file edr.toml" in oplog and "loaded anyway" in oplog
    assert alerts == ["Good rule A", "Good rule B", "Simple marker"]


def test_warn_written_in_the_insecure_file_itself_does_not_count(rig: Path) -> None:
    conf = rig / "edr.toml"
    conf.write_text(conf.read_text() + '[agent]\npermissions = "warn"\n')
    conf.chmod(0o666)
    r, _, _ = _replay(rig)
    assert r.returncode == 2, r.stderr
    assert "agent.permissions in the file itself does not count" in r.stderr


# --- rule files --------------------------------------------------------------------------------------------------


def test_baseline_every_rule_loads(rig: Path) -> None:
    r, alerts, oplog = _replay(rig)
    assert r.returncode == 0, r.stderr
    assert alerts == ["Good rule A", "Good rule B", "Simple marker"]  # no event has the listed IP
    assert "edr.trust" not in oplog and "not loaded" not in oplog  # no refusal and no warning of the trust check


def test_world_writable_sigma_file_is_skipped_alone(rig: Path) -> None:
    bad = rig / "sigma" / "good" / "c.yml"
    bad.write_text(_sigma_rule("Loose rule C", "bad-c"))
    bad.chmod(0o666)
    r, alerts, oplog = _replay(rig)
    assert r.returncode == 0, r.stderr
    assert alerts == ["Good rule A", "Good rule B", "Simple marker"]  # the agent runs on the rest
    text = (f"rule file {bad} (scanner.sigma_rules_path): writable by group and others (mode 0666): "
            f"chmod go-w {bad}; not loaded")
    assert f"ERROR edr.trust: {text}" in oplog
    assert f"edr: {text}" in r.stderr
    # warn: loaded, with a warning
    r, alerts, oplog = _replay(rig, "--permissions", "warn")
    assert "Loose rule C" in alerts and 'loaded anyway (agent.permissions = "warn")' in oplog


def test_sigma_file_owned_by_nobody_and_linked_loose_file_are_skipped(rig: Path) -> None:
    owned = rig / "sigma" / "good" / "c.yml"
    owned.write_text(_sigma_rule("Nobody's rule", "bad-c"))
    os.chown(owned, NOBODY, NOBODY)
    elsewhere = rig / "elsewhere.yml"
    elsewhere.write_text(_sigma_rule("Linked rule", "good-a"))
    elsewhere.chmod(0o646)
    (rig / "sigma" / "good" / "linked.yml").symlink_to(elsewhere)  # the link is root's; its target is not safe
    r, alerts, oplog = _replay(rig)
    assert alerts == ["Good rule A", "Good rule B", "Simple marker"], r.stderr
    assert f"rule file {owned} (scanner.sigma_rules_path): owned by nobody" in oplog
    linked = rig / "sigma" / "good" / "linked.yml"
    assert f"rule file {linked} (scanner.sigma_rules_path): writable by others (mode 0646)" in oplog


def test_group_writable_subdirectory_is_skipped_with_everything_under_it(rig: Path) -> None:
    sub = rig / "sigma" / "shared-with-ops"
    (sub / "deeper").mkdir(parents=True)
    (sub / "deeper" / "c.yml").write_text(_sigma_rule("Rule in a loose directory", "bad-c"))
    sub.chmod(0o775)
    r, alerts, oplog = _replay(rig)
    assert alerts == ["Good rule A", "Good rule B", "Simple marker"], r.stderr
    assert (f"rule directory {sub} (scanner.sigma_rules_path): writable by its group (mode 0775): "
            f"chmod go-w {sub}; not loaded, nor anything under it") in oplog


def test_loose_sigma_root_refuses_the_whole_path(rig: Path) -> None:
    (rig / "sigma").chmod(0o777)
    r, alerts, oplog = _replay(rig)
    assert r.returncode == 0 and alerts == ["Simple marker"], r.stderr
    assert f"rule directory {rig / 'sigma'} (scanner.sigma_rules_path): writable by group and others" in oplog


def test_sigma_paths_from_the_command_line_are_checked_too(rig: Path) -> None:
    extra = rig / "extra"
    extra.mkdir()
    (extra / "c.yml").write_text(_sigma_rule("Extra rule", "bad-c"))
    (extra / "c.yml").chmod(0o666)
    r, alerts, oplog = _replay(rig, "--sigma", str(extra), "--sigma", str(rig / "sigma"))
    assert alerts == ["Good rule A", "Good rule B", "Simple marker"], r.stderr
    assert f"rule file {extra / 'c.yml'} (--sigma): writable by group and others" in oplog


def test_world_writable_simple_rules_and_ioc_list_are_not_loaded(rig: Path) -> None:
    (rig / "simple.toml").chmod(0o666)
    (rig / "ips.txt").chmod(0o666)
    _events(rig / "events.ndjson", ["good-a", "simple-x"])
    with open(rig / "events.ndjson", "ab") as fh:
        fh.write(orjson.dumps({"ts": 1_763_000_010.0, "seq": 9, "category": "network_connection", "product": "linux",
                               "fields": {"ProcessId": 9, "Image": "/usr/bin/nc", "Initiated": "true",
                                          "DestinationIp": "203.0.113.9", "DestinationPort": 443}}) + b"\n")
    r, alerts, oplog = _replay(rig)
    assert r.returncode == 0 and alerts == ["Good rule A"], (alerts, r.stderr)
    assert f"rule file {rig / 'simple.toml'} (simple.rules_path): writable by group and others" in oplog
    assert f"rule file {rig / 'ips.txt'} (ioc.ips_path): writable by group and others" in oplog
    assert "file not found" not in oplog  # a refused list is no list, not a missing file
    r, alerts, oplog = _replay(rig, EDR__AGENT__PERMISSIONS="warn")
    assert len(alerts) == 3 and "Simple marker" in alerts, alerts


def test_rules_check_refuses_and_exits_1(rig: Path) -> None:
    bad = rig / "sigma" / "good" / "c.yml"
    bad.write_text(_sigma_rule("Loose rule C", "bad-c"))
    bad.chmod(0o666)
    r = subprocess.run([*EDR, "rules", "check", "--json", str(rig / "sigma")], cwd=rig, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"rule file {bad} (PATH): writable by group and others (mode 0666): chmod go-w {bad}; not loaded" in r.stderr
    assert orjson.loads(r.stdout)["loaded"] == 2
    r = subprocess.run([*EDR, "rules", "check", "--json", "--permissions", "warn", str(rig / "sigma")], cwd=rig,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and orjson.loads(r.stdout)["loaded"] == 3, r.stderr


# --- YARA: trusted files only, namespaces unchanged ---------------------------------------------------------------


def test_yara_loads_only_trusted_files_with_their_namespaces(tmp_path: Path) -> None:
    from edr.rule_trust import check_rules

    root = tmp_path / "yara"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "good.yar").write_text('rule Good { strings: $a = "good-marker" condition: $a }\n')
    (root / "loose.yar").write_text('rule Loose { strings: $a = "loose-marker" condition: $a }\n')
    (root / "loose.yar").chmod(0o666)
    config = load_config(None, environ={"EDR__SCANNER__YARA_RULES_PATH": str(root)}).config
    trust = check_rules(config)
    assert [r.path for r in trust.refusals] == [str(root / "loose.yar")]
    assert trust.yara_files == (root / "sub" / "good.yar",)
    rules = load_yara(trust.config, [str(f) for f in trust.yara_files])
    assert rules is not None and not rules.errors
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"xx good-marker loose-marker xx")
    assert [h.rule_id for h in rules.scan_file(str(sample), 5)] == ["yara:sub/good:Good"]

    (root).chmod(0o777)  # the whole directory: nothing
    trust = check_rules(config)
    assert trust.yara_files == () and trust.refusals[0].whole
    assert load_yara(trust.config, []).rules is None


# --- what is not refused ------------------------------------------------------------------------------------------


def test_warn_narrows_nothing(tmp_path: Path) -> None:
    from edr.rule_trust import check_rules

    rules = tmp_path / "rules.yml"
    rules.write_text(_sigma_rule("x", "x"))
    rules.chmod(0o666)
    config = load_config(None, environ={"EDR__SCANNER__SIGMA_RULES_PATH": str(rules),
                                        "EDR__AGENT__PERMISSIONS": "warn"}).config
    trust = check_rules(config)
    assert trust.config == config and not trust.enforced and len(trust.refusals) == 1


def test_not_root_checks_nothing(tmp_path: Path) -> None:
    from edr.rule_trust import check_rules, trusted_sigma_paths

    rules = tmp_path / "rules.yml"
    rules.write_text("")
    rules.chmod(0o666)
    config = load_config(None, environ={"EDR__SCANNER__SIGMA_RULES_PATH": str(rules)}).config
    trust = check_rules(config, force=False)
    assert trust.config == config and trust.refusals == ()
    assert trusted_sigma_paths([str(rules)], enforced=True, key="PATH", force=False) == ([str(rules)], ())


def test_the_repository_rules_are_trusted() -> None:
    from edr.rule_trust import check_rules

    config = load_config(None, environ={
        "EDR__SCANNER__SIGMA_RULES_PATH": str(REPO / "rules" / "sigma"),
        "EDR__SCANNER__YARA_RULES_PATH": str(REPO / "rules" / "yara"),
        "EDR__SIMPLE__RULES_PATH": str(REPO / "rules" / "edr-rules.toml"),
        **{f"EDR__IOC__{k.upper()}": str(REPO / "rules" / "ioc" / f"{n}.txt")
           for k, n in (("hashes_path", "hashes"), ("ips_path", "ips"), ("domains_path", "domains"),
                        ("paths_regex_path", "paths_regex"))},
    }).config
    trust = check_rules(config)
    assert trust.refusals == () and trust.config == config and trust.yara_files is None


def test_sigmahq_tree_is_trusted_and_checked_quickly() -> None:
    from edr.rule_trust import check_rules

    sigma = shared_path("sigma")
    config = Config()
    config = attrs.evolve(config, scanner=attrs.evolve(config.scanner, sigma_rules_path=[str(sigma)]))
    t0 = time.monotonic()
    trust = check_rules(config, yara=False, ioc=False, simple=False)
    took = time.monotonic() - t0
    print(f"checked {sigma} in {took:.2f}s")
    assert trust.refusals == () and trust.config.sigma_paths() == [str(sigma)]
    assert took < 5



# --- the walk of a rule tree (in process) ------------------------------------------------------------------------


def _mixed_tree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A Sigma tree with one entry of every kind the walk meets; the refusals expected (path: reason start)."""
    root = tmp_path / "sigma"
    (root / "ok" / "deep").mkdir(parents=True)
    for rel in ("ok/a.yml", "ok/deep/b.yaml", "ok/deep/C.YML", "top.yml"):
        (root / rel).write_text(_sigma_rule(rel, "x"))
    (root / "ok" / "notes.md").write_text("not a rule")
    (root / "ok" / "notes.md").chmod(0o666)  # not read by the engine: not checked
    loose = root / "ok" / "loose.yml"
    loose.write_text(_sigma_rule("loose", "x"))
    loose.chmod(0o666)
    owned = root / "ok" / "deep" / "nobody.yml"
    owned.write_text(_sigma_rule("nobody", "x"))
    os.chown(owned, NOBODY, NOBODY)
    group = root / "group-writable"
    (group / "under").mkdir(parents=True)
    (group / "under" / "d.yml").write_text(_sigma_rule("under a loose directory", "x"))
    group.chmod(0o775)
    # links out of the tree: to a sound file in a directory others may write, to a loose directory
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "linked.yml").write_text(_sigma_rule("linked", "x"))
    outside.chmod(0o777)  # not sticky: anyone may replace linked.yml
    (root / "ok" / "escape.yml").symlink_to(outside / "linked.yml")
    (root / "ok" / "escape-dir").symlink_to(outside, target_is_directory=True)
    good_outside = tmp_path / "good-outside"
    good_outside.mkdir()
    (good_outside / "fine.yml").write_text(_sigma_rule("fine", "x"))
    (root / "ok" / "fine-link.yml").symlink_to(good_outside / "fine.yml")  # a trusted target: loaded
    (root / "ok" / "dangling.yml").symlink_to(tmp_path / "nowhere.yml")  # skipped, as the loaders skip it
    expected = {
        str(loose): f"writable by group and others (mode 0666): chmod go-w {loose}",
        str(owned): f"owned by nobody (uid {NOBODY}), not by root or this agent's user: chown root {owned}",
        str(group): f"writable by its group (mode 0775): chmod go-w {group}",
        str(root / "ok" / "escape.yml"): f"its directory {outside} is writable by group and others (mode 0777)",
        str(root / "ok" / "escape-dir"): f"writable by group and others (mode 0777): chmod go-w {outside}",
    }
    return root, expected


def _reference_walk(root: Path) -> tuple[list[str], list[str]]:
    """What a per-entry check_trusted of every rule file and directory (os.walk) refuses and keeps."""
    from edr.platform.private_files import UnsafePath, check_trusted

    refused, kept = [], []
    for current, dirs, names in os.walk(root):
        for name in sorted(dirs):
            try:
                check_trusted(os.path.join(current, name))
            except UnsafePath:
                refused.append(os.path.join(current, name))
                dirs.remove(name)
        for name in names:
            full = os.path.join(current, name)
            if name.lower().endswith((".yml", ".yaml")) and os.path.isfile(full):
                try:
                    check_trusted(full)
                except UnsafePath:
                    refused.append(full)
                else:
                    kept.append(full)
    return sorted(refused), sorted(kept)


def _sigma_config(*paths: Path) -> Config:
    config = Config()
    return attrs.evolve(config, scanner=attrs.evolve(config.scanner, sigma_rules_path=[str(p) for p in paths]))


def test_walk_refuses_loose_files_directories_and_links_out_of_the_tree_naming_each(tmp_path: Path) -> None:
    from edr.rule_trust import check_rules

    root, expected = _mixed_tree(tmp_path)
    trust = check_rules(_sigma_config(root), yara=False, ioc=False, simple=False, force=True)
    got = {r.path: r.reason for r in trust.refusals}
    assert sorted(got) == sorted(expected)
    for path, reason in expected.items():
        assert got[path].startswith(reason), (path, got[path])
    assert all(not r.whole for r in trust.refusals)
    dirs = {str(root / "group-writable"), str(root / "ok" / "escape-dir")}
    assert {r.path for r in trust.refusals if r.is_dir} == dirs
    loaded = trust.config.sigma_paths()
    assert loaded == sorted(str(root / rel) for rel in (
        "ok/a.yml", "ok/deep/b.yaml", "ok/deep/C.YML", "top.yml", "ok/fine-link.yml"))
    # exactly what checking every entry in full (the realpath and every directory above it) decides
    assert _reference_walk(root) == (sorted(expected), loaded)


def test_walk_checks_each_entry_once_without_resolving_each_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree is trusted from its root down: no rule file's path is resolved and its parents stat'ed again."""
    from edr.rule_trust import check_rules

    root = tmp_path / "sigma"
    for d in range(5):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (root / f"d{d}" / f"r{f}.yml").write_text("title: x\n")
    (root / "d3" / "r7.yml").chmod(0o646)
    resolved: list[str] = []
    real = os.path.realpath

    def counting(path: str | os.PathLike[str], *args: object, **kwargs: object) -> str:
        resolved.append(os.fspath(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os.path, "realpath", counting)
    trust = check_rules(_sigma_config(root), yara=False, ioc=False, simple=False, force=True)
    assert [r.path for r in trust.refusals] == [str(root / "d3" / "r7.yml")]
    assert len(trust.config.sigma_paths()) == 199
    assert len(resolved) <= 2, resolved  # the root only (its check, and where its walk starts)
