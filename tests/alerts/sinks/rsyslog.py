"""A real rsyslog for the tests: started with a generated configuration on a loopback TCP port, stopped, restarted.

It writes what it receives with rsyslog's RFC 5424 template
(``RSYSLOG_SyslogProtocol23Format``: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID
STRUCTURED-DATA MSG``), one message a line. Its main queue is ``Direct``:
the input thread writes each message before it reads the next, so what
rsyslog read is in the file when it has stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

CONFIG = """\
global(workDirectory="{work}" maxMessageSize="64k")
main_queue(queue.type="Direct")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")
action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
"""

_ID = re.compile(rb'\[edr@32473 [^\]]*?\bid="([0-9a-f]{32})"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rsyslogd() -> str | None:
    return shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)


def find_or_install_rsyslogd() -> str | None:
    """rsyslogd's path; when absent, as root on a host with apt-get, Debian's package is installed first."""
    binary = _rsyslogd()
    if binary is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "rsyslog"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
        binary = _rsyslogd()
    return binary


class Rsyslog:
    """One rsyslogd, its configuration and its output file under ``directory``."""

    def __init__(self, directory: Path) -> None:
        binary = find_or_install_rsyslogd()
        if binary is None:
            pytest.skip("rsyslogd not installed and not installable here (apt-get install rsyslog; "
                        "scripts/setup_host.sh does)")
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.out = directory / "received.log"
        self.port = free_port()
        self.config = directory / "rsyslog.conf"
        self.config.write_text(CONFIG.format(work=directory, port=self.port, out=self.out))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        self.proc = subprocess.Popen([self.binary, "-n", "-f", str(self.config), "-i", str(self.directory / "pid")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited {self.proc.returncode}: {self.proc.stdout.read()!r}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen within 15 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM: what it read is then in the file; SIGKILL: a crash) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: it stops reading, alerts pile up unread in its socket buffers (a hung receiver)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def lines(self) -> list[bytes]:
        return self.out.read_bytes().splitlines() if self.out.exists() else []

    def count(self) -> int:
        return self.out.read_bytes().count(b"\n") if self.out.exists() else 0

    def ids(self) -> list[str]:
        """The ``id`` of the ``edr@32473`` structured data of every line received."""
        out = []
        for line in self.lines():
            match = _ID.search(line)
            assert match, f"a line without the alert's id in its structured data: {line[:300]!r}"
            out.append(match.group(1).decode())
        return out
