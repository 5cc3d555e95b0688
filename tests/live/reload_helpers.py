"""What the hot-reload and start-up live tests share: an agent with its own environment, a notify socket, load.

Everything here is real: `edr run` as a child process, a datagram socket
bound where systemd's would be, processes exec'd and files written by a
separate load process (the agent filters only its own PID).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from tests.live.agent import wait_for

#: A load process: exec ``/bin/true TAG SEQ`` RATE times a second for SECS seconds; prints how many it made.
EXEC_STORM = r"""
import os, sys, time
tag, rate, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
made = outstanding = 0
start = time.monotonic()
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    due = int(now * rate) + 1
    if made >= due:
        time.sleep(min((made + 1) / rate - now, 0.01))
        continue
    for _ in range(due - made):
        os.posix_spawn("/bin/true", ["/bin/true", tag, str(made)], {})
        made += 1
        outstanding += 1
    while outstanding:
        pid, _status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        outstanding -= 1
while outstanding:
    os.waitpid(-1, 0)
    outstanding -= 1
print(made, flush=True)
"""

#: A load process: create (and write) a new file in DIR RATE times a second until killed (new names:
#: the sensor reports a file written again less often than a new one).
FILE_WRITER = r"""
import os, sys, time
directory, rate = sys.argv[1], float(sys.argv[2])
made = 0
start = time.monotonic()
while True:
    now = time.monotonic() - start
    due = int(now * rate) + 1
    if made >= due:
        time.sleep(min((made + 1) / rate - now, 0.01))
        continue
    for _ in range(due - made):
        with open(os.path.join(directory, f"f{made}"), "w") as fh:
            fh.write("x")
        made += 1
"""


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting what an agent sends to ``NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._stop.set()
        self._thread.join()
        self._sock.close()


def start_agent_env(work: Path, config: str, env: dict[str, str], timeout: float) -> subprocess.Popen[bytes]:
    """`edr run` with ``config`` and extra environment, once its log says it started (None on failure)."""
    conf = work / "config.toml"
    conf.write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "edr", "run", "--config", str(conf), "--no-console"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
    if not wait_for(lambda: proc.poll() is not None or "edr started" in op_log(work / "logs"), timeout, 0.2) \
            or proc.poll() is not None:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"agent did not start: rc={proc.returncode} {err.decode()[-3000:]}")
    return proc


def op_log(logs: Path) -> str:
    """The operational log so far."""
    return "".join(f.read_text(errors="replace") for f in sorted(logs.glob("edr.log.*")))


def health_records(logs: Path) -> list[dict[str, Any]]:
    """Every health record in the operational log, oldest first."""
    return [orjson.loads(m.group(1)) for m in re.finditer(r" health (\{.*\})\s*$", op_log(logs), re.M)]


def kernel_lost(logs: Path) -> dict[str, int]:
    """Per family, the kernel-lost count of the last health record taken while the sensor was open.

    The final record is taken after the sensor closed, when its counters are gone: it is not used.
    """
    running = [h for h in health_records(logs) if not h.get("final")]
    assert running, "no health record was written while the agent ran"
    return {fam: f["lost"] for fam, f in running[-1]["actors"]["source"]["families"].items()}


def stop_agent(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, wait for the orderly stop; its exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
