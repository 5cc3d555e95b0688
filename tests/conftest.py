"""Shared fixtures: where ../shared is, whether the real eBPF sensor can run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data not found: {p}")
    return p


def ebpf_unavailable() -> str | None:
    """Why the live sensor cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    from edr.agent import preflight_linux

    return preflight_linux()
