"""Configuration layers, errors naming key and source, `edr config show|init`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edr.config import Config, ConfigError, load_config, unstructure

from .conftest import clean_env, run_edr


def test_defaults(workdir: Path) -> None:
    loaded = load_config(None, environ={})
    assert loaded.file is None
    assert loaded.config == Config()
    assert loaded.sources == {}
    assert loaded.config.logging.level == "info"
    assert loaded.config.allowlist.paths is None


def test_file_over_defaults(workdir: Path) -> None:
    f = workdir / "c.toml"
    f.write_text('[logging]\nlevel = "debug"\n[alerts]\nfilename = "a.ndjson"\n')
    loaded = load_config(str(f), environ={})
    assert loaded.config.logging.level == "debug"
    assert loaded.config.alerts.filename == "a.ndjson"
    assert loaded.config.alerts.directory == "logs"  # untouched keys keep their defaults
    assert loaded.sources["logging.level"] == str(f)


def test_file_discovery_order(workdir: Path) -> None:
    (workdir / "conf").mkdir()
    (workdir / "conf" / "config.toml").write_text('[logging]\nlevel = "error"\n')
    (workdir / "env.toml").write_text('[logging]\nlevel = "warn"\n')
    (workdir / "flag.toml").write_text('[logging]\nlevel = "debug"\n')
    assert load_config(None, environ={}).config.logging.level == "error"
    assert load_config(None, environ={"EDR_CONFIG": "env.toml"}).config.logging.level == "warn"
    assert load_config("flag.toml", environ={"EDR_CONFIG": "env.toml"}).config.logging.level == "debug"


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
    assert load_config(str(f), environ={}).config.sigma_paths() == ["rules/sigma"]
    env = {"EDR__SCANNER__SIGMA_RULES_PATH": '["a", "b"]'}
    assert load_config(None, environ=env).config.sigma_paths() == ["a", "b"]
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
    assert loaded.config == Config()
    text = path.read_text()
    # documented: every key appears with a comment line above it
    for section, body in unstructure(Config()).items():
        assert f"[{section}]" in text
        for key in body:
            assert f"\n{key} = " in text
    r = run_edr(["config", "init", str(path)], cwd=workdir)
    assert r.returncode == 2 and "exists" in r.stderr
    assert run_edr(["config", "init", "--force", str(path)], cwd=workdir).returncode == 0
