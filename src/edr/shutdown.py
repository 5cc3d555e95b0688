"""The end of a run (``edr run``, ``edr replay``): say what a stop could not write, end a stuck stop.

The supervisor bounds the stop (:mod:`edr.runtime.supervisor`) and counts
what its writers were given and never wrote; this module turns that into
what an operator sees: one error line in the operational log and on
standard error naming the counts, and, if a worker thread is stuck in a
system call past the stop timeout, a hard exit after the same report: status
1 when anything was not written, 0 when only a slow clean-up (say, the eBPF
sensor detaching its programs) was cut short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from edr.runtime.supervisor import Supervisor

log = logging.getLogger("edr")

#: The process exit status of a stop that lost data (the CLI's EXIT_FAILED).
EXIT_LOST: Final = 1
#: How long the hard exit waits for the log handlers (a hung disk may hold their locks).
_LOG_GRACE_SECS: Final = 0.5


def describe(unwritten: dict[str, int]) -> str:
    """``"3 alerts and 10 events"`` for the non-zero counts, in a stable order (alerts first)."""
    parts = [f"{n} {kind}" for kind, n in sorted(unwritten.items(), key=lambda kv: (kv[0] != "alerts", kv[0]))
             if n]
    return " and ".join(parts)


def stop_message(sup: Supervisor) -> str | None:
    """The line that reports what the run could not write, or None when nothing was lost."""
    lost = describe(sup.unwritten())
    if not lost:
        return None
    why = {
        "stop timeout": f"the stop timeout of {sup.stop_timeout:g}s (agent.stop_timeout_secs) passed",
        "second signal": "a second signal cancelled the stop",
        "failure": "an actor failed",
    }.get(sup.cancelled or "", "the pipeline was cancelled")
    return f"{lost} not written: {why} before they reached the disk (see the operational log for the cause)"


def report_unwritten(sup: Supervisor, *, echo: bool = True) -> bool:
    """Log what was not written and, with ``echo`` (no console log), print it to stderr; True if anything was."""
    message = stop_message(sup)
    if message is None:
        return False
    log.error("%s", message)
    if echo:
        print(f"edr: {message}", file=sys.stderr, flush=True)
    return True


def hard_exit(sup: Supervisor, final: Callable[[], None] | None = None) -> Callable[[list[str]], None]:
    """The ``on_stuck`` hook for :meth:`Supervisor.run`: report, then ``os._exit`` (1 if anything was lost).

    Runs in the supervisor's watchdog thread while the event loop waits on a
    stuck worker thread. Standard error is written first and directly (no
    lock that the stuck thread might hold); the log and ``final`` (the final
    health record) get :data:`_LOG_GRACE_SECS`, then the process ends regardless.
    """

    def on_stuck(running: list[str]) -> None:
        lost = describe(sup.unwritten())
        code = EXIT_LOST if lost else 0
        text = (f"edr: stop timeout: {', '.join(running) or 'the graph'} still running after being cancelled "
                f"(a thread stuck in a system call); exiting now with {lost or 'nothing'} not written\n")
        with contextlib.suppress(OSError):
            os.write(2, text.encode())
        killer = threading.Timer(_LOG_GRACE_SECS, os._exit, args=(code,))
        killer.daemon = True
        killer.start()
        try:
            log.critical("%s", text.strip().removeprefix("edr: "))
            if final is not None:
                final()
            logging.shutdown()
        finally:
            os._exit(code)

    return on_stuck
