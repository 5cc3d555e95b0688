"""Progress on a terminal, and none off it: the rule compile, ``rules check``, ``rules install``, ``replay``.

The terminal is a real pseudo-terminal (:mod:`pty`) on the command's
standard error; off a terminal, standard error is a pipe, or a terminal of
a process that systemd supervises (``NOTIFY_SOCKET``).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from edr import progress
from edr.detect.sigma.logsources import ALL_FED
from edr.detect.sigma.ruleset import build_ruleset
from tests.cli_helpers import clean_env
from tests.conftest import shared_path

#: tqdm's bar of the rule compile, ending at the number of files (e.g. "compiling Sigma rules: 100%|...| 80/80")
COMPILE_BAR = "compiling Sigma rules: 100%"


def rule_dir(tmp_path: Path, count: int = 80) -> Path:
    """``count`` SigmaHQ rule files (enough for the pool of workers) in a directory of their own."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for source in sorted(shared_path("sigma", "rules", "windows", "process_creation").glob("*.yml"))[:count]:
        shutil.copy(source, rules / source.name)
    return rules


def run_on(terminal: bool, args: list[str], cwd: Path, env: dict[str, str],
           size: tuple[int, int] | None = (24, 100)) -> tuple[int, str, str]:
    """Run ``edr ARGS`` with standard error on a new pseudo-terminal (or a pipe); (exit code, stdout, stderr).

    The terminal has ``size`` (rows, columns); None: it reports none, as a serial console.
    """
    command = [sys.executable, "-m", "edr", *args]
    if not terminal:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr
    controller, terminal_end = pty.openpty()
    if size is not None:
        fcntl.ioctl(terminal_end, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=terminal_end,
                                stdin=subprocess.DEVNULL)
    finally:
        os.close(terminal_end)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every process holding the terminal closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=60), stdout, b"".join(chunks).decode(errors="replace")


def redrawn(terminal_output: str) -> bool:
    """Whether a line was drawn again in place (a carriage return the terminal did not add to a newline)."""
    return re.search("\r(?!\n)", terminal_output) is not None


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "edr.toml").write_text('[ioc]\nenabled = false\n[sigma]\ncache_dir = "cache"\n')
    return clean_env(EDR_CONFIG=str(tmp_path / "edr.toml"))


def test_rules_check_shows_the_compile_on_a_terminal_only(tmp_path: Path, env: dict[str, str]) -> None:
    rules = rule_dir(tmp_path)
    code, out, err = run_on(True, ["rules", "check", str(rules)], tmp_path, env)
    assert code == 0, err
    assert COMPILE_BAR in err and "80/80" in err
    assert redrawn(err)
    assert "process_creation" in out  # the report itself is unchanged, on standard output

    code, out, err = run_on(False, ["rules", "check", str(rules)], tmp_path, env)
    assert code == 0, err
    assert "compiling" not in err and "\r" not in err and "%|" not in err
    assert "process_creation" in out

    # a terminal that reports no size (a serial console) gets a bar of 80 columns
    code, out, err = run_on(True, ["rules", "check", str(rules)], tmp_path, env, size=None)
    assert code == 0 and COMPILE_BAR in err and "80/80" in err

    # --json: nothing but the document, even on a terminal
    code, out, err = run_on(True, ["rules", "check", "--json", str(rules)], tmp_path, env)
    assert code == 0 and "compiling" not in err and out.lstrip().startswith("{")


def test_replay_shows_the_cold_compile_and_the_replay_on_a_terminal_only(tmp_path: Path, env: dict[str, str]) -> None:
    rules = rule_dir(tmp_path)
    samples = sorted(shared_path("evtx-attack-samples", "Execution").glob("*.evtx"))[:8]
    args = ["replay", "--sigma", str(rules), *map(str, samples)]
    code, _out, err = run_on(True, args, tmp_path, env)
    assert code == 0, err
    assert COMPILE_BAR in err  # a cold cache: the rules are compiled
    assert "replaying: 100%" in err
    assert "replay: 8 file(s)" in err  # the summary follows the bar

    # warm: nothing to compile, so no compile bar; the replay's bar still
    code, _out, err = run_on(True, args, tmp_path, env)
    assert code == 0 and "compiling" not in err and "replaying: 100%" in err

    shutil.rmtree(tmp_path / "cache")
    code, _out, err = run_on(False, args, tmp_path, env)
    assert code == 0, err
    assert "compiling" not in err and "replaying" not in err and "\r" not in err

    shutil.rmtree(tmp_path / "cache")
    code, _out, err = run_on(True, [*args, "--no-progress"], tmp_path, env)
    assert code == 0 and "compiling" not in err and "replaying" not in err and not redrawn(err)


def test_no_progress_under_systemd_even_on_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    rules = rule_dir(tmp_path)
    code, out, err = run_on(True, ["rules", "check", str(rules)], tmp_path,
                            {**env, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert code == 0, err
    assert "compiling" not in err and not redrawn(err)
    assert "process_creation" in out


def test_a_stream_connected_to_the_journal_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, terminal_end = pty.openpty()
    try:
        with open(terminal_end, "w", closefd=False) as stream:
            monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
            assert progress.interactive(stream)
            status = os.fstat(terminal_end)
            monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
            assert not progress.interactive(stream)
            monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino + 1}")  # another stream's
            assert progress.interactive(stream)
        assert not progress.interactive(io.StringIO())
    finally:
        os.close(controller)
        os.close(terminal_end)


class Recorder:
    """A :class:`~edr.progress.Progress` that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def begin(self, phase: str, total: int | None = None, unit: str = "") -> None:
        self.calls.append(("begin", phase, str(total), unit))

    def advance(self, amount: int = 1) -> None:
        self.calls.append(("advance", str(amount)))

    def end(self) -> None:
        self.calls.append(("end",))


@pytest.mark.parametrize("workers", [1, 2])
def test_the_compile_reports_every_file_once(tmp_path: Path, workers: int) -> None:
    rules = rule_dir(tmp_path)
    heard = Recorder()
    build_ruleset([str(rules)], placeholders=None, fed=ALL_FED, workers=workers, progress=heard)
    assert heard.calls[0] == ("begin", "compile", "80", "files") and heard.calls[-1] == ("end",)
    assert sum(int(call[1]) for call in heard.calls if call[0] == "advance") == 80


def test_rules_install_shows_the_validation_file_by_file_on_a_terminal(tmp_path: Path) -> None:
    from edr.config import RulesConfig
    from edr.rulepacks import PackStore, install

    (tmp_path / "pack").mkdir()
    rules = rule_dir(tmp_path / "pack").parent  # a pack as SigmaHQ's: its rules under rules/
    settings = RulesConfig(store_directory=str(tmp_path / "store"))
    store = PackStore(settings.store_directory)
    heard = Recorder()
    result = install(str(rules), store, settings, heard)
    assert result is not None
    validate = [call for call in heard.calls if len(call) > 1 and call[:2] == ("begin", "validate")]
    # the phase as the install announces it (no count yet), then with the number of rule files
    assert ("begin", "validate", "None", "rules") in validate and ("begin", "validate", "80", "files") in validate
    assert sum(int(call[1]) for call in heard.calls if call[0] == "advance") >= 80

    # and drawn by tqdm on a terminal
    controller, terminal_end = pty.openpty()
    try:
        with open(terminal_end, "w", closefd=False) as stream:
            shown = progress.terminal_progress(stream)
            assert isinstance(shown, progress.TqdmProgress)
            install(str(rules), PackStore(tmp_path / "store2"), settings, shown)
        os.set_blocking(controller, False)
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(controller, 1 << 16):
                chunks.append(chunk)
        drawn = b"".join(chunks).decode(errors="replace")
    finally:
        os.close(controller)
        os.close(terminal_end)
    assert "validating rules: 100%" in drawn and "80/80" in drawn
