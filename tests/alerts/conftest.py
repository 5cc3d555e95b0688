"""Shared fixtures: a real alert file made by `edr replay` of recorded attacks, and chaining helpers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest

from edr.alerts.chain import AlertChain
from tests.conftest import shared_path


def clean_env() -> dict[str, str]:
    """The environment without any EDR configuration of the caller's."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("EDR")}


@pytest.fixture(scope="session")
def replay_alert_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real alert file: `edr replay --output` of the attack samples' Execution recordings with SigmaHQ.

    Made once per session in a temporary directory (its own rule cache),
    exactly as the writer writes it: chained.
    """
    samples = shared_path("evtx-attack-samples", "Execution")
    rules = shared_path("sigma", "rules", "windows", "process_creation")
    work = tmp_path_factory.mktemp("replay")
    (work / "edr.toml").write_text(
        f'[sigma]\ncache_dir = "{work / "cache"}"\n[ioc]\nenabled = false\n[simple]\nenabled = false\n'
        f'[alerts]\ndirectory = "{work / "logs"}"\n[logging]\ndirectory = "{work / "logs"}"\n'
    )
    r = subprocess.run([sys.executable, "-m", "edr", "replay", "--config", str(work / "edr.toml"), "--no-progress",
                        "--output", str(work / "logs"), "--sigma", str(rules), str(samples)], cwd=work,
                       env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    files = sorted((work / "logs").glob("alerts.json.*"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="session")
def replay_alert_lines(replay_alert_file: Path) -> list[bytes]:
    """The real alert file's lines with the writer's chain fields taken out, for tests to chain as they need."""
    lines = [unchained(line) for line in replay_alert_file.read_bytes().splitlines()]
    assert len(lines) >= 50, f"only {len(lines)} alerts"
    return lines


def unchained(line: bytes) -> bytes:
    """``line`` (one alert document) without its ``edr.chain.*`` keys, as an NDJSON line."""
    doc = {k: v for k, v in orjson.loads(line).items() if not k.startswith("edr.chain.")}
    return orjson.dumps(doc) + b"\n"


def chain_lines(lines: Iterable[bytes], chain: AlertChain) -> list[bytes]:
    """Seal each alert line's document with ``chain``, as the writer will."""
    return [chain.seal(orjson.loads(line)) for line in lines]


def write_lines(path: Path, lines: Iterable[bytes]) -> Path:
    """Write ``lines`` to ``path`` as they are."""
    path.write_bytes(b"".join(lines))
    return path
