"""A stop asked for by the Windows service control manager, from its thread, whenever it comes.

On Linux the stop of a running agent is SIGTERM, which the supervisor
receives in its own event loop (``trio.open_signal_receiver``). A Windows
service has no signals: the service control manager calls the service's
control handler (pywin32's ``SvcStop``) on the dispatcher thread, at any
moment of the agent's life, while the agent runs Trio on another thread
(pywin32's service main thread, which is not Python's main thread, so Trio
could not receive signals there anyway).

:class:`ServiceStop` is the meeting point, a small thread-safe state
machine with no Trio in it:

- a stop that comes before the graph runs (the configuration, the rules
  and the sensor load first, and may take seconds) is remembered; the
  agent checks :attr:`ServiceStop.requested` before starting the graph and
  does not start it;
- once the graph runs, the agent :meth:`~ServiceStop.attach`\\ es the
  supervisor's ``stop`` with the ``run_sync_soon`` of its Trio token, and a
  stop is handed to the event loop through it: the supervisor's
  :meth:`~edr.runtime.supervisor.Supervisor.stop`, exactly what the first
  SIGTERM does on Linux (sources cancelled, the pipeline drains, bounded by
  ``agent.stop_timeout_secs``); a second stop request while draining is
  the second signal: everything is cancelled (``abort``);
- a request after the run ended (:meth:`~ServiceStop.detach`) is
  remembered, harmlessly, and says so (:data:`ENDED`).

No call blocks: ``run_sync_soon`` only queues the call, so the control
handler returns to the service control manager at once, as it must.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

#: What :meth:`ServiceStop.request` did with a request.
PENDING: Final = "pending"  # remembered: the graph is not running (yet, or any more)
STOPPING: Final = "stopping"  # handed to the running graph: an orderly stop, the pipeline drains
ABORTING: Final = "aborting"  # a repeated request during the drain: everything is cancelled
ENDED: Final = "ended"  # the run is over: nothing left to stop
RELOADING: Final = "reloading"  # a reload handed to the running graph

Schedule = Callable[[Callable[[], None]], None]


class ServiceStop:
    """Stop requests from any thread, delivered to a Trio run once it is attached.

    Thread-safe: :meth:`request` is called from the service control
    manager's thread, :meth:`attach` and :meth:`detach` from the event loop.
    ``on_running`` is called by :meth:`attach` (in the event loop: it must
    not block), when the graph runs, to say so (the Application log).
    """

    def __init__(self, on_running: Callable[[], None] | None = None) -> None:
        self._on_running = on_running
        self._lock = threading.Lock()
        self._requests = 0
        self._stop: Callable[[], None] | None = None
        self._abort: Callable[[], None] | None = None
        self._schedule: Schedule | None = None
        self._reload: Callable[[], None] | None = None
        self._reloads_pending = 0
        self._ended = False

    @property
    def requested(self) -> bool:
        """Whether a stop has been asked for (at any time)."""
        with self._lock:
            return self._requests > 0

    def request(self) -> str:
        """Ask for an orderly stop; returns :data:`PENDING`, :data:`STOPPING`, :data:`ABORTING` or :data:`ENDED`.

        Never blocks and never raises: a run whose token refuses calls (it
        has just ended) counts as ended.
        """
        with self._lock:
            self._requests += 1
            first = self._requests == 1
            schedule, stop, abort, ended = self._schedule, self._stop, self._abort, self._ended
        if ended:
            return ENDED
        if schedule is None or stop is None or abort is None:
            return PENDING
        try:
            schedule(stop if first else abort)
        except RuntimeError:  # trio.RunFinishedError: the loop is gone, nothing left to stop
            return ENDED
        return STOPPING if first else ABORTING

    def request_reload(self) -> str:
        """Ask the running agent to reload its rules (the service control PARAMCHANGE, ``edr reload`` on
        Windows); returns :data:`RELOADING` (handed to the event loop), :data:`PENDING` (remembered until
        the graph runs) or :data:`ENDED`. Never blocks and never raises."""
        with self._lock:
            schedule, reload, ended = self._schedule, self._reload, self._ended
            if not ended and (schedule is None or reload is None):
                self._reloads_pending += 1
        if ended:
            return ENDED
        if schedule is None or reload is None:
            return PENDING
        try:
            schedule(reload)
        except RuntimeError:  # the loop is gone
            return ENDED
        return RELOADING

    def attach(self, stop: Callable[[], None], abort: Callable[[], None], schedule: Schedule,
               reload: Callable[[], None] | None = None) -> None:
        """Deliver requests to a running graph: ``schedule(stop)`` (then ``schedule(abort)``) from now on.

        Called in the event loop once the graph runs (the supervisor's
        ``on_started``); ``schedule`` is the token's ``run_sync_soon``. A stop
        requested before this is delivered now, by calling ``stop`` directly
        (this runs in the loop already).
        """
        with self._lock:
            self._stop, self._abort, self._schedule, self._reload = stop, abort, schedule, reload
            already, reloads, self._reloads_pending = self._requests, self._reloads_pending, 0
        if self._on_running is not None:
            self._on_running()
        if already:
            stop()
        elif reloads and reload is not None:  # asked for while starting: the reload follows the start
            reload()

    def detach(self) -> None:
        """The run is over: later requests are only remembered (:data:`ENDED`)."""
        with self._lock:
            self._stop = self._abort = self._schedule = self._reload = None
            self._ended = True
