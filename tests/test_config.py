"""Configuration layers, errors naming key and source, `edr config show|init`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from edr.config import Config, ConfigError, default_config, installed_layout, load_config, unstructure
from tests.cli_helpers import EDR, clean_env, run_edr


def test_defaults(workdir: Path) -> None:
    loaded = load_config(None, environ={}, installed=str(workdir / "absent.toml"))
    assert loaded.file is None
    assert loaded.config == default_config()
    assert loaded.sources == {}
    assert loaded.config.logging.level == "info"
    assert loaded.config.allowlist.paths is None


def test_file_over_defaults(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[logging]\nlevel = "debug"\n[alerts]\nfilename = "a.ndjson"\n')
    loaded = load_config(str(f), environ={})
    assert loaded.config.logging.level == "debug"
    assert loaded.config.alerts.filename == "a.ndjson"
    assert loaded.config.alerts.directory == installed_layout().logs  # untouched keys keep their defaults
    assert loaded.sources["logging.level"] == str(f)


def test_file_discovery_order(workdir: Path) -> None:
    installed = workdir / "etc" / "config.toml"  # stands for /etc/edr/config.toml
    installed.parent.mkdir()
    installed.write_text('[logging]\nlevel = "error"\n')
    (workdir / "env.toml").write_text('[logging]\nlevel = "warn"\n')
    (workdir / "flag.toml").write_text('[logging]\nlevel = "debug"\n')
    (workdir / "conf").mkdir()  # a config.toml in the working directory is not looked at
    (workdir / "conf" / "config.toml").write_text('[logging]\nlevel = "critical"\n')
    assert load_config(None, environ={}, installed=str(installed)).config.logging.level == "error"
    assert load_config(None, environ={}, installed=str(workdir / "absent")).config.logging.level == "info"
    assert load_config(None, environ={"EDR_CONFIG": "env.toml"}, installed=str(installed)).config.logging.level \
        == "warn"
    assert load_config("flag.toml", environ={"EDR_CONFIG": "env.toml"}).config.logging.level == "debug"
    assert installed_layout().config_file == "/etc/edr/config.toml"


def test_env_over_file_and_cli_over_env(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[logging]\nlevel = "debug"\nconsole_output = false\n')
    env = {"EDR__LOGGING__LEVEL": "error", "EDR__LOGGING__CONSOLE_OUTPUT": "true"}
    loaded = load_config(str(f), environ=env)
    assert loaded.config.logging.level == "error"
    assert loaded.config.logging.console_output is True
    assert loaded.sources["logging.level"] == "environment variable EDR__LOGGING__LEVEL"
    loaded = load_config(str(f), environ=env, overrides={"logging.level": "warn"})
    assert loaded.config.logging.level == "warn"
    assert loaded.sources["logging.level"] == "command line"
    assert loaded.config.logging.console_output is True


def test_env_values_are_toml(workdir: Path) -> None:
    env = {"EDR__ALLOWLIST__PATHS": '["/usr/bin/"]', "EDR__PIPELINE__BATCH_SIZE": "64",
           "EDR__SCAN__TIMEOUT_SECS": "2.5", "EDR__LOGGING__DIRECTORY": "/var/log/edr",
           "EDR__PIPELINE__CAPACITIES": '{ "router.bulk->enricher.in" = 32 }'}
    cfg = load_config(None, environ=env).config
    assert cfg.allowlist.paths == ["/usr/bin/"]
    assert cfg.trusted_paths(None) == ["/usr/bin/"]
    assert cfg.trusted_paths(["/opt/"]) == ["/opt/"]
    assert cfg.pipeline.batch_size == 64
    assert cfg.scan.timeout_secs == 2.5
    assert cfg.logging.directory == "/var/log/edr"  # a bare word is a string
    assert cfg.pipeline.capacities == {"router.bulk->enricher.in": 32}


def test_union_value_from_file_and_env(workdir: Path) -> None:
    # scanner.sigma_rules_path is str | list[str]: both forms load (regression: cattrs cannot structure it).
    f = workdir / "c.toml"
    f.write_text('[scanner]\nsigma_rules_path = "rules/sigma"\n')
    assert load_config(str(f), environ={}).config.sigma_paths() == [str(workdir / "rules" / "sigma")]
    env = {"EDR__SCANNER__SIGMA_RULES_PATH": '["a", "b"]'}
    assert load_config(None, environ=env).config.sigma_paths() == [str(workdir / "a"), str(workdir / "b")]
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"EDR__SCANNER__SIGMA_RULES_PATH": "[1]"})
    assert info.value.key == "scanner.sigma_rules_path"


def test_unknown_key_names_key_and_file(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[alerts]\nfromat = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(f), environ={})
    assert info.value.key == "alerts.fromat"
    assert "alerts.fromat" in str(info.value) and str(f) in str(info.value)
    f.write_text('[alert]\nformat = "x"\n')
    with pytest.raises(ConfigError, match=r"configuration alert \(from .*c\.toml\): unknown key"):
        load_config(str(f), environ={})
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"EDR__ALERTS__FROMAT": "x"})
    assert info.value.key == "alerts.fromat" and "EDR__ALERTS__FROMAT" in str(info.value)


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({"EDR__PIPELINE__BATCH_SIZE": "big"}, "pipeline.batch_size", "expected an integer"),
        ({"EDR__PIPELINE__BATCH_SIZE": "true"}, "pipeline.batch_size", "expected an integer"),
        ({"EDR__LOGGING__CONSOLE_OUTPUT": "1"}, "logging.console_output", "expected true or false"),
        ({"EDR__ALLOWLIST__PATHS": "/usr/bin/"}, "allowlist.paths", "expected a list"),
        ({"EDR__ALLOWLIST__PATHS": "[1, 2]"}, "allowlist.paths", "expected a string"),
        ({"EDR__LOGGING__LEVEL": "loud"}, "logging.level", "must be one of"),
        ({"EDR__PIPELINE__BATCH_SIZE": "0"}, "pipeline.batch_size", "greater than 0"),
    ],
)
def test_wrong_env_value_names_key_and_variable(workdir: Path, env: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=env)
    var = next(iter(env))
    assert info.value.key == key
    assert info.value.source == f"environment variable {var}"
    assert key in str(info.value) and var in str(info.value) and words in str(info.value)


def test_wrong_file_value_names_key_and_file(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[logging]\nconsole_output = "yes"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(f), environ={})
    assert info.value.key == "logging.console_output" and info.value.source == str(f)
    f.write_text("logging = 3\n")
    with pytest.raises(ConfigError, match="expected a"):
        load_config(str(f), environ={})
    with pytest.raises(ConfigError, match="EDR__ONLYONE"):
        load_config(None, environ={"EDR__ONLYONE": "1"})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(workdir / "missing.toml"), environ={})


def _show(workdir: Path, *args: str, **env: str) -> tuple[dict, str]:
    r = run_edr(["config", "show", *args], cwd=workdir, env=clean_env(**env))
    assert r.returncode == 0, r.stderr
    return tomllib.loads(r.stdout), r.stdout


def _line(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{key} = "))


def test_config_show_layers(workdir: Path) -> None:
    data, text = _show(workdir)
    assert data["logging"]["level"] == "info" and _line(text, "level").endswith("# default")
    f = workdir / "c.toml"
    f.write_text('[logging]\nlevel = "debug"\n[alerts]\nfilename = "x.json"\n')
    data, text = _show(workdir, "--config", str(f))
    assert data["logging"]["level"] == "debug" and _line(text, "level").endswith(f"# {f}")
    data, text = _show(workdir, "--config", str(f), EDR__LOGGING__LEVEL="error")
    assert data["logging"]["level"] == "error"
    assert _line(text, "level").endswith("# environment variable EDR__LOGGING__LEVEL")
    data, text = _show(workdir, "--config", str(f), "--log-level", "warn", "--console", EDR__LOGGING__LEVEL="error")
    assert data["logging"]["level"] == "warn" and _line(text, "level").endswith("# command line")
    assert data["logging"]["console_output"] is True
    assert data["alerts"]["filename"] == "x.json"
    data, _ = _show(workdir, EDR_CONFIG=str(f))
    assert data["logging"]["level"] == "debug"


def test_config_show_round_trips(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[logging]\nlevel = "debug"\n[pipeline]\ncapacities = { "router.bulk->enricher.in" = 32 }\n'
                 '[sigma]\nplaceholders = { admins = ["root", "admin"] }\n')
    env = {"EDR__ALLOWLIST__PATHS": '["/usr/bin/", "/opt/app/"]',
           "EDR__SCANNER__SIGMA_RULES_PATH": '["rules/a", "rules/b"]', "EDR__SCAN__TIMEOUT_SECS": "2.5"}
    data, text = _show(workdir, "--config", str(f), "--console", **env)
    expected = load_config(str(f), environ=env, overrides={"logging.console_output": True}).config
    back = workdir / "back.toml"
    back.write_text(text)
    again = load_config(str(back), environ={})
    assert again.config == expected
    assert unstructure(again.config) == data  # what was printed is what loads
    assert again.config.allowlist.paths == ["/usr/bin/", "/opt/app/"]
    assert again.config.sigma.placeholders == {"admins": ["root", "admin"]}


def test_config_show_error_exit(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[alerts]\nfromat = "x"\n')
    r = run_edr(["config", "show", "--config", str(f)], cwd=workdir)
    assert r.returncode == 2
    assert "alerts.fromat" in r.stderr and str(f) in r.stderr
    r = run_edr(["config", "show"], cwd=workdir, env=clean_env(EDR__PIPELINE__BATCH_SIZE="big"))
    assert r.returncode == 2
    assert "pipeline.batch_size" in r.stderr and "EDR__PIPELINE__BATCH_SIZE" in r.stderr


def test_config_init_writes_the_defaults(workdir: Path) -> None:
    path = workdir / "etc" / "edr.toml"
    r = run_edr(["config", "init", str(path)], cwd=workdir)
    assert r.returncode == 0, r.stderr
    loaded = load_config(str(path), environ={})
    assert loaded.config == default_config()
    text = path.read_text()
    # documented: every key appears with a comment line above it
    for section, body in unstructure(Config()).items():
        assert f"[{section}]" in text
        for key in body:
            assert f"\n{key} = " in text
    r = run_edr(["config", "init", str(path)], cwd=workdir)
    assert r.returncode == 2 and "exists" in r.stderr
    assert run_edr(["config", "init", "--force", str(path)], cwd=workdir).returncode == 0


# --- floats: finite and in range ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "+inf", "-nan"])
@pytest.mark.parametrize("key", ["scan.timeout_secs", "agent.stop_timeout_secs", "scan.settle_secs"])
def test_non_finite_float_from_the_file_is_rejected(workdir: Path, key: str, text: str) -> None:
    section, name = key.split(".")
    f = workdir / "c.toml"
    f.write_text(f"[{section}]\n{name} = {text}\n")  # TOML's own inf/nan literals
    with pytest.raises(ConfigError) as info:
        load_config(str(f), environ={})
    assert info.value.key == key and info.value.source == str(f)
    assert "must be a finite number" in str(info.value) and key in str(info.value) and str(f) in str(info.value)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan"])
def test_non_finite_float_from_the_environment_is_rejected(workdir: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"EDR__SCAN__TIMEOUT_SECS": text})
    assert info.value.key == "scan.timeout_secs"
    assert info.value.source == "environment variable EDR__SCAN__TIMEOUT_SECS"
    assert "must be a finite number" in str(info.value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_float_from_the_command_line_is_rejected(workdir: Path, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, overrides={"agent.stop_timeout_secs": value})
    assert info.value.key == "agent.stop_timeout_secs" and info.value.source == "command line"


@pytest.mark.parametrize(("key", "value", "ok"), [
    ("scan.timeout_secs", "0", False), ("scan.timeout_secs", "-1", False), ("scan.timeout_secs", "1e300", False),
    ("scan.timeout_secs", "3601", False), ("scan.timeout_secs", "3600", True), ("scan.timeout_secs", "0.5", True),
    ("agent.stop_timeout_secs", "0", False), ("agent.stop_timeout_secs", "1e9", False),
    ("agent.stop_timeout_secs", "2", True), ("scan.settle_secs", "0", True), ("scan.settle_secs", "-0.1", False),
])
def test_float_range(workdir: Path, key: str, value: str, ok: bool) -> None:
    var = "EDR__" + key.upper().replace(".", "__")
    if ok:
        section, name = key.split(".")
        assert getattr(getattr(load_config(None, environ={var: value}).config, section), name) == float(value)
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={var: value})
    assert info.value.key == key and var in str(info.value) and "at most 3600 seconds" in str(info.value)


def test_inf_timeout_exits_2_naming_key_and_variable(workdir: Path) -> None:
    """The review's case: EDR__SCAN__TIMEOUT_SECS=inf silently disabled every YARA scan."""
    r = run_edr(["config", "show"], cwd=workdir, env=clean_env(EDR__SCAN__TIMEOUT_SECS="inf"))
    assert r.returncode == 2, r.stderr
    assert "scan.timeout_secs" in r.stderr and "EDR__SCAN__TIMEOUT_SECS" in r.stderr and "finite" in r.stderr
    assert "Traceback" not in r.stderr


# --- a configuration path that is not a readable UTF-8 TOML file ------------------------------------------------


def _expect_file_error(path: Path, words: str, cwd: Path) -> None:
    """In process and through the CLI: a ConfigError naming the path and the problem; exit 2, no traceback."""
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert info.value.source == str(path) and words in str(info.value), str(info.value)
    assert str(info.value).startswith(f"configuration file {path}: ")
    for command in (["config", "show"], ["replay", "--no-progress", str(cwd / "none.ndjson")]):
        r = run_edr([*command, "--config", str(path)], cwd=cwd, timeout=30)
        assert r.returncode == 2, (command, r.stderr)
        assert str(path) in r.stderr and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_config_path_that_is_a_directory(workdir: Path) -> None:
    (workdir / "conf.d").mkdir()
    _expect_file_error(workdir / "conf.d", "is a directory, not a regular file", workdir)


def test_config_path_that_is_a_fifo_is_refused_without_blocking(workdir: Path) -> None:
    fifo = workdir / "edr.toml.fifo"
    os.mkfifo(fifo)
    # no writer ever opens it: opening it for reading would wait forever (run_edr's timeout would fail the test)
    _expect_file_error(fifo, "is a FIFO (named pipe), not a regular file", workdir)


def test_default_config_path_that_is_a_fifo_is_reported_not_ignored(workdir: Path) -> None:
    fifo = workdir / "etc" / "config.toml"  # stands for /etc/edr/config.toml
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"etc/config\.toml.*FIFO"):
        load_config(None, environ={}, installed=str(fifo))


def test_config_path_that_is_not_utf8(workdir: Path) -> None:
    f = workdir / "latin1.toml"
    f.write_bytes(b'[logging]\nlevel = "info"\n# caf\xe9\n')
    _expect_file_error(f, "is not UTF-8 text (line 3", workdir)


def test_config_path_that_is_not_toml(workdir: Path) -> None:
    f = workdir / "bad.toml"
    f.write_text("[logging\nlevel = 'info'\n")
    _expect_file_error(f, "invalid TOML", workdir)


def test_config_path_that_does_not_exist(workdir: Path) -> None:
    _expect_file_error(workdir / "absent.toml", "file not found", workdir)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_config_file_unreadable_as_nobody(tmp_path: Path) -> None:
    """A 0600 root file read by `nobody`: a named error, exit 2, not a traceback."""
    work = Path(tempfile.mkdtemp(prefix="edr-conf-"))
    try:
        work.chmod(0o755)
        f = work / "edr.toml"
        f.write_text('[logging]\nlevel = "info"\n')
        f.chmod(0o600)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            *EDR, "config", "show", "--config", str(f)],
                           cwd=work, capture_output=True, text=True, timeout=60,
                           env=clean_env(PYTHONPATH=os.environ.get("PYTHONPATH", "")))
        assert r.returncode == 2, r.stderr
        assert f"configuration file {f}: cannot be read (Permission denied)" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        shutil.rmtree(work)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_config_file_mode_000_as_a_user(workdir: Path) -> None:
    f = workdir / "locked.toml"
    f.write_text('[logging]\nlevel = "info"\n')
    f.chmod(0)
    _expect_file_error(f, "cannot be read (Permission denied)", workdir)
