"""Test helper: the real sensor, decoder and enricher running in a background thread."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

from edr.enrich.enricher import Enricher
from edr.event import FILE_CHANGE, FILE_DELETE, FILE_EVENT, FILE_RENAME, Event, F
from edr.sources.ebpf.decode import Decoder
from edr.sources.ebpf.host import LiveHost
from edr.sources.ebpf.sensor import EbpfSensor

FILE_CATEGORIES = frozenset({FILE_EVENT, FILE_DELETE, FILE_RENAME, FILE_CHANGE})


def bad_file_path(event: Event) -> str | None:
    """Why a file event's path is not what rules and analysts are promised (None: it is).

    ``TargetFilename`` is absolute and never empty; so is ``SourceFilename``,
    except for a symlink, whose source is its content, kept verbatim.
    """
    if event.category not in FILE_CATEGORIES:
        return None
    target = event.fields.get(F.TARGET_FILENAME)
    if not isinstance(target, str) or not target.startswith("/"):
        return f"TargetFilename {target!r}"
    source = event.fields.get(F.SOURCE_FILENAME)
    if source is not None and event.fields.get(F.OPERATION) != "file_symlink" and not (
            isinstance(source, str) and source.startswith("/")):
        return f"SourceFilename {source!r}"
    return None


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
        #: every file event decoded with a relative or empty path, with the reason
        self.bad_paths: list[tuple[str, Event]] = []

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
                    bad = [(why, e) for e in batch if (why := bad_file_path(e)) is not None]
                    with self._lock:
                        self._events.extend(batch)
                        self.bad_paths.extend(bad)
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


_shared: LiveCapture | None = None
_users = 0


def acquire_capture() -> LiveCapture:
    """The process's one capture, started on first use (one compile, one set of probes per session)."""
    global _shared, _users
    if _shared is None:
        capture = LiveCapture()
        capture.start()
        _shared = capture
    _users += 1
    return _shared


def release_capture() -> None:
    """Give the capture back; the last user stops it."""
    global _shared, _users
    _users -= 1
    if _users == 0 and _shared is not None:
        _shared.stop()
        _shared = None


def bad_paths_since(capture: LiveCapture, start: int) -> list[str]:
    """The file events with a relative or empty path among those recorded from ``start`` on."""
    with capture._lock:
        bad = list(capture.bad_paths[start:])
    return [f"{why}: {e.category} {e.fields.get(F.OPERATION)} pid={e.fields.get(F.PROCESS_ID)} "
            f"image={e.fields.get(F.IMAGE)!r}" for why, e in bad]


#: What :func:`dns_server` answers every A query with.
DNS_ANSWER_IP = "127.0.0.9"


@contextlib.contextmanager
def dns_server() -> Iterator[None]:
    """A DNS server on 127.0.0.1:53 answering every A query with :data:`DNS_ANSWER_IP` (TTL 60), in a thread;
    skips the test when the port cannot be taken."""
    import pytest

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 53))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot listen on 127.0.0.1:53: {exc}")
    sock.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(query) < 17:
                continue
            txid, question = query[:2], query[12:]  # one question: name, type, class
            record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(DNS_ANSWER_IP)
            sock.sendto(txid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question + record, peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)
        sock.close()
