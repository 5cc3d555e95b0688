"""A Windows run's modules import with the Linux-only ones unavailable, and the facade then says Windows.

Issue #16, point 1: ``pwd``, ``resource``, ``fcntl`` and ``bcc`` blocked and
``sys.platform`` set to ``win32`` before edr is imported (see
:mod:`tests.platform.as_windows`), every edr module but the eBPF sensor and
``edr.platform.linux`` imports, and what asks the platform gets Windows'
answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from tests.platform.as_windows import LINUX_ONLY, SRC, windows_modules


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "tests.platform.as_windows"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_every_module_a_windows_run_needs_imports(report: dict[str, Any]) -> None:
    assert report["failed"] == {}, "\n\n".join(f"{name}:\n{tb}" for name, tb in report["failed"].items())


def test_the_walk_covers_the_windows_run(report: dict[str, Any]) -> None:
    """The modules the brief names are among those imported (the list is computed, so new modules join it)."""
    names = set(windows_modules(sorted(SRC.rglob("*.py"))))
    for required in ("edr.cli", "edr.agent", "edr.health", "edr.config", "edr.instance_lock", "edr.wiring.builders",
                     "edr.wiring.kinds", "edr.wiring.graphs", "edr.wiring.context", "edr.platform",
                     "edr.platform.facade", "edr.platform.private_files", "edr.platform.protected",
                     "edr.platform.windows", "edr.platform.windows.private_files", "edr.platform.windows.acl",
                     "edr.platform.windows.kill", "edr.platform.windows.processes", "edr.platform.windows.file_lock",
                     "edr.alerts.actor", "edr.alerts.daily_file", "edr.alerts.ecs", "edr.detect.actor",
                     "edr.detect.sigma.engine", "edr.response.actor", "edr.response.kill", "edr.scan.actor",
                     "edr.enrich.actor", "edr.route.router", "edr.sources.etw.actor", "edr.sources.etw.normalize",
                     "edr.runtime.supervisor", "edr.service.manager"):
        assert required in names, required
    assert not any(n.startswith(LINUX_ONLY) for n in names)
    assert len(names) > 150
    assert report["graph_kinds"] == ["alerts", "coverage", "detect", "enricher", "etw_normalizer", "etw_source",
                                     "eventlog_normalizer", "eventlog_source", "events", "responder", "router",
                                     "scan", "syslog_sink", "webhook_sink"]


def test_nothing_linux_only_was_loaded(report: dict[str, Any]) -> None:
    assert report["blocked_loaded"] == []
    # The ETW session raises the eBPF sensor's SensorUnavailable, a plain exception class; nothing else of it.
    assert report["linux_loaded"] == ["edr.sources.ebpf", "edr.sources.ebpf.errors"]
    # pywin32 and msvcrt are not installed here: imported inside functions, they were never needed to import edr
    assert {"msvcrt", "win32security", "win32file", "win32api", "pywintypes"} <= set(report["absent"])


def test_the_facade_then_reports_windows(report: dict[str, Any]) -> None:
    assert report["platform"] == "windows"
    assert report["private_files"] == "edr.platform.windows.private_files"
    assert report["trusted_paths"] == ["C:\\Windows\\", "C:\\Program Files\\", "C:\\Program Files (x86)\\"]
    assert report["host_os"] == "windows"
    assert report["allowlists_ignore_case"] == [True, True]
    assert report["user_name"] is None and report["watchdog"] is None
