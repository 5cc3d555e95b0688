"""A responder in prevention mode in a process of its own, driven line by line (for test_protected).

Run as ``python -m tests.response.protected_agent IMAGE`` from the repository:
it starts an ordinary child (``IMAGE 60``), runs the real Responder with the
real terminator and no allowlisted paths, prints one JSON line ``{"pid", "ppid", "child"}`` when
ready, then for each JSON line ``{"pid", "image", "start"}`` on stdin sends
one critical alert at that process and prints, once the responder has dealt
with it, ``{"outcome", "ppid", "protected", "child_status"}``. Logs go to
stderr in the operational log's format. It is a separate process so that a
failing test kills a disposable parent, never the test runner's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import trio

from edr.config import Config, ResponseConfig
from edr.detect.alert import Alert
from edr.event import Event
from edr.oplog import FORMAT
from edr.wiring import builders
from edr.wiring.context import AgentContext
from tests.scan.harness import running, wait_for

OUTCOMES = ("terminated", "identity_mismatch", "already_exited", "failed", "dry_run")


def handled(stats: dict[str, Any]) -> int:
    return sum(stats[k] for k in OUTCOMES) + sum(stats["skipped"].values())


def outcome(before: dict[str, Any], after: dict[str, Any]) -> str:
    for key in OUTCOMES:
        if after[key] > before[key]:
            return key
    for reason, count in after["skipped"].items():
        if count > before["skipped"].get(reason, 0):
            return f"skipped: {reason}"
    return "?"


def alert_at(pid: int, image: str, start: int | None) -> Alert:
    fields: dict[str, Any] = {"ProcessId": pid, "Image": image}
    if start is not None:
        fields["ProcessStartTime"] = start
    event = Event("process_creation", "linux", fields, time.time())
    return Alert(rule_id="test:protected", rule_name="Protected process test", severity="critical",
                 engine="sigma", event=event)


def say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def main(image: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("edr.response")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    child = subprocess.Popen([image, "60"])
    # No allowlisted paths: the supervisors here run from /usr/bin, and their protection must not
    # depend on an allowlist an operator may have emptied.
    cfg = Config(response=ResponseConfig(enabled=True, prevention_enabled=True, allowlist_paths=[]))
    actor = builders.responder(AgentContext.create(cfg, "test"), "responder")
    try:
        async with running(actor, output=None) as run:
            await wait_for(lambda: bool(actor.protected))
            say({"pid": os.getpid(), "ppid": os.getppid(), "child": child.pid})
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line.strip():
                    break
                request = json.loads(line)
                before = actor.statistics()
                await run.send([alert_at(request["pid"], request["image"], request.get("start"))])
                await wait_for(lambda before=before: handled(actor.statistics()) > handled(before))
                result = outcome(before, actor.statistics())
                if request["pid"] == child.pid and result == "terminated":
                    await trio.to_thread.run_sync(child.wait, 10)
                say({"outcome": result, "ppid": os.getppid(),
                     "protected": {str(p.pid): list(p.roles) for p in actor.protected},
                     "child_status": child.poll()})
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
