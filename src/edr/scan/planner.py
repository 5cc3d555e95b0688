"""The scan job policy, sans-IO: which events become which scans, and when.

:class:`ScanPlanner` is what the scan actor asks; it has no clock, no
threads and no trio: the actor passes the time in and runs the jobs it gets
back. Its decisions:

- the executable of every ``process_creation`` is scanned at once (an
  ``exec`` job), unless every engine allowlists its path (most execs are of
  trusted prefixes, so they are filtered here rather than in a worker);
- with memory scanning on, the memory of every new process (pid > 4) too
  (a ``memory`` job);
- a file written (``file_event``, ``file_change``, or the target of a
  ``file_rename``) is tracked until nobody has written it for
  ``settle_secs``, then scanned once (a ``written`` job carrying the event
  that announced it); a file renamed away or deleted meanwhile is forgotten,
  since its old name no longer holds the bytes; at the end of the stream
  every file still settling is scanned (:meth:`ScanPlanner.flush`);
- every ``sweep_interval`` seconds, a round of all running processes'
  memory, rate-limited (``sweep`` jobs, :meth:`ScanPlanner.sweep`).

The written files tracked at once are bounded (``settle_capacity``); one
more is not tracked, counted and logged (rate-limited).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

from edr.event import FILE_CHANGE, FILE_DELETE, FILE_EVENT, FILE_RENAME, PROCESS_CREATION, Event, F
from edr.runtime.errlog import ErrorLog
from edr.scan.memory import SweepPlanner
from edr.scan.settle import SettleTracker

#: Job kinds: a new process's executable, a written file, a new process's memory, a swept process's memory.
EXEC: Final = "exec"
WRITTEN: Final = "written"
MEMORY: Final = "memory"
SWEEP: Final = "sweep"

_WRITTEN_CATEGORIES: Final = frozenset({FILE_EVENT, FILE_CHANGE, FILE_RENAME})
#: The categories :meth:`ScanPlanner.intake` looks at: an event of any other gives no job and changes nothing.
INTAKE_CATEGORIES: Final = _WRITTEN_CATEGORIES | {PROCESS_CREATION, FILE_DELETE}
#: Paths whose ``skips`` answer is remembered at most (then forgotten all at once).
SKIP_ANSWERS: Final = 4096
#: Seconds between two looks at the sweep's rate limit (the sweep's own pace is per minute).
SWEEP_TICK: Final = 1.0


@attrs.frozen
class ScanJob:
    """One unit of work: ``kind`` is ``exec``, ``written``, ``memory`` or ``sweep``.

    ``event`` is what an alert of the job carries: the exec or the write
    that caused it (None for a sweep, and for a written file whose event was
    not kept).
    """

    kind: str
    path: str | None
    pid: int | None
    event: Event | None


def pid_of(event: Event) -> int | None:
    """The event's ``ProcessId`` as an int, or None when absent or not a number."""
    value = event.get(F.PROCESS_ID)
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class ScanPlanner:
    """Turns events and the passing of time into scan jobs (see the module's notes).

    ``files``: scan executables and written files (False when there are
    neither YARA rules nor hash indicators: hashing would only burn CPU).
    ``memory``: scan new processes' memory. ``skips(path)``: True when every
    engine allowlists ``path``; a pure test of the path, whose answer the
    planner remembers per path (the same few executables run over and over)
    and counts, when True, in ``statistics()["allowlisted"]``. ``sweep``: the
    memory sweep's rate limit and exclusions (None, or a ``sweep_interval``
    of 0: no sweep).
    """

    def __init__(self, *, files: bool, memory: bool, skips: Callable[[str], bool], settle_secs: float,
                 settle_capacity: int = 4096, sweep: SweepPlanner | None = None, sweep_interval: float = 0.0,
                 log: logging.Logger | None = None) -> None:
        self.files = files
        self.memory = memory
        self.skips = skips
        self._skip_answers: dict[str, bool] = {}
        #: paths not tracked or scanned because every engine allowlists them
        self.allowlisted = 0
        self.settle = SettleTracker(settle_secs, settle_capacity)
        self.sweep_planner = sweep
        self.sweep_interval = sweep_interval
        self._next_round: float | None = None
        # The file event that announced each settling path (the alert's event).
        self._pending_events: dict[str, Event] = {}
        self._untracked = ErrorLog(log or logging.getLogger("edr.scan"), "written files not tracked")

    @property
    def sweeping(self) -> bool:
        """Whether :meth:`sweep` ever has anything to do (memory scanning on and an interval set)."""
        return self.memory and self.sweep_planner is not None and self.sweep_interval > 0

    @property
    def settle_tick(self) -> float:
        """How often :meth:`due` is worth calling: a quarter of ``settle_secs``, within 20 ms to 0.5 s."""
        return max(0.02, min(0.5, self.settle.settle_secs / 4))

    def intake(self, event: Event, now: float) -> list[ScanJob]:
        """The jobs ``event`` calls for at once (``now`` starts a written file's quiet period)."""
        category = event.category
        if category == PROCESS_CREATION:
            jobs: list[ScanJob] = []
            image = event.get(F.IMAGE)
            if self.files and isinstance(image, str) and image and not self._skipped(image):
                jobs.append(ScanJob(EXEC, image, pid_of(event), event))
            if self.memory:
                pid = pid_of(event)
                if pid is not None and pid > 4:
                    jobs.append(ScanJob(MEMORY, None, pid, event))
            return jobs
        if category in _WRITTEN_CATEGORIES:
            source = event.get(F.SOURCE_FILENAME) if category == FILE_RENAME else None
            if isinstance(source, str):
                # Renamed away: the old name no longer holds the bytes; the new one is tracked below.
                self._forget(source)
            target = event.get(F.TARGET_FILENAME)
            if self.files and isinstance(target, str) and target and not self._skipped(target):
                if self.settle.touch(target, now):
                    self._pending_events[target] = event
                else:
                    self._untracked.report("scan: %d written files already settling; %s not tracked, "
                                           "not scanned (%d so far)", len(self.settle), target,
                                           self.settle.dropped, level=logging.WARNING)
        elif category == FILE_DELETE:
            target = event.get(F.TARGET_FILENAME)
            if isinstance(target, str):
                self._forget(target)
        return []

    def _skipped(self, path: str) -> bool:
        answer = self._skip_answers.get(path)
        if answer is None:
            answer = self.skips(path)
            if len(self._skip_answers) >= SKIP_ANSWERS:
                self._skip_answers.clear()
            self._skip_answers[path] = answer
        if answer:
            self.allowlisted += 1
        return answer

    def _forget(self, path: str) -> None:
        self.settle.forget(path)
        self._pending_events.pop(path, None)

    def due(self, now: float) -> list[ScanJob]:
        """``written`` jobs for the files quiet for ``settle_secs`` at ``now``, oldest first."""
        return [self._written(path) for path in self.settle.due(now)]

    def flush(self) -> list[ScanJob]:
        """``written`` jobs for every file still settling (the end of the stream)."""
        return [self._written(path) for path in self.settle.flush()]

    def _written(self, path: str) -> ScanJob:
        return ScanJob(WRITTEN, path, None, self._pending_events.pop(path, None))

    def sweep(self, now: float, running: Callable[[], Iterable[int]]) -> list[ScanJob]:
        """``sweep`` jobs the rate limit allows at ``now``; nothing unless :attr:`sweeping`.

        A round of every process ``running()`` lists begins on the first
        call and then every ``sweep_interval`` seconds; when one is due while
        the previous round is still going, that round goes on and the new
        one is skipped. ``running`` is called only when a round begins
        (listing /proc is the caller's business, and not free).
        """
        planner = self.sweep_planner
        if planner is None or not self.sweeping:
            return []
        if self._next_round is None or now >= self._next_round:
            if not planner.pending:
                planner.start(running())
            self._next_round = now + self.sweep_interval
        return [ScanJob(SWEEP, None, pid, None) for pid in planner.take(now)]

    def statistics(self) -> dict[str, Any]:
        """Paths allowlisted, files settling, files not tracked (tracker full), sweep rounds begun."""
        return {"allowlisted": self.allowlisted, "settle_pending": len(self.settle),
                "settle_dropped": self.settle.dropped,
                "sweep_rounds": self.sweep_planner.rounds if self.sweep_planner is not None else 0}
