"""The live agent's retention pass: alert, event and op-log files pruned at start and every ``interval_secs``.

Each family (``[alerts]``, ``[events]``, ``[logging]``: directory and file
name) gets the ``[retention]`` policy of its kind; :func:`apply_retention`
does the work in a worker thread, so a slow disk never holds the event loop.
Never the file being written: today's name is passed as ``current`` (and
the planner keeps any file dated today or later anyway).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import attrs
import trio

from edr.alerts.retention import RetentionPolicy, RetentionResult, apply_retention
from edr.config import Config

_log = logging.getLogger(__name__)


@attrs.frozen
class RetainedFamily:
    """One family of daily files and how much of it to keep."""

    kind: str
    directory: str
    filename: str
    policy: RetentionPolicy


def retained_families(config: Config) -> list[RetainedFamily]:
    """The families ``config`` writes with a limit set (events only when the event stream is enabled)."""
    r = config.retention
    families = [
        RetainedFamily("alerts", config.alerts.directory, config.alerts.filename,
                       RetentionPolicy.from_megabytes(r.alerts_max_days, r.alerts_max_total_mb)),
        RetainedFamily("logs", config.logging.directory, config.logging.filename,
                       RetentionPolicy.from_megabytes(r.logs_max_days, r.logs_max_total_mb)),
    ]
    if config.events.enabled:
        families.append(RetainedFamily("events", config.events.directory, config.events.filename,
                                       RetentionPolicy.from_megabytes(r.events_max_days, r.events_max_total_mb)))
    return [f for f in families if not f.policy.unlimited]


def retention_pass(families: list[RetainedFamily], now: float | None = None) -> list[RetentionResult]:
    """Apply each family's policy once (blocking: run it in a worker thread)."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    return [apply_retention(f.directory, f.filename, f.policy, current=f"{f.filename}.{today}", now=now, log=_log)
            for f in families]


async def retention_task(_sup: Any, config: Config) -> None:
    """Run a retention pass at start and then every ``retention.interval_secs`` until cancelled.

    A pass in its worker thread runs to its end even when the agent stops
    meanwhile (``abandon_on_cancel`` is off: a half-done unlink loop is
    harmless but nothing is gained by leaving it behind).
    """
    families = retained_families(config)
    if not families:
        return
    while True:
        try:
            await trio.to_thread.run_sync(retention_pass, families)
        except NotImplementedError as exc:  # no directory descriptors here (Windows): said once, not hourly
            _log.warning("retention: not available on this platform (%s); files are kept", exc)
            return
        except Exception:  # a bug here must not stop the agent: logged, retried next interval
            _log.exception("retention pass failed")
        await trio.sleep(config.retention.interval_secs)
