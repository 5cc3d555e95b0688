"""Pools of worker processes for a command's CPU-bound work (compiling rules, reading recordings).

:func:`process_pool` makes a :class:`concurrent.futures.ProcessPoolExecutor`
started the cheapest way that is safe at that moment:

- ``fork`` when this process runs a single thread: the workers exist at
  once, with every module imported so far;
- else ``forkserver``: a fresh server process forks the workers, because
  the fork of a process with other threads can hand a child a lock that
  one of those threads held (Python 3.12 warns about it);
- ``spawn`` where neither exists (Windows).

Workers ignore SIGINT: a Ctrl-C reaches the whole foreground process group,
and stopping is the parent's decision (it cancels what it no longer needs
and shuts the pool down); a worker that dies is reported by the executor
(``BrokenProcessPool``), never waited for.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def default_workers() -> int:
    """The processors this process may run on: how many workers a command starts by default."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def start_method() -> str:
    """How :func:`process_pool` would start workers now: "fork", "forkserver" or "spawn"."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def process_pool(workers: int, *, preload: Sequence[str] = (), initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes (see the module doc).

    ``preload`` names modules a fork server imports once for all its workers
    (the workers' task functions live there); a forked worker has them if
    this process imported them. ``initializer(*initargs)`` runs in each
    worker when it starts, after SIGINT is ignored (it must be a module-level
    function: a fork server's workers import it by name).
    """
    method = start_method()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(preload))
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(initializer, initargs))


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
