"""Terminating the process a response target names, on this platform."""

from __future__ import annotations

from edr.platform import current
from edr.platform.kill import FAILED, KillResult
from edr.response.decision import ResponseTarget


def terminate_target(target: ResponseTarget) -> KillResult:
    """Kill ``target`` after the platform's identity check (blocking: run it in a thread)."""
    if target.pid is None or target.image is None:
        return KillResult(FAILED, "no pid or image")
    try:
        return current().terminate(target.pid, target.image, target.start_ticks, target.event_time, target.start_epoch)
    except OSError as exc:
        return KillResult(FAILED, str(exc))
