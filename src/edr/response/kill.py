"""Terminating the process a response target names, on this platform."""

from __future__ import annotations

import sys

from edr.platform.kill import FAILED, KillResult
from edr.response.decision import ResponseTarget


def terminate_target(target: ResponseTarget) -> KillResult:
    """Kill ``target`` after the platform's identity check (blocking: run it in a thread)."""
    if target.pid is None or target.image is None:
        return KillResult(FAILED, "no pid or image")
    if sys.platform == "win32":
        from edr.platform.windows.kill import terminate
    elif sys.platform.startswith("linux"):
        from edr.platform.linux.kill import terminate
    else:
        return KillResult(FAILED, f"termination is not supported on {sys.platform}")
    try:
        return terminate(target.pid, target.image, target.start_ticks, target.event_time, target.start_epoch)
    except OSError as exc:
        return KillResult(FAILED, str(exc))
