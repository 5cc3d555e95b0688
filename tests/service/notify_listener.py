"""A stand-in for systemd's notification socket: a real AF_UNIX datagram socket (test helper)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path


class NotifyListener:
    """Binds a ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) and records every datagram.

    ``address`` is the value to put in the child's ``NOTIFY_SOCKET``.  Messages
    are kept with the monotonic time they arrived; :meth:`wait_for` blocks
    until one containing a line is there.
    """

    def __init__(self, directory: Path | None = None, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if abstract:
            name = f"edr-test-notify-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            assert directory is not None
            path = directory / "notify.sock"
            self.sock.bind(str(path))
            os.chmod(path, 0o777)
            self.address = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        """Every line received so far, in order (a datagram may carry several)."""
        with self._lock:
            return [line for _t, text in self.messages for line in text.splitlines()]

    def wait_for(self, line: str, timeout: float, *, count: int = 1) -> bool:
        """Whether ``line`` arrived ``count`` times within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lines().count(line) >= count:
                return True
            time.sleep(0.02)
        return self.lines().count(line) >= count

    def close(self) -> None:
        """Stop recording and close the socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
