"""Test helper: the real sensor, decoder and enricher running in a background thread."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

from edr.enrich.enricher import Enricher
from edr.event import Event
from edr.sources.ebpf.decode import Decoder
from edr.sources.ebpf.host import LiveHost
from edr.sources.ebpf.sensor import EbpfSensor


class LiveCapture:
    """Poll, decode and enrich continuously, as the agent does, and keep every event."""

    def __init__(self) -> None:
        self.sensor = EbpfSensor()
        self.decoder = Decoder(host=LiveHost(), ignore_pids=self.sensor.ignore_pids)
        self.enricher = Enricher()
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ebpf-capture", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.sensor.open()
        self.enricher.seed_running()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sensor.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = []
                for raw in self.sensor.poll(50):
                    for event in self.decoder.decode(raw):
                        batch.append(self.enricher.process(event))
                batch.extend(self.enricher.process(e) for e in self.decoder.flush())
                if batch:
                    with self._lock:
                        self._events.extend(batch)
        except BaseException as exc:  # surfaced by wait_for
            self.error = exc

    def mark(self) -> int:
        """A position: later look-ups consider events from here on."""
        with self._lock:
            return len(self._events)

    def wait_for(self, predicate: Callable[[Event], bool], since: int, timeout: float = 5.0,
                 count: int = 1, settle: float = 0.0) -> list[Event]:
        """Events after ``since`` matching ``predicate``, once ``count`` of them arrived (or the timeout).

        ``settle``: after that, wait this long more, to see events that should not come.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.error is not None:
                raise RuntimeError("capture thread failed") from self.error
            with self._lock:
                found = [e for e in self._events[since:] if predicate(e)]
            if len(found) >= count or time.monotonic() > deadline:
                if settle:
                    time.sleep(settle)
                    with self._lock:
                        found = [e for e in self._events[since:] if predicate(e)]
                return found
            time.sleep(0.05)


def run_python(code: str, *args: str, timeout: float = 20.0) -> str:
    """Run a trigger script in a child Python (not ignored by the sensor); return its stdout."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, check=True)
    return done.stdout
