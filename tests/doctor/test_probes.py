"""The probes on real files, locks, packs and rule caches: what they find, and that a dry run changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import attrs
import pytest

from edr import event as ev
from edr.config import load_config
from edr.detect.sigma import load_sigma
from edr.doctor import diagnose
from edr.doctor.diagnose import profile_of
from edr.doctor.facts import LOCK_FREE, LOCK_HELD
from edr.doctor.probes import (
    Probes,
    etw_settings,
    load_rules_readonly,
    probe_directory,
    probe_lock,
    probe_pack,
    probe_rule_path,
    probe_service,
)
from edr.rulepacks import install
from edr.rulepacks.store import CONTENT_DIR, PackStore
from tests.conftest import REPO
from tests.doctor.conftest import subprocess_env, write_config
from tests.rulepacks.packs import make_zip, sigmahq_like

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (to switch users, mount, and own files as the agent does)")


def test_a_missing_directory_is_reported_creatable_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "var" / "log" / "edr"
    facts = probe_directory("logging.directory", str(target), "the operational log")
    assert (facts.exists, facts.created, facts.problem) == (False, False, "")
    assert not (tmp_path / "var").exists()  # a dry run creates nothing
    created = probe_directory("logging.directory", str(target), "the operational log", create=True)
    assert created.created and not created.problem
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
    again = probe_directory("logging.directory", str(target), "the operational log")
    assert again.exists and not again.problem


def test_a_directory_others_can_write_is_refused_as_the_agent_would(tmp_path: Path) -> None:
    target = tmp_path / "alerts"
    target.mkdir()
    os.chmod(target, 0o775)
    facts = probe_directory("alerts.directory", str(target), "alerts")
    assert f"{target}: writable by its group (mode 0775): chmod go-w {target}" == facts.problem
    # under a directory others can write (no sticky bit), a missing one could not be created safely either
    os.chmod(target, 0o777)
    under = probe_directory("alerts.directory", str(target / "sub"), "alerts")
    # the message names the directory at fault, not only the fix
    assert not under.exists and under.problem.startswith(f"{target}: writable by")


def test_read_only_file_system(tmp_path: Path) -> None:
    """A real read-only mount, in a private mount namespace: the existing directory and one to create."""
    as_root()
    mnt = tmp_path / "ro"
    mnt.mkdir(mode=0o700)
    script = textwrap.dedent(f"""
        import json, os, subprocess
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", "{mnt}"], check=True)
        os.mkdir("{mnt}/logs", 0o700)
        subprocess.run(["mount", "-o", "remount,ro", "{mnt}"], check=True)
        from edr.doctor.probes import probe_directory
        print(json.dumps([probe_directory("logging.directory", p, "the log").problem
                          for p in ("{mnt}/logs", "{mnt}/new")]))
    """)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
                          capture_output=True, text=True, env=subprocess_env(), timeout=60)
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"no mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    existing, missing = json.loads(done.stdout)
    assert existing == "it is on a read-only file system"
    assert missing == f"it cannot be created: {mnt} is on a read-only file system"


def test_lock_free_then_held_by_a_real_agent_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert probe_lock(str(state)).state == LOCK_FREE  # no state directory: nobody ever ran here
    assert not state.exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom edr.instance_lock import acquire\n"
         f"lock = acquire({str(state)!r})\nprint('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        held = probe_lock(str(state))
        assert (held.state, held.holder) == (LOCK_HELD, holder.pid)
        # the probe's look did not take the lock from the holder
        assert probe_lock(str(state)).state == LOCK_HELD
    finally:
        holder.kill()
        holder.wait()
    assert probe_lock(str(state)).state == LOCK_FREE  # released when its holder died


def test_rule_paths(tmp_path: Path) -> None:
    missing = probe_rule_path("scanner.sigma_rules_path", str(tmp_path / "nope"), (".yml",))
    assert missing.problem == "does not exist" and "scanner.sigma_rules_path" in missing.fix
    rules = tmp_path / "rules"
    (rules / "linux").mkdir(parents=True)
    for name in ("a.yml", "b.yaml", "README.md"):
        (rules / "linux" / name).write_text("x")
    found = probe_rule_path("scanner.sigma_rules_path", str(rules), (".yml", ".yaml"))
    assert found.problem == "" and found.rule_files == 2 and found.is_dir


def test_a_rules_directory_another_user_cannot_read() -> None:
    """As ``nobody``, a rules directory under a 0700 directory of root's: the probe names it and the reason."""
    as_root()
    top = Path(tempfile.mkdtemp(prefix="edr-doctor-"))  # pytest's own directories are root's 0700
    try:
        os.chmod(top, 0o755)  # nobody may reach top, not what root keeps below it
        private = top / "private"
        (private / "sigma").mkdir(parents=True)
        (private / "sigma" / "r.yml").write_text("title: x\n")
        os.chmod(private, 0o700)
        script = (f"from edr.doctor.probes import probe_rule_path\n"
                  f"f = probe_rule_path('scanner.sigma_rules_path', {str(private / 'sigma')!r}, ('.yml',))\n"
                  "print(f.problem)")
        done = subprocess.run([*NOBODY, sys.executable, "-c", script], capture_output=True, text=True,
                              env=subprocess_env(), timeout=60, cwd="/")
    finally:
        shutil.rmtree(top)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("cannot be reached by uid 65534: Permission denied (a directory above it is "
                                   "not searchable)")


def test_pack_active_then_tampered(tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "edr", scanner={"sigma_rules_path": ["bundled", "pack"]})
    config = load_config(str(config_path), environ={}).config
    facts, paths = probe_pack(config)
    assert facts.used and facts.active is None and facts.installed == 0 and paths == []
    assert not Path(config.rules.store_directory).exists()  # looking created no store
    install(make_zip(tmp_path / "p.zip", sigmahq_like(3)), config.rules.store_directory, config.rules)
    facts, paths = probe_pack(config)
    assert facts.active is not None and facts.problem == "" and facts.rules == 4 and facts.installed == 1
    assert paths and all(Path(p).is_dir() for p in paths)
    # a rule file changed behind the store's back
    store = PackStore(config.rules.store_directory)
    victim = next((store.pack_dir(facts.active) / CONTENT_DIR).rglob("*.yml"))
    victim.write_bytes(victim.read_bytes() + b"# edited\n")
    tampered, paths = probe_pack(config)
    assert tampered.kind == "integrity" and "was modified after the pack was installed" in tampered.problem
    assert paths == []
    unused = load_config(str(write_config(tmp_path / "other")), environ={}).config
    assert probe_pack(unused)[0].used is False


def test_rules_are_read_from_the_agents_cache_which_is_never_written(tmp_path: Path) -> None:
    rules = [str(REPO / "rules" / "sigma")]
    cache = tmp_path / "cache"
    cold = load_rules_readonly(rules, placeholders={}, cache_dir=str(cache))
    assert not cold.report.cached and len(cold.rules) == 3
    assert not cache.exists()
    load_sigma(rules, placeholders={}, cache_dir=str(cache))  # the agent writes it
    written = sorted(os.listdir(cache))
    warm = load_rules_readonly(rules, placeholders={}, cache_dir=str(cache))
    assert warm.report.cached and [r.meta.rule_id for r in warm.rules] == [r.meta.rule_id for r in cold.rules]
    # a changed rule file: compiled again here, the stale cache left as it was
    copy = tmp_path / "sigma"
    shutil.copytree(rules[0], copy)
    load_sigma([str(copy)], placeholders={}, cache_dir=str(cache))
    before = {n: (cache / n).read_bytes() for n in os.listdir(cache)}
    next(copy.rglob("*.yml")).write_text(next(copy.rglob("*.yml")).read_text().replace("level: ", "level: low\n#"))
    changed = load_rules_readonly([str(copy)], placeholders={}, cache_dir=str(cache))
    assert not changed.report.cached
    assert {n: (cache / n).read_bytes() for n in os.listdir(cache)} == before
    assert set(written) <= set(before)


def test_service_without_systemd() -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here")
    loaded = load_config(None, environ={}, installed="/nonexistent/config.toml")
    facts = probe_service(loaded, "linux")
    assert facts.unavailable.startswith("no systemd here") and facts.status is None
    assert "issue #16" in probe_service(loaded, "windows").unavailable


def test_the_windows_checks_run_anywhere_and_follow_the_etw_settings(config_file: Path) -> None:
    """The doctor judges a Windows host's rules from the ``[etw]`` settings the ETW sensor runs with."""
    config = load_config(str(config_file)).config
    settings = etw_settings(config)
    profile = profile_of(config, "windows", Probes())
    assert (profile.platform, profile.sensor) == ("windows", "ETW")
    assert settings.providers and "Microsoft-Windows-Kernel-Process" in settings.providers
    creation = profile.routes[(ev.WINDOWS, ev.PROCESS_CREATION, None)]
    assert creation is not None and "Image" in creation
    # PE fields only when the sensor reads them (pefile importable, etw.pe_wait_ms > 0)
    assert ("Hashes" in creation) == Probes().pe_info(config) == (settings.pe_wait_ms > 0 and _has_pefile())
    no_pe = profile_of(config, "windows", attrs.evolve(Probes(), pe_info=lambda _config: False))
    assert "Hashes" not in (no_pe.routes[(ev.WINDOWS, ev.PROCESS_CREATION, None)] or ())
    # on Linux, the Windows host checks say what is missing instead of raising; the bundled (Linux) rules never fire
    report = diagnose(str(config_file), platform="windows").report
    failing = {c.id: c for c in report.failing()}
    assert {i: c.verdict.value for i, c in failing.items()} == {
        "host.pywintrace": "fail", "host.pywin32": "fail", "host.admin": "fail", "rules.sigma": "warn"}
    assert failing["host.admin"].found == "not Windows" and report.exit_code == 2
    assert failing["rules.sigma"].reason == "no Sigma rule can fire on windows"


def _has_pefile() -> bool:
    import importlib.util

    return importlib.util.find_spec("pefile") is not None
