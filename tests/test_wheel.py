"""An installed edr, not a checkout: a wheel built from the project, installed into a fresh venv and run from ``/``.

The venv gets the wheel itself (``pip install --no-deps``) and sees the
project's dependencies through a plain path entry to the test venv's
site-packages (and the system's, for bcc): plain entries do not run the
``.pth`` files there, so the checkout's editable install is not on the path
and every module, graph and bundled rule comes from the wheel.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, shared_path

pytestmark = pytest.mark.slow

MARKER_RULE = """\
title: Wheel marker exec
id: 0b1e1a2c-0000-4000-8000-00000000ee01
status: test
logsource: {product: linux, category: process_creation}
detection:
  sel: {Image|endswith: /edr-wheel-marker}
  condition: sel
level: high
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``edr`` executable of a fresh venv holding only the wheel."""
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "hatchling" in built.stderr and "Could not" in built.stderr:
        pytest.skip(f"cannot fetch the build backend here: {built.stderr[-500:]}")
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("edr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("edr/graphs/linux.toml", "edr/graphs/replay.toml", "edr/graphs/windows.toml",
                    "edr/rules/sigma/linux/", "edr/rules/edr-rules.toml", "edr/conf/config.toml"):
        assert any(n.startswith(shipped) for n in names), f"{shipped} is not in {wheel.name}"
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(purelib, "deps.pth").write_text("".join(f"{d}\n" for d in dict.fromkeys(deps) if "site" in d
                                                 or "dist-packages" in d))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import edr; print(edr.__file__)"], cwd="/", capture_output=True,
                           text=True, check=True, env=clean).stdout.strip()
    assert where.startswith(purelib) and not where.startswith(str(REPO)), where
    return venv / "bin" / "edr"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDR") and k != "PYTHONPATH"}
    # nothing of the installed layout on this machine: state, logs and the rule store are the test's
    env.update(EDR__AGENT__STATE_DIRECTORY=str(tmp / "state"), EDR__LOGGING__DIRECTORY=str(tmp / "logs"),
               EDR__ALERTS__DIRECTORY=str(tmp / "logs"), EDR__EVENTS__DIRECTORY=str(tmp / "logs"),
               EDR__SIGMA__CACHE_DIR=str(tmp / "cache"), EDR__RULES__STORE_DIRECTORY=str(tmp / "store"))
    env.update(extra)
    return env


def test_graph_config_and_replay_from_the_root_directory(installed: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    graph = subprocess.run([str(installed), "graph", "--mode", "linux"], cwd="/", env=env, capture_output=True,
                           text=True, timeout=60)
    assert graph.returncode == 0, graph.stderr
    assert "/edr/graphs/linux.toml" in graph.stdout and str(REPO) not in graph.stdout
    shown = subprocess.run([str(installed), "config", "show"], cwd="/", env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "/edr/rules/sigma" in shown.stdout and str(REPO) not in shown.stdout
    # the same recording gives the same alerts from the wheel as from the checkout
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in (
        {"ts": 1.7e9, "category": "network_connection", "product": "linux",
         "fields": {"ProcessId": 9, "Image": "/usr/bin/nc", "DestinationIp": "203.0.113.9", "DestinationPort": 4444,
                    "Initiated": "true"}},
        {"ts": 1.7e9 + 1, "category": "file_event", "product": "linux",
         "fields": {"ProcessId": 10, "Image": "/usr/bin/cp", "TargetFilename": "/etc/cron.d/evil"}})))

    def rules_fired(cmd: list[str], cwd: str) -> list[tuple[str, str]]:
        r = subprocess.run([*cmd, "replay", str(events)], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return sorted((a["rule.id"], a["rule.engine"]) for a in map(orjson.loads, r.stdout.splitlines()))

    from_wheel = rules_fired([str(installed)], "/")
    from_checkout = rules_fired([sys.executable, "-m", "edr"], str(REPO))
    assert from_wheel == from_checkout and len(from_wheel) >= 3, (from_wheel, from_checkout)


def test_rule_packs_from_an_installed_edr(installed: Path, tmp_path: Path) -> None:
    """rules install from a zip of SigmaHQ: active and loaded; a broken pack is refused and the first stays."""
    import shutil

    sigma = shared_path("sigma")
    env = _env(tmp_path)
    pack = Path(shutil.make_archive(str(tmp_path / "sigma_all_rules"), "zip", root_dir=sigma, base_dir="rules"))
    r = subprocess.run([str(installed), "rules", "install", str(pack), "--json"], cwd="/", env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    first = orjson.loads(r.stdout)
    assert first["loaded"] > 1000 and first["rejected"] == 0, first
    broken = tmp_path / "broken.zip"
    broken.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    r = subprocess.run([str(installed), "rules", "install", str(broken)], cwd="/", env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "broken.zip" in r.stderr, r.stderr
    listed = orjson.loads(subprocess.run([str(installed), "rules", "list", "--json"], cwd="/", env=env,
                                         capture_output=True, text=True, check=True, timeout=60).stdout)
    active = [p for p in listed["packs"] if p["active"]]
    assert len(active) == 1 and active[0]["id"] == first["pack_id"] == listed["active"], listed
    # what edr run and replay load: the bundled rules and the active pack, from the installed store
    check = subprocess.run([str(installed), "rules", "check", "--json"], cwd="/", env=env, capture_output=True,
                           text=True, timeout=900)
    assert check.returncode == 0, check.stderr
    report = orjson.loads(check.stdout)
    assert report["loaded"] == first["loaded"] + 3, (report["loaded"], first["loaded"])  # + the 3 bundled rules
    # and the live agent loads them from there too
    from tests.conftest import ebpf_unavailable

    if ebpf_unavailable() is not None:
        return
    import signal
    import time

    agent = subprocess.Popen([str(installed), "run", "--no-console"], cwd="/", env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        oplog = ""
        while time.monotonic() < deadline and "edr started" not in oplog:
            time.sleep(0.5)
            assert agent.poll() is None, agent.communicate()[1].decode()[-2000:]
            oplog = "".join(f.read_text() for f in (tmp_path / "logs").glob("edr.log.*"))
        assert "edr started" in oplog, oplog[-2000:]
        assert f"sigma: {report['loaded']} rules loaded" in oplog, oplog[-3000:]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    assert agent.returncode == 0
