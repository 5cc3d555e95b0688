"""The rule cache against a real unprivileged user: nothing nobody writes is loaded, and none of it runs.

As ``nobody`` (setpriv), a cache file is planted in every way nobody can
reach the cache of a root agent: a cache directory nobody owns, one anyone
may write (sticky or not), one nobody's group may write, a directory above
it nobody owns (the cache directory swapped for a link), and a cache file
nobody may overwrite in place (writable by others, or owned by nobody).
What is planted is a pickle that creates a marker file when unpickled (what
the pickled cache of earlier versions ran as root), or a well-formed cache
of this format that holds no rules (what would blind the agent). Then the
rules are loaded through ``load_sigma`` and through a real ``edr replay``:
the marker must not exist, the warning must name the cache file and why it
was ignored, and the rules must be compiled from source and fire.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edr.detect.sigma import load_sigma
from tests.detect.sigma.conftest import make_event
from tests.platform.test_posix_private_files import NOBODY, as_nobody

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")]

REPO = Path(__file__).resolve().parents[3]
RULES = str(REPO / "rules" / "sigma")
#: "User Discovery With Whoami From A Shell" in rules/sigma
WHOAMI = "4c2e9a71-5d83-4f6b-8e0a-2b7d9c1f3e45"
WHOAMI_FIELDS = {"Image": "/usr/bin/whoami", "ParentImage": "/bin/bash", "CommandLine": "whoami"}


class _CreatesMarker:
    """Unpickling this calls ``open(path, "w")``: the file appearing proves the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A root-owned 0755 directory other users can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="edr-cache-attack-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def cache_file_name(tmp: Path) -> str:
    """The name of the cache file ``load_sigma`` keeps for RULES (found by letting it write one)."""
    probe = tmp / "probe"
    load_sigma([RULES], cache_dir=str(probe))
    (name,) = [p.name for p in probe.iterdir()]
    shutil.rmtree(probe)
    return name


def pickle_payload(marker: Path) -> bytes:
    """A pickle that creates ``marker``; checked live here, on another marker, so the test can fail."""
    proof = marker.with_name(marker.name + ".proof")
    pickle.loads(pickle.dumps(_CreatesMarker(proof)))  # our own payload, run to prove that it works
    assert proof.exists()
    proof.unlink()
    return pickle.dumps(_CreatesMarker(marker))


def forged_payload() -> bytes:
    """A well-formed cache of this format for RULES that holds no rules (it would blind the agent)."""
    from edr.detect.sigma import cache, codec
    from edr.detect.sigma.ruleset import Sources

    config = cache.config_digest([RULES], None)
    payload = codec.Payload(config, cache.set_key(config, Sources.find([RULES])), (), (), ())
    return cache.pack(codec.encode(payload), cache.engine_digest())


def plant(tmp: Path, data: bytes) -> Path:
    """``data`` in a file anyone can read, for nobody to copy into place."""
    staged = tmp / "staged"
    staged.write_bytes(data)
    staged.chmod(0o644)
    return staged


# Each scenario gets nobody to put ``staged`` where the root agent will look for cache
# file ``name``, and returns (cache directory, words the warning must contain).
Scenario = Callable[[Path, str, Path], tuple[Path, str]]


def dir_owned_by_nobody(tmp: Path, name: str, staged: Path) -> tuple[Path, str]:
    cache = tmp / "cache"
    cache.mkdir()
    os.chown(cache, NOBODY, NOBODY)
    as_nobody("cp", str(staged), str(cache / name))
    return cache, "owned by nobody"


def _writable_dir(mode: int, group: int | None) -> Scenario:
    def scenario(tmp: Path, name: str, staged: Path) -> tuple[Path, str]:
        cache = tmp / "cache"
        cache.mkdir()
        if group is not None:
            os.chown(cache, 0, group)
        cache.chmod(mode)
        as_nobody("cp", str(staged), str(cache / name))
        return cache, "writable by"
    return scenario


def parent_owned_by_nobody(tmp: Path, name: str, staged: Path) -> tuple[Path, str]:
    parent = tmp / "parent"
    parent.mkdir()
    os.chown(parent, NOBODY, NOBODY)
    # nobody makes the cache directory a link to a directory of its own
    as_nobody("mkdir", str(parent / "mine"))
    as_nobody("cp", str(staged), str(parent / "mine" / name))
    as_nobody("ln", "-s", "mine", str(parent / "cache"))
    return parent / "cache", "nobody"


def _file_overwritable(make_it: Callable[[Path], None], reason: str) -> Scenario:
    def scenario(tmp: Path, name: str, staged: Path) -> tuple[Path, str]:
        cache = tmp / "cache"
        load_sigma([RULES], cache_dir=str(cache))  # root's own, sound cache file
        cache.chmod(0o755)
        make_it(cache / name)
        as_nobody("cp", str(staged), str(cache / name))  # overwritten in place: same inode, same owner
        return cache, reason
    return scenario


SCENARIOS: dict[str, Scenario] = {
    "cache directory owned by nobody": dir_owned_by_nobody,
    "world-writable cache directory": _writable_dir(0o777, None),
    "sticky world-writable cache directory": _writable_dir(0o1777, None),
    "cache directory writable by nobody's group": _writable_dir(0o770, NOBODY),
    "directory above the cache owned by nobody": parent_owned_by_nobody,
    "cache file writable by others": _file_overwritable(lambda f: f.chmod(0o666), "writable by"),
    "cache file owned by nobody": _file_overwritable(lambda f: os.chown(f, NOBODY, NOBODY), "owned by nobody"),
}


@pytest.mark.parametrize("kind", ["pickle", "forged"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_cache_planted_by_nobody_is_not_loaded_through_load_sigma(
        open_tmp: Path, scenario: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    marker = open_tmp / "marker"
    name = cache_file_name(open_tmp)
    staged = plant(open_tmp, pickle_payload(marker) if kind == "pickle" else forged_payload())
    cache, reason = SCENARIOS[scenario](open_tmp, name, staged)

    with caplog.at_level(logging.WARNING, logger="edr.detect.sigma.cache"):
        engine, report = load_sigma([RULES], cache_dir=str(cache))

    assert not marker.exists(), "the planted pickle ran"
    warnings = [r.getMessage() for r in caplog.records if "ignoring Sigma rule cache" in r.getMessage()]
    assert warnings, caplog.text
    assert str(cache / name) in warnings[0] and reason in warnings[0], warnings[0]
    assert "compiling the rules from source" in warnings[0]
    assert not report.cached and report.files_parsed == report.files == 3 and report.loaded == 3
    alerts = engine.match(make_event(WHOAMI_FIELDS, product="linux", service=None))
    assert [a.rule_id for a in alerts] == [WHOAMI]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_cache_planted_by_nobody_is_not_loaded_by_edr_replay(open_tmp: Path, scenario: str) -> None:
    marker = open_tmp / "marker"
    name = cache_file_name(open_tmp)
    cache, reason = SCENARIOS[scenario](open_tmp, name, plant(open_tmp, pickle_payload(marker)))
    work = open_tmp / "work"
    work.mkdir()
    (work / "edr.toml").write_text(
        f"[sigma]\ncache_dir = {json.dumps(str(cache))}\n[ioc]\nenabled = false\n[simple]\nenabled = false\n"
        f"[alerts]\ndirectory = \"alerts\"\n[logging]\ndirectory = \"logs\"\n")
    event = {"ts": 1_763_000_000.5, "seq": 1, "category": "process_creation", "product": "linux",
             "fields": WHOAMI_FIELDS}
    (work / "events.ndjson").write_text(json.dumps(event) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDR")}

    run = subprocess.run([sys.executable, "-m", "edr", "replay", "--config", "edr.toml", "--console",
                          "--no-progress", "--stdout", "--sigma", RULES, "events.ndjson"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    assert not marker.exists(), "the planted pickle ran"
    warning = next((line for line in run.stderr.splitlines() if "ignoring Sigma rule cache" in line), "")
    assert str(cache / name) in warning and reason in warning, run.stderr
    assert "compiling the rules from source" in warning
    alerts = [json.loads(line) for line in run.stdout.splitlines()]
    assert [a["rule.id"] for a in alerts] == [WHOAMI]


@pytest.mark.parametrize("scenario", ["cache file writable by others", "cache file owned by nobody"])
def test_refused_cache_file_in_a_private_directory_is_replaced_by_a_sound_one(open_tmp: Path, scenario: str) -> None:
    marker = open_tmp / "marker"
    name = cache_file_name(open_tmp)
    cache, _reason = SCENARIOS[scenario](open_tmp, name, plant(open_tmp, pickle_payload(marker)))
    load_sigma([RULES], cache_dir=str(cache))
    st = (cache / name).stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    _engine, report = load_sigma([RULES], cache_dir=str(cache))
    assert report.cached
    assert not marker.exists()


def test_forged_cache_would_blind_the_agent_if_it_were_trusted(tmp_path: Path) -> None:
    # The forged file of the tests above is a real threat, not a file any loader would refuse:
    # where root wrote it, it is loaded, and the agent has no rules.
    from edr.detect.sigma import cache as rule_cache
    from edr.detect.sigma.ruleset import Sources

    config = rule_cache.config_digest([RULES], None)
    name = rule_cache.file_name(config)
    assert Sources.find([RULES]).files  # the rules exist; the forged set just leaves them out
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    (directory / name).write_bytes(forged_payload())
    (directory / name).chmod(0o600)
    engine, report = load_sigma([RULES], cache_dir=str(directory))
    assert report.cached and engine.rules == []
