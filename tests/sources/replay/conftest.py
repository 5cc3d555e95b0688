"""Replay robustness tests: the foundation's helpers, plus an in-process replay run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import trio

from edr.config import load_config
from edr.runtime.supervisor import Supervisor
from edr.wiring.context import AgentContext
from edr.wiring.graphs import mode_graph
from tests.cli_helpers import workdir  # noqa: F401  (the fixture, for this package too)


def replay_in_process(directory: Path, files: list[Path], **overrides: Any) -> Supervisor:
    """Replay ``files`` through the replay graph under the Supervisor; alerts land in ``directory/out``."""
    config = load_config("edr.toml", environ={}, overrides={"alerts.directory": str(directory / "out"),
                                                            **overrides}).config
    ctx = AgentContext.create(config, "replay", files=[str(f) for f in files])
    sup = Supervisor(mode_graph("replay"), ctx)
    assert trio.run(functools.partial(sup.run, handle_signals=False)) == 0
    return sup
