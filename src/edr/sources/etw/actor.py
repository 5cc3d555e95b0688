"""Actors of the live Windows sensor: the ETW source and its normalizer.

The source owns one real-time ETW session (:mod:`edr.sources.etw.session`)
whose callback feeds the bounded :mod:`edr.sources.etw.bridge`; it forwards
what the bridge gathered in batches of ``pipeline.batch_size``. It never
sheds in user space beyond the bridge: when the pipeline falls behind the
bridge overflows, counted per provider, and ETW itself counts what its
buffers could not hold; both are in the source's statistics (the health
record), like the eBPF families' ``lost``.

The normalizer runs the sans-IO :class:`~edr.sources.etw.normalize.EtwNormalizer`
one batch at a time in a worker thread: on Windows it reads live processes
(psutil) and waits a bounded time for PE hashes, which must not hold the
event loop.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, ClassVar, Final

import trio

from edr.runtime.actor import ActorBase, Ports
from edr.sources.etw.bridge import CallbackBridge
from edr.sources.etw.host import WindowsHost
from edr.sources.etw.normalize import EtwNormalizer
from edr.sources.etw.session import EtwSession, EtwUnavailable

#: how often the normalizer reports script blocks whose remaining parts never came
FLUSH_SECS: Final = 1.0
#: longest the source spends sending what the bridge still held at shutdown
DRAIN_SECS: Final = 2.0


def import_pywintrace() -> Any:
    """pywintrace's ``etw`` module; raises :class:`EtwUnavailable` with the fix when it cannot load."""
    try:
        return importlib.import_module("etw")
    except Exception as exc:  # ImportError, or OSError/AttributeError from ctypes.windll off Windows
        raise EtwUnavailable(
            f"pywintrace (the etw module) cannot be loaded: {exc}. The ETW sensor runs on Windows only; "
            "install edr there with its Windows dependencies (pip install edr installs pywintrace and pywin32)"
        ) from exc


class EtwSource(ActorBase):
    """Starts the ETW session when it runs; forwards the bridge's batches until cancelled."""

    inputs: ClassVar = ()
    outputs: ClassVar = ("out",)
    is_source: ClassVar = True

    def __init__(self, name: str, session: EtwSession, bridge: CallbackBridge, batch_size: int) -> None:
        super().__init__(name)
        self.session = session
        self.bridge = bridge
        self.batch_size = batch_size
        self.sent = 0
        self._unsent: list[Any] = []

    async def run(self, ports: Ports) -> None:
        """Start the session, forward batches; on cancellation stop it and send what was left.

        Starting and stopping run in a worker thread (they block on Win32).
        Cancelled while starting, the start completes and is then undone.
        The session is stopped on every exit; once it is stopped (its
        consumer thread joined), the part of a batch whose send was cancelled
        and whatever the bridge still holds go down the draining pipeline,
        bounded by DRAIN_SECS. Records taken from the bridge are never dropped
        by a cancellation.
        """
        out = ports.output("out")
        self.bridge.attach()
        try:
            await trio.to_thread.run_sync(self.session.start)
            while True:
                self._unsent = await self.bridge.receive()
                await self._send(out)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.session.stop)
            self.bridge.close()
            self._unsent.extend(self.bridge.drain())
            with trio.move_on_after(DRAIN_SECS) as scope:
                scope.shield = True
                await self._send(out)

    async def _send(self, out: Any) -> None:
        """Send ``_unsent`` in batches; what a cancellation interrupts stays in ``_unsent``."""
        size = self.batch_size
        while self._unsent:
            chunk = self._unsent[:size]
            # an edge raises Cancelled before it queues, never after (with fan-out, an edge
            # that already took the chunk would get it again; the source has one edge)
            await out.send(chunk)
            del self._unsent[:size]
            self.sent += len(chunk)

    def statistics(self) -> dict[str, Any]:
        """Per provider the records the bridge had to drop (``lost``), ETW's own loss counters, the bridge's."""
        bridge = self.bridge.statistics()
        return {
            "sent": self.sent,
            "providers": {name: {"lost": n} for name, n in bridge["overflow"].items()},
            "session": self.session.statistics(),
            "bridge": bridge,
        }


class EtwNormalizerActor(ActorBase):
    """pywintrace records -> Sysmon-shaped Events, in arrival order."""

    inputs: ClassVar = ("in",)
    outputs: ClassVar = ("out",)

    def __init__(self, name: str, normalizer: EtwNormalizer, host: WindowsHost | None = None) -> None:
        super().__init__(name)
        self.normalizer = normalizer
        self.host = host
        self.batches = 0
        self._last_flush = time.monotonic()

    def _work(self, batch: Any) -> list[Any]:
        """Normalize one batch (None: only the periodic flush); runs in a worker thread."""
        events = self.normalizer.normalize_batch(batch) if batch else []
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_SECS:
            self._last_flush = now
            events.extend(self.normalizer.flush(time.time()))
        return events

    async def run(self, ports: Ports) -> None:
        """Normalize each batch in a worker thread; at the end flush the script blocks still pending.

        One batch at a time, so the normalizer's state is only ever touched
        by one thread. With no input for FLUSH_SECS the flush runs alone.
        """
        inp, out = ports.input("in"), ports.output("out")
        try:
            while True:
                batch: Any = None
                idle = True
                with trio.move_on_after(FLUSH_SECS):
                    batch = await inp.receive()
                    idle = False
                if not idle and batch is None:
                    break
                events = await trio.to_thread.run_sync(self._work, batch)
                self.batches += 1
                if events:
                    await out.send(events)
                del batch, events  # freed before the wait for the next: see edr.runtime.flight
            rest = self.normalizer.flush(None)
            if rest:
                await out.send(rest)
        finally:
            if self.host is not None:
                self.host.close()

    def statistics(self) -> dict[str, Any]:
        """The normalizer's counters and the PE cache's."""
        for _ in range(3):
            try:  # the worker thread may be updating a counter right now
                stats = self.normalizer.statistics()
                if self.host is not None and self.host.pe is not None:
                    stats["pe"] = self.host.pe.statistics()
                stats["batches"] = self.batches
                return stats
            except RuntimeError:
                continue
        return {"batches": self.batches}
