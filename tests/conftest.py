"""Shared fixtures: where ../shared is, whether the real eBPF sensor can run, and the ECS check of every
alert the session produced."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import workdir  # noqa: F401 - the fixture, for every test package

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data not found: {p}")
    return p


#: Fixtures that load the real BPF programs: every test using one is marked ``root`` (``pytest -m "not root"``
#: runs the rest anywhere, as any user).
ROOT_FIXTURES = frozenset({"live", "sensor_host"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``root`` every test that uses a fixture of :data:`ROOT_FIXTURES`."""
    for item in items:
        if ROOT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root)


def ebpf_unavailable() -> str | None:
    """Why the live sensor cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    from edr.agent import preflight_linux

    return preflight_linux()


# --- the ECS check of every alert the session produced ------------------------------------------------

_ECS_REPORT = pytest.StashKey[Any]()


def ecs_audit(root: Path) -> Any:
    """Every alert line of the ``alerts.json.*`` files under ``root``, checked against ECS's field list
    (../shared/ecs when present, else the vendored subset) and covered by ``edr ecs template``."""
    from edr.alerts.ecs_check import VENDORED, alert_files, check_alert_files, load_ecs_fields
    from edr.alerts.ecs_template import coverage_problems, index_template

    full = SHARED / "ecs" / "ecs-9.4.0-fields.json"
    ecs = load_ecs_fields(full) if full.exists() else VENDORED
    template = index_template()
    return check_alert_files(alert_files(root), ecs, extra=lambda doc: coverage_problems(doc, template, ecs))


@pytest.fixture(scope="session", autouse=True)
def _ecs_check_of_every_alert(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                              ) -> Iterator[None]:
    """At the end of the session, every alert any test made (live agents, replays, in-process writers: all
    write under the session's basetemp) must be valid ECS and mapped by the index template; the session
    fails with the list of problems otherwise. Lines that are not alerts edr wrote (JSON objects without
    ``ecs.version``: chain tests' hand-made documents, retention tests' filler) are counted, not checked."""
    yield
    report = ecs_audit(tmp_path_factory.getbasetemp())
    request.config.stash[_ECS_REPORT] = report
    if report.problems:
        pytest.fail(report.summary(), pytrace=False)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say how many alerts the session's ECS check saw."""
    report = config.stash.get(_ECS_REPORT, None)
    if report is not None:
        terminalreporter.write_line(report.summary(limit=20))


@pytest.fixture(autouse=True)
def _progress_not_silenced_for_the_next_test() -> Iterator[None]:
    """``edr replay --no-progress`` run in-process silences progress for the rest of the process
    (:func:`edr.progress.quiet`, meant for a one-shot command): a later test must not inherit it."""
    from edr import progress

    yield
    progress._quiet = False
