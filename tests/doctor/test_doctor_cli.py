"""``edr doctor`` as a real subprocess: it passes on this host, and fails (exit 2, a named reason) when
tracefs is unmounted (for real, in a private mount namespace) or a rules directory cannot be read.

The command runs as ``python -m edr doctor`` (edr.cli calls :func:`edr.doctor.cli.run`); one test checks
that ``python -m edr.doctor`` is the same command.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from edr.doctor import Probes, diagnose
from edr.doctor.facts import RulePathFacts
from tests.conftest import ebpf_unavailable
from tests.doctor.conftest import subprocess_env, write_config

DOCTOR = [sys.executable, "-m", "edr", "doctor"]


def doctor(*args: str, wrap: list[str] | None = None, timeout: float = 240) -> tuple[int, str, str]:
    done = subprocess.run([*(wrap or []), *DOCTOR, *args], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout, cwd="/")
    return done.returncode, done.stdout, done.stderr


def checks(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["id"]: c for c in doc["checks"]}


@pytest.fixture
def sensor_host() -> None:
    reason = ebpf_unavailable()
    if reason:
        pytest.skip(f"the eBPF sensor cannot run here: {reason}")


def test_doctor_passes_on_this_host(sensor_host: None, config_file: Path) -> None:
    code, out, _err = doctor("--json", "--config", str(config_file))
    doc = json.loads(out)
    assert code == 0, [c for c in doc["checks"] if c["verdict"] != "pass"]
    assert doc["verdict"] == "pass" and doc["exit_code"] == 0 and doc["totals"]["fail"] == 0
    found = checks(doc)
    for id_ in ("host.kernel", "host.tracefs", "host.bcc", "host.kernel_headers", "host.privileges",
                "capabilities.CAP_BPF", "capabilities.CAP_PERFMON", "configuration.trust",
                "paths.agent.state_directory", "paths.logging.directory", "paths.instance_lock", "rules.sigma",
                "service.state"):
        assert found[id_]["verdict"] == "pass", found[id_]
    assert doc["rules"]["totals"] == {"can_fire": 3, "degraded": 0, "never": 0}  # the bundled Linux rules
    # a dry run: nothing the agent would create exists yet
    base = config_file.parent
    assert sorted(os.listdir(base)) == ["config.toml"]
    # asked to, it creates them as the agent would (0700), and still passes
    code, out, _err = doctor("--config", str(config_file), "--create")
    assert code == 0, out
    for name in ("state", "logs", "cache"):
        assert oct(os.stat(base / name).st_mode & 0o777) == "0o700"
    assert "verdict pass (exit 0)" in out and "\nHost\n" in out and "[PASS] tracefs: mounted at" in out


def _namespace_run(commands: str, config: Path) -> tuple[int, str, str]:
    """Run the doctor inside a private mount namespace after ``commands`` (a shell snippet)."""
    argv = " ".join(shlex.quote(a) for a in [*DOCTOR, "--json", "--config", str(config)])
    script = f"{commands}\nexec {argv}"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=subprocess_env(), timeout=240, cwd="/")
    if done.returncode not in (0, 1, 2) and "unshare" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    return done.returncode, done.stdout, done.stderr


def test_tracefs_unmounted_fails_with_exit_2_and_names_it(sensor_host: None, config_file: Path) -> None:
    # debugfs mounts tracefs again at /sys/kernel/debug/tracing on the next look (an automount), so debugfs goes
    # too: otherwise whatever looks there (the doctor, bcc) finds tracefs mounted again
    unmount = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; "
               "umount /sys/kernel/debug 2>/dev/null\n"
               "if [ -d /sys/kernel/tracing/events ] || [ -d /sys/kernel/debug/tracing/events ]; then "
               "echo 'tracefs still mounted' >&2; exit 99; fi")
    code, out, err = _namespace_run(unmount, config_file)
    assert code == 2, (code, err)
    doc = json.loads(out)
    tracefs = checks(doc)["host.tracefs"]
    assert tracefs["verdict"] == "fail" and doc["verdict"] == "fail"
    assert tracefs["reason"].startswith("tracefs is not mounted")
    assert "mount -t tracefs nodev /sys/kernel/tracing" in tracefs["fix"]
    assert [c["id"] for c in doc["checks"] if c["verdict"] == "fail"] == ["host.tracefs"]
    # the namespace was private: this host's tracefs is where it was
    assert os.path.isdir("/sys/kernel/tracing/events") or os.path.isdir("/sys/kernel/debug/tracing/events")


def test_an_unreadable_rules_directory_fails_with_exit_2_and_names_it(sensor_host: None, tmp_path: Path) -> None:
    """Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (as a hardened unit could run it) and a rules
    directory under a 0700 directory of another user's: the agent could not read it, the doctor says so."""
    other = tmp_path / "someone-elses"
    (other / "sigma").mkdir(parents=True)
    (other / "sigma" / "r.yml").write_text("title: x\n")
    os.chown(other, 65534, 65534)  # nobody
    os.chmod(other, 0o700)
    config = write_config(tmp_path / "edr", scanner={"sigma_rules_path": [str(other / "sigma")]})
    no_dac = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
              "--bounding-set=-dac_override,-dac_read_search"]
    code, out, err = doctor("--json", "--config", str(config), wrap=no_dac)
    assert code == 2, err
    doc = json.loads(out)
    failed = {c["id"]: c for c in doc["checks"] if c["verdict"] == "fail"}
    path_check = failed.pop(f"rules.path.scanner.sigma_rules_path:{other / 'sigma'}")
    assert path_check["reason"] == ("cannot be reached by uid 0: Permission denied (a directory above it is not "
                                    "searchable)")
    assert "scanner.sigma_rules_path" in path_check["fix"]
    # The Sigma loader rejects such a path, naming it, and the agent runs on the rest: the rule-path check
    # above is the only failure.
    assert set(failed) == set()
    assert checks(doc)["capabilities.CAP_DAC_READ_SEARCH"]["verdict"] == "warn"


def test_injected_unreadable_rules_probe_fails_the_report(sensor_host: None, config_file: Path) -> None:
    def unreadable(key: str, path: str, suffixes: tuple[str, ...]) -> RulePathFacts:
        return RulePathFacts(key, path, True, 0, f"cannot read {path} as uid 0: Permission denied", "chmod it")

    clean = diagnose(str(config_file))
    assert clean.report.exit_code == 0, clean.report.failing()
    broken = diagnose(str(config_file), probes=attrs.evolve(Probes(), rule_path=unreadable)).report
    assert broken.exit_code == 2
    assert {c.id.split(":")[0] for c in broken.failing()} == {
        "rules.path.scanner.sigma_rules_path", "rules.path.scanner.yara_rules_path", "rules.path.ioc.hashes_path",
        "rules.path.ioc.ips_path", "rules.path.ioc.domains_path", "rules.path.ioc.paths_regex_path",
        "rules.path.simple.rules_path"}
    assert all("Permission denied" in c.reason for c in broken.failing())


def _rule(directory: Path, name: str, logsource: str, detection: str) -> str:
    rule_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    (directory / f"{name}.yml").write_text(
        f"title: {name}\nid: {rule_id}\nstatus: test\nlevel: high\nlogsource:\n{logsource}\n"
        f"detection:\n{detection}")
    return rule_id


def test_rule_explains_one_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    windows = _rule(rules, "Whoami on Windows", "  product: windows\n  category: process_creation",
                    "  sel:\n    Image|endswith: '\\whoami.exe'\n    OriginalFileName: 'whoami.exe'\n"
                    "  condition: sel")
    hashes = _rule(rules, "Miner by hash or name", "  product: linux\n  category: process_creation",
                   "  hash:\n    Hashes|contains: 'SHA256=0123'\n  name:\n    Image|endswith: '/xmrig'\n"
                   "  condition: hash or name")
    config = write_config(tmp_path / "edr", scanner={"sigma_rules_path": [str(rules)]})

    code, out, _err = doctor("--config", str(config), "--rule", windows)
    assert code == 2
    assert "verdict:    never fires on this platform: logsource windows/process_creation/-: product 'windows'; " \
           "the eBPF sensor on linux produces 'linux' events only" in out
    assert "reads:      Image, OriginalFileName" in out

    code, out, _err = doctor("--config", str(config), "--rule", hashes, "--json")
    assert code == 1
    (doc,) = json.loads(out)["rules"]
    assert doc["verdict"] == "degraded" and doc["unfilled"] == ["Hashes"] and doc["filled"] == ["Image"]
    assert doc["reason"].startswith("reads Hashes, which the eBPF sensor never fills")
    assert doc["logsource"] == "linux/process_creation/-" and doc["routes"] == ["linux/process_creation/-"]

    code, out, err = doctor("--config", str(config), "--rule", "no-such-rule")
    assert code == 2 and "no loaded Sigma rule has the id or title 'no-such-rule' (2 rules loaded)" in err


def test_a_configuration_that_does_not_load_is_a_failed_check(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edr", scan={"workers": 0})
    code, out, _err = doctor("--json", "--config", str(config))
    assert code == 2
    (check,) = [c for c in json.loads(out)["checks"] if c["id"] == "configuration.load"]
    assert check["verdict"] == "fail" and "scan.workers" in check["reason"]
    # `python -m edr.doctor` is the same command
    done = subprocess.run([sys.executable, "-m", "edr.doctor", "--json", "--config", str(config)],
                          capture_output=True, text=True, env=subprocess_env(), timeout=240, cwd="/")
    assert done.returncode == 2 and json.loads(done.stdout)["checks"] == json.loads(out)["checks"]


def test_doctor_says_whether_a_cached_build_of_the_sensor_matches(sensor_host: None, config_file: Path) -> None:
    """bcc and the headers are only for compiling; the doctor reports the cached build (read, never written)."""
    from edr.config import load_config
    from edr.sources.ebpf import loader, objcache

    def row(doc: dict[str, Any]) -> dict[str, str]:
        return checks(doc)["host.compiled_sensor"]

    code, out, _err = doctor("--json", "--config", str(config_file))
    cold = row(json.loads(out))
    assert code == 0 and cold["verdict"] == "pass"
    assert "no cached build of the sensor for this kernel and configuration" in cold["found"]
    assert "the next start compiles it in a child" in cold["found"]
    assert "needed to compile the sensor when its cached build is missing or stale" in \
        checks(json.loads(out))["host.bcc"]["found"]
    config = load_config(str(config_file)).config
    cfg = config.sensor
    flags = loader.cflags(frozenset(cfg.families), cfg.max_args, cfg.max_arg_bytes, cfg.page_count)
    objcache.compiled_object(flags, config.sigma.cache_dir)
    code, out, _err = doctor("--json", "--config", str(config_file))
    warm = row(json.loads(out))
    assert code == 0 and warm["verdict"] == "pass"
    assert f"{Path(config.sigma.cache_dir) / objcache.CACHE_NAME} matches this kernel and configuration" in \
        warm["found"]
