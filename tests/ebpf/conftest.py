"""Fixtures for the live sensor tests: one compiled sensor per session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from tests.ebpf.live import LiveCapture


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the eBPF sensor tests load BPF programs: run them as root"
    if importlib.util.find_spec("bcc") is None:
        return "bcc is not importable (apt install python3-bpfcc; venv with --system-site-packages)"
    return None


@pytest.fixture(scope="session")
def live() -> Iterator[LiveCapture]:
    """The real programs, attached once for the whole session (bcc compiles in seconds)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    capture = LiveCapture()
    capture.start()
    yield capture
    capture.stop()
