"""The front door: README and conf/config.toml match the code, graphs validate, `edr run` explains itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from edr.config import Config, load_config, unstructure
from edr.runtime.graph import graph_path, load_graph
from tests.conftest import REPO

EDR = [sys.executable, "-m", "edr"]


def test_readme_and_config_file_are_generated_from_the_code() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shipped_config_is_the_defaults() -> None:
    loaded = load_config(str(REPO / "conf" / "config.toml"), environ={})
    assert unstructure(loaded.config) == unstructure(Config())
    with open(REPO / "conf" / "config.toml", "rb") as fh:
        assert set(tomllib.load(fh)) == {f for f in unstructure(Config())}


@pytest.mark.parametrize("mode", ["linux", "replay"])
def test_shipped_graphs_validate(mode: str) -> None:
    graph = load_graph(graph_path(mode))
    assert graph.actors and graph.edges
    r = subprocess.run([*EDR, "graph", "--mode", mode, "--format", "mermaid"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flowchart LR")


def test_alert_edges_never_drop() -> None:
    for mode in ("linux", "replay"):
        for edge in load_graph(graph_path(mode)).edges:
            if edge.dst.startswith("alerts."):
                assert edge.policy.value == "block", edge.name


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_run_without_root_says_what_is_missing(tmp_path) -> None:
    os.chmod(tmp_path, 0o777)
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *EDR, "run", "--no-console"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "needs root" in r.stderr and "sudo" in r.stderr
