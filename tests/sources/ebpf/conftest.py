"""Fixtures for the live sensor tests: one compiled sensor per session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from tests.sources.ebpf.live import LiveCapture, acquire_capture, bad_paths_since, release_capture


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the eBPF sensor tests load BPF programs: run them as root"
    if importlib.util.find_spec("bcc") is None:
        return "bcc is not importable (apt install python3-bpfcc; venv with --system-site-packages)"
    return None


@pytest.fixture(scope="session")
def live() -> Iterator[LiveCapture]:
    """The real programs, attached once for the whole session (bcc compiles in seconds).

    Shared with tests/live's path check.  At the end of the session, no file
    event recorded in it may have had a relative or empty path.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    capture = acquire_capture()
    try:
        yield capture
        bad = bad_paths_since(capture, 0)
        assert not bad, f"{len(bad)} file events with a relative or empty path: {bad[:20]}"
    finally:
        release_capture()


@pytest.fixture(autouse=True)
def _file_paths_are_absolute(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every file event the sensor records while a live test runs has an absolute path.

    Only for the tests that use the sensor: the others run without root.
    """
    if "live" not in request.fixturenames:
        yield
        return
    capture: LiveCapture = request.getfixturevalue("live")
    with capture._lock:
        start = len(capture.bad_paths)
    yield
    bad = bad_paths_since(capture, start)
    assert not bad, f"file events with a relative or empty path: {bad[:20]}"
