"""Fixtures of the doctor's tests: configuration files whose every path is a private temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import REPO


def write_config(directory: Path, **sections: dict[str, Any]) -> Path:
    """A configuration file in ``directory`` (0700) writing only under it; ``sections`` override keys.

    Sigma loads the bundled rules (no rule pack), the state, cache, logs and
    alerts are subdirectories (missing until the agent or ``--create`` makes them).
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    doc: dict[str, dict[str, Any]] = {
        "agent": {"state_directory": "state"},
        "scanner": {"sigma_rules_path": ["bundled"]},
        "logging": {"directory": "logs"},
        "alerts": {"directory": "logs"},
        "events": {"directory": "logs"},
        "sigma": {"cache_dir": "cache"},
        "rules": {"store_directory": "packs"},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A configuration under ``tmp_path/edr`` with the defaults of :func:`write_config`."""
    return write_config(tmp_path / "edr")


def subprocess_env() -> dict[str, str]:
    """The environment of a doctor run as a subprocess: this checkout's code, no EDR__ overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDR")}
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
