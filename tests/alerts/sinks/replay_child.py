"""A replay with a webhook sink in a process of its own, for the tests that kill it with SIGKILL.

``python -m tests.alerts.sinks.replay_child SPEC`` (SPEC a JSON object: ``workdir``,
``recording``, ``webhook`` (the section's keys), ``stats``) replays the
recording and, every 20 ms, writes the webhook sink's statistics to the
``stats`` file (atomically: written aside, then renamed), so the test knows
what has been spooled when it kills this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import trio

from edr.runtime.supervisor import Supervisor

from .conftest import replay_in_process, sink_config


def main(spec: dict[str, object]) -> None:
    workdir = Path(str(spec["workdir"]))
    stats = Path(str(spec["stats"]))
    config = sink_config(workdir, webhook=spec["webhook"])  # type: ignore[arg-type]

    async def report(sup: Supervisor) -> None:
        while True:
            actor = sup.actors.get("webhook")
            if actor is not None:
                stats.with_suffix(".tmp").write_bytes(orjson.dumps(actor.statistics()))
                os.replace(stats.with_suffix(".tmp"), stats)
            await trio.sleep(0.02)

    replay_in_process(config, [Path(str(spec["recording"]))], background=[report])


if __name__ == "__main__":
    main(orjson.loads(sys.argv[1]))
