"""Pools of worker processes: finished before the interpreter's own wake-up of the pools at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

#: CPython 3.11's wake-up of a pool at exit checks that the pipe is open, then writes to it, without
#: the pool's lock; here the moment between the two is made long (0.3 s), so that a manager thread
#: closing the pipe meanwhile always makes the write fail, as it does now and then otherwise.
SLOW_WAKEUP = """
import time
import concurrent.futures.process as cfp

def slow_wakeup(self):
    if not self._closed:
        time.sleep(0.3)
        self._writer.send_bytes(b"")

cfp._ThreadWakeup.wakeup = slow_wakeup
"""


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    script = SLOW_WAKEUP + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_a_pool_shut_down_without_waiting_ends_cleanly_at_exit(start: str) -> None:
    # as the replay's reader pool: shut down without waiting, the process exits at once while the
    # pool's manager thread is still closing its wake-up pipe
    r = run_script(f"""
        from edr.runtime import process_pool
        process_pool.start_method = lambda: {start!r}
        pool = process_pool.process_pool(1)
        assert pool.submit(abs, -1).result() == 1
        pool.shutdown(wait=False, cancel_futures=True)
    """)
    assert (r.returncode, r.stderr) == (0, "")


def test_a_broken_pool_ends_cleanly_at_exit() -> None:
    # a worker that dies: the manager thread closes the pool's pipes on its own
    r = run_script("""
        import os
        from concurrent.futures.process import BrokenProcessPool
        from edr.runtime import process_pool
        process_pool.start_method = lambda: "fork"
        pool = process_pool.process_pool(1)
        try:
            pool.submit(os._exit, 3).result()
        except BrokenProcessPool:
            pass
        else:
            raise AssertionError("the worker did not die")
    """)
    assert (r.returncode, r.stderr) == (0, "")


def test_an_open_pool_still_does_its_work_at_exit() -> None:
    # as CPython does at exit for a pool never shut down, what was submitted is done first; the manager
    # thread then closes the pool while the interpreter wakes it (the same race)
    r = run_script("""
        import time
        from edr.runtime import process_pool
        process_pool.start_method = lambda: "fork"
        pool = process_pool.process_pool(1)
        future = pool.submit(time.sleep, 0.2)
        future.add_done_callback(lambda f: print("done", f.exception()))
    """)
    assert (r.returncode, r.stdout, r.stderr) == (0, "done None\n", "")
