"""The replay fuzzer: a short run finds nothing, and the harness does report (and keep) what crashes."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.cli_helpers import clean_env
from tests.conftest import REPO, shared_path

SCRIPT = REPO / "scripts" / "fuzz_replay.py"
FORMATS = ("evtx", "evtx_json", "ndjson", "ebpf", "dns")


def test_a_short_fuzz_run_finds_no_crash(tmp_path: Path) -> None:
    shared = shared_path()
    r = subprocess.run([sys.executable, str(SCRIPT), "--seconds", "5", "--seed", "12", "--out", str(tmp_path),
                        "--shared", str(shared)], capture_output=True, text=True, timeout=300, env=clean_env())
    report = r.stdout + r.stderr
    assert r.returncode == 0, report
    tried = {cols[0]: int(cols[1]) for cols in map(str.split, r.stdout.splitlines()) if cols and cols[0] in FORMATS}
    assert set(tried) == set(FORMATS) and all(n > 0 for n in tried.values()), report
    assert "crashes (failed actors, escaped exceptions, raising decoders/parsers, hangs): 0" in r.stdout
    assert "other findings: 0" in r.stdout
    assert not list(tmp_path.glob("findings/*"))


@pytest.fixture
def fuzz() -> Iterator[ModuleType]:
    """The script as a module; the "edr" logger it takes over is given back afterwards."""
    spec = importlib.util.spec_from_file_location("fuzz_replay", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    edr_log = logging.getLogger("edr")
    saved = (edr_log.handlers[:], edr_log.propagate, edr_log.level)
    yield module
    edr_log.handlers[:], edr_log.propagate, edr_log.level = saved


def _crash_the_normalizer(monkeypatch: pytest.MonkeyPatch) -> None:
    from edr.sources.replay.normalizer import NdjsonLines, Normalizer

    decode = Normalizer.decode

    def crashing(self: Normalizer, batch: Any) -> Any:
        if type(batch) is NdjsonLines and batch.path.endswith("input.ndjson"):
            raise RuntimeError("planted crash")
        return decode(self, batch)

    monkeypatch.setattr(Normalizer, "decode", crashing)


def _break_the_windows_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import edr.sources.replay.normalizer as stages

    def broken(record: Any, path: str, number: int) -> Any:
        raise RuntimeError("planted bug")

    monkeypatch.setitem(stages.DECODERS, "evtx_json", broken)


@pytest.mark.parametrize(("plant", "fmt", "kind", "saved"), [
    (_crash_the_normalizer, "ndjson", "actor-failed", "input.ndjson"),
    (_break_the_windows_decoder, "evtx_json", "contained-exception", "input.json"),
])
def test_the_harness_reports_and_keeps_what_crashes(fuzz: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], plant: Any, fmt: str,
                                                    kind: str, saved: str) -> None:
    plant(monkeypatch)
    code = fuzz.main(["--iterations", "3", "--formats", fmt, "--seed", "5", "--out", str(tmp_path), "--shared",
                      str(tmp_path / "absent")])  # generated seeds are enough here
    assert code == 1
    found = sorted((tmp_path / "findings").iterdir())
    assert found and all(kind in d.name for d in found if "sentinel" not in d.name)
    first = next(d for d in found if kind in d.name)
    assert (first / saved).stat().st_size > 0
    text = (first / "finding.txt").read_text()
    assert "planted" in text and f"--seed 5 --iteration {int(first.name.split('-')[0])} --formats {fmt}" in text
    assert kind.replace("-", " ") in capsys.readouterr().out


def test_a_hang_stops_the_fuzzer_and_leaves_its_input(tmp_path: Path) -> None:
    """In a subprocess: the planted decoder spins (as a native parser holding the GIL would)."""
    driver = f"""
import importlib.util, sys
import edr.sources.replay.normalizer as stages

def spin(record, path, number):
    while True:
        pass

stages.DECODERS["evtx_json"] = spin
spec = importlib.util.spec_from_file_location("fuzz_replay", {str(SCRIPT)!r})
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)
sys.exit(fuzz.main(["--iterations", "3", "--formats", "evtx_json", "--seed", "5", "--timeout", "3",
                    "--out", {str(tmp_path)!r}, "--shared", {str(tmp_path / "absent")!r}]))
"""
    r = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 1, r.stdout + r.stderr
    (hang,) = (tmp_path / "findings").iterdir()  # the first record that reached the decoder
    assert hang.name.endswith("-evtx_json-hang")
    assert (hang / "input.json").stat().st_size > 0
    iteration = int(hang.name.split("-")[0])
    assert f"--seed 5 --iteration {iteration} --formats evtx_json" in (hang / "finding.txt").read_text()
    assert 'in spin' in (hang / "tracebacks.txt").read_text()
