"""The eBPF source's polling thread: one thread for the source's lifetime, handing batches to the event loop.

A worker thread per poll (``trio.to_thread.run_sync``) costs, per batch, a
hand-off to the thread cache, the outcome's capture and its delivery back
through ``run_sync_soon`` (a profile of a 1,600 exec/s storm put that
machinery at 10-15 % of the agent's CPU). This thread loops on ``sensor.poll`` instead and wakes the
source's task only when it waits for a batch, through an eventfd the task
waits on with ``wait_readable`` (the I/O wake-up reschedules the task
directly; ``run_sync_soon`` took one more task step per batch, measured
~100 ms of the event loop's CPU per 40 s storm); a batch polled while the
task is still busy is simply queued.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from typing import Any

import trio

#: The longest a poll waits without a wake-up (ms). The kernel wakes the poll for the first record written
#: into a ring the consumer has caught up with (adaptive wake-ups), which it decides by reading the
#: consumer's position while user space may be storing it: should that race ever cost a wake-up, a quiet
#: ring would stay unread until another ring woke the poll. This bound caps that at a few seconds, for one
#: empty poll every few seconds on an idle host (it hands nothing to the event loop).
LOST_WAKEUP_MS = 5_000


class PollThread:
    """Polls ``sensor`` in a thread until :meth:`stop`; :meth:`receive` takes the batches in order.

    Each poll waits for the kernel's wake-up, at most :data:`LOST_WAKEUP_MS`.

    Backpressure: the thread polls only while fewer than ``ahead`` batches
    wait to be received, so while the source's send waits for room it
    stops polling after at most ``ahead`` more batches and the records stay
    in the kernel's rings. An exception raised by a poll ends the thread
    and is raised by :meth:`receive`, in the actor.

    The owner must call :meth:`stop` then :meth:`join` before closing the
    sensor (closing unmaps the rings a poll reads), then take what is left
    with :meth:`take_rest` and :meth:`close` the eventfd, on the event loop.
    """

    def __init__(self, sensor: Any, ahead: int = 1) -> None:
        self._sensor = sensor
        self._ahead = ahead
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[list[Any]] = deque()
        self._stopping = False
        self._ended = False
        self._error: Exception | None = None
        # whether receive() waits on the eventfd for the thread to write it
        self._waiting = False
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
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
                records = sensor.poll(LOST_WAKEUP_MS)
                self.polls += 1
                if records:
                    self._hand(records)
        except Exception as exc:  # raised again by receive(), in the actor: the supervisor logs it with its name
            self._error = exc
        finally:
            with cond:
                self._ended = True
                waiting, self._waiting = self._waiting, False
            if waiting:
                os.eventfd_write(self._efd, 1)

    def _hand(self, records: list[Any]) -> None:
        with self._cond:
            self._ready.append(records)
            waiting, self._waiting = self._waiting, False
        if waiting:
            os.eventfd_write(self._efd, 1)

    async def receive(self) -> list[Any]:
        """The next batch, waiting for one if none is queued; a cancellation point.

        Raises what a poll raised in the thread, and
        :class:`trio.ClosedResourceError` once the thread has stopped.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        cond = self._cond
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
                self._waiting = True
            await trio.lowlevel.wait_readable(self._efd)
            # a wake-up left over from a cancelled wait is harmless: the queue is checked again
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._efd)

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

    def close(self) -> None:
        """After :meth:`join`, on the event loop: release the eventfd (idempotent)."""
        if self._efd >= 0:
            trio.lowlevel.notify_closing(self._efd)
            os.close(self._efd)
            self._efd = -1
