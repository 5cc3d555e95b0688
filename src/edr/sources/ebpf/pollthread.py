"""The eBPF source's polling thread: one thread for the source's lifetime, handing batches to the event loop.

A worker thread per poll (``trio.to_thread.run_sync``) costs, per batch, a
hand-off to the thread cache, the outcome's capture and its delivery back
through ``run_sync_soon``; under an exec storm that was a tenth of the
agent's CPU. This thread loops on ``sensor.poll`` instead and wakes the
event loop (one ``run_sync_soon``) only when the source's task is waiting
for a batch; a batch polled while the task is still busy is simply queued.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import trio


class PollThread:
    """Polls ``sensor`` (no timeout) in a thread until :meth:`stop`; :meth:`receive` takes the batches in order.

    Backpressure: the thread polls only while fewer than ``ahead`` batches
    wait to be received, so while the source's send waits for room it
    stops polling after at most ``ahead`` more batches and the records stay
    in the kernel's rings. An exception raised by a poll ends the thread
    and is raised by :meth:`receive`, in the actor.

    The owner must call :meth:`stop` then :meth:`join` before closing the
    sensor (closing unmaps the rings a poll reads), then take what is left
    with :meth:`take_rest`.
    """

    def __init__(self, sensor: Any, token: trio.lowlevel.TrioToken, ahead: int = 1) -> None:
        self._sensor = sensor
        self._token = token
        self._ahead = ahead
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[list[Any]] = deque()
        self._stopping = False
        self._ended = False
        self._error: Exception | None = None
        # the task parked in receive(), rescheduled by the thread (None: nobody waits)
        self._waiter: Any = None
        #: polls made; read it after :meth:`join`
        self.polls = 0
        self._thread = threading.Thread(target=self._loop, name="edr-ebpf-poll", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sensor, cond, ready, ahead = self._sensor, self._cond, self._ready, self._ahead
        try:
            while True:
                with cond:
                    while len(ready) >= ahead and not self._stopping:
                        cond.wait()
                    if self._stopping:
                        return
                records = sensor.poll(-1)
                self.polls += 1
                if records:
                    self._hand(records)
        except Exception as exc:  # raised again by receive(), in the actor: the supervisor logs it with its name
            self._error = exc
        finally:
            with cond:
                self._ended = True
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                self._token.run_sync_soon(trio.lowlevel.reschedule, waiter)

    def _hand(self, records: list[Any]) -> None:
        with self._cond:
            self._ready.append(records)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._token.run_sync_soon(trio.lowlevel.reschedule, waiter)

    async def receive(self) -> list[Any]:
        """The next batch, waiting for one if none is queued; a cancellation point.

        Raises what a poll raised in the thread, and
        :class:`trio.ClosedResourceError` once the thread has stopped.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        cond = self._cond
        task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            with cond:
                if self._waiter is task:
                    self._waiter = None
                    return trio.lowlevel.Abort.SUCCEEDED
            # the thread took the waiter and its reschedule is on the way
            return trio.lowlevel.Abort.FAILED

        while True:
            with cond:
                if self._ready:
                    batch = self._ready.popleft()
                    cond.notify()
                    return batch
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    raise trio.ClosedResourceError("the eBPF poll thread has stopped")
                self._waiter = task
            await trio.lowlevel.wait_task_rescheduled(abort)

    def stop(self) -> None:
        """Ask the thread to stop and wake its poll (non-blocking): the records of that poll are still queued."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._sensor.wake()

    def join(self) -> None:
        """Wait for the thread to end (blocking; after :meth:`stop`, at most the poll's wake-up)."""
        self._thread.join()

    def take_rest(self) -> list[Any]:
        """After :meth:`join`: the records of every batch not received, in order."""
        with self._cond:
            rest = [record for batch in self._ready for record in batch]
            self._ready.clear()
        return rest
