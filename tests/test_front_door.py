"""The front door: README and conf/config.toml match the code, graphs validate, `edr run` explains itself."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from edr.config import Config, default_config, load_config, unstructure
from edr.wiring.graphs import mode_graph
from tests.conftest import REPO

EDR = [sys.executable, "-m", "edr"]


def test_readme_and_config_file_are_generated_from_the_code() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _gen_readme():
    spec = importlib.util.spec_from_file_location("gen_readme", REPO / "scripts" / "gen_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_states_the_sigmahq_rules_check() -> None:
    """The generated SigmaHQ table is there, with its totals and zero compile failures."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"<!-- BEGIN rules-check -->\n(.*?)<!-- END rules-check -->", text, re.S)
    assert section, "README.md has no rules-check section"
    assert re.search(r"Loaded \*\*[\d,]+\*\*, inert \*\*[\d,]+\*\*, rejected \*\*\d+\*\*, "
                     r"compile failures \*\*0\*\*", section.group(1))
    assert "logsource (product/category/service)" in section.group(1)
    assert "compile failures: 0" in section.group(1)


def test_plain_gen_readme_leaves_the_rules_check_section_alone() -> None:
    """Without --rules-check (CI, no ../shared) the section is kept byte for byte; no rule load."""
    gen = _gen_readme()
    text = (REPO / "README.md").read_text()
    kept = re.sub(r"(<!-- BEGIN rules-check -->\n).*?(<!-- END rules-check -->)",
                  lambda m: m.group(1) + "anything at all\n" + m.group(2), text, flags=re.S)
    assert "<!-- BEGIN rules-check -->\nanything at all\n<!-- END rules-check -->" in gen.render(kept)
    assert "rules-check" not in gen.sections()


def test_rules_check_flag_without_sigmahq_exits_2(tmp_path, monkeypatch, capsys) -> None:
    gen = _gen_readme()
    monkeypatch.setattr(gen, "SIGMAHQ", tmp_path / "absent")
    monkeypatch.setattr(sys, "argv", ["gen_readme.py", "--check", "--rules-check"])
    assert gen.main() == 2
    assert "not found" in capsys.readouterr().err


def test_shipped_config_is_the_defaults() -> None:
    loaded = load_config(str(REPO / "conf" / "config.toml"), environ={})
    assert unstructure(loaded.config) == unstructure(default_config())
    with open(REPO / "conf" / "config.toml", "rb") as fh:
        assert set(tomllib.load(fh)) == {f for f in unstructure(Config())}


@pytest.mark.parametrize("mode", ["linux", "replay"])
def test_shipped_graphs_validate(mode: str) -> None:
    graph = mode_graph(mode)
    assert graph.actors and graph.edges
    r = subprocess.run([*EDR, "graph", "--mode", mode, "--format", "mermaid"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flowchart LR")


def test_alert_edges_never_drop() -> None:
    for mode in ("linux", "replay"):
        for edge in mode_graph(mode).edges:
            if edge.dst.startswith("alerts."):
                assert edge.policy.value == "block", edge.name


@pytest.mark.root
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
