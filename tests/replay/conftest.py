"""Replay robustness tests: the foundation's helpers, plus an in-process replay run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import trio

from edr.config import load_config
from edr.runtime.actor import ActorContext
from edr.runtime.graph import graph_path, load_graph
from edr.runtime.supervisor import Supervisor
from tests.foundation.conftest import workdir  # noqa: F401  (the fixture, for this package too)


def replay_in_process(directory: Path, files: list[Path], **overrides: Any) -> Supervisor:
    """Replay ``files`` through the replay graph under the Supervisor; alerts land in ``directory/out``."""
    config = load_config("edr.toml", environ={}, overrides={"alerts.directory": str(directory / "out"),
                                                            **overrides}).config
    ctx = ActorContext(config=config, mode="replay", options={"files": [str(f) for f in files]})
    sup = Supervisor(load_graph(graph_path("replay")), ctx)
    assert trio.run(functools.partial(sup.run, handle_signals=False)) == 0
    return sup
