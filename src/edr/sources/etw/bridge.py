"""The callback bridge: pywintrace's consumer thread -> Trio, in batches, never blocking the thread.

pywintrace calls back once per event on its own thread (the one running
``ProcessTrace``). If that callback waits, ETW's buffers fill and the kernel
drops events for every provider of the session. So :meth:`CallbackBridge.callback`
only appends the record to a bounded list under a lock held for a few
instructions; when the list is full the record is discarded and counted
under its provider (``overflow``). It schedules at most one wake-up of the
Trio side per batch (``TrioToken.run_sync_soon``, which never blocks), not
one ``trio.from_thread`` call per record.

The Trio side (:meth:`CallbackBridge.receive`) takes everything gathered
since its last call as one list. Backpressure stops here by design: a slow
pipeline makes the bridge overflow, counted per provider, instead of
stalling ETW. Invariant at every moment (the property tests check it)::

    accepted + sum(overflow.values()) + late == records offered to callback
    delivered + len(buffer) == accepted
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Any

import trio

from edr.sources.etw.providers import provider_name
from edr.sources.etw.record import normalize_guid


def record_provider(record: Any) -> str:
    """The provider name of a pywintrace record (``?`` when it has no readable header)."""
    try:
        return provider_name(normalize_guid(record[1]["EventHeader"]["ProviderId"]))
    except (TypeError, KeyError, IndexError, AttributeError):
        return "?"


class CallbackBridge:
    """A bounded hand-off of records from one producer thread to one Trio task.

    ``capacity`` is the most records held between two :meth:`receive` calls.
    Attach the Trio side with :meth:`attach` (from inside ``trio.run``) before
    the producer starts; after :meth:`close` the callback discards records
    (counted as ``late``).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._buffer: list[Any] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake_pending = False
        self._ready: trio.Event | None = None
        self._closed = False
        self.accepted = 0
        self.delivered = 0
        self.batches = 0
        self.late = 0
        self.wakeups = 0
        self.wakes_scheduled = 0
        self.high_water = 0
        self.overflow: Counter[str] = Counter()

    # --- producer thread -------------------------------------------------------
    def callback(self, record: Any) -> None:
        """pywintrace's ``event_callback``: queue ``record`` or count it as overflow; never waits."""
        with self._lock:
            if self._closed:
                self.late += 1
                return
            buffer = self._buffer
            if len(buffer) >= self.capacity:
                self.overflow[record_provider(record)] += 1
                return
            buffer.append(record)
            self.accepted += 1
            if self._wake_pending or self._token is None:
                return
            self._wake_pending = True
            self.wakes_scheduled += 1
            token = self._token
        # Trio may have gone: whoever closes the bridge takes what is left with drain()
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._wake)

    # --- Trio side -------------------------------------------------------------
    def attach(self) -> None:
        """Bind to the running Trio loop (call from inside it)."""
        self._token = trio.lowlevel.current_trio_token()
        self._ready = trio.Event()

    def _wake(self) -> None:
        if self._ready is not None:
            self._ready.set()

    async def receive(self) -> list[Any]:
        """Every record queued since the last call, waiting for at least one.

        A cancellation point; cancelling it loses nothing (records stay queued).
        """
        while True:
            with self._lock:
                if self._buffer:
                    out, self._buffer = self._buffer, []
                    # the next record must wake us only after this batch was taken
                    self._wake_pending = False
                    self._account(out)
                    return out
                self._wake_pending = False
                self._ready = trio.Event()
            ready = self._ready
            await ready.wait()
            self.wakeups += 1

    def _account(self, out: list[Any]) -> None:
        n = len(out)
        self.delivered += n
        self.batches += 1
        if n > self.high_water:
            self.high_water = n

    def close(self) -> None:
        """No more records are taken (call once the producer has stopped)."""
        with self._lock:
            self._closed = True

    def drain(self) -> list[Any]:
        """Whatever is still queued (at shutdown, after :meth:`close`)."""
        with self._lock:
            out, self._buffer = self._buffer, []
            if out:
                self._account(out)
            return out

    def pending(self) -> int:
        """Records queued now."""
        return len(self._buffer)

    def statistics(self) -> dict[str, Any]:
        """Accepted, delivered, overflow per provider (the bridge's own ``lost``), late, batches."""
        return {
            "capacity": self.capacity, "accepted": self.accepted, "delivered": self.delivered,
            "pending": len(self._buffer), "overflow": dict(self.overflow),
            "overflow_total": sum(self.overflow.values()), "late": self.late, "batches": self.batches,
            "wakeups": self.wakeups, "wakes_scheduled": self.wakes_scheduled, "high_water": self.high_water,
        }
