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

Every pool made here is finished before the interpreter's own wake-up of
the pools at exit (:func:`_finish_pools`). CPython (3.11; up to 3.12.7 and
3.13.0) wakes each pool's manager thread at exit without the pool's lock,
checking that the wake-up pipe is open and then writing to it: a manager
thread that closes that pipe in between (a pool shut down without waiting,
or broken by a dead worker, is doing exactly that) makes the write fail
("Bad file descriptor", printed at exit), or land in whatever file was
opened since under the same descriptor number.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import ProcessPoolExecutor
from typing import Any
from weakref import WeakSet


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
    pool = _Pool(max_workers=workers, mp_context=context, initializer=_start_worker,
                 initargs=(initializer, initargs))
    _pools.add(pool)
    return pool


class _Pool(ProcessPoolExecutor):
    """A pool whose manager thread is remembered when it is shut down without waiting (see the module doc)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As :meth:`ProcessPoolExecutor.shutdown`; the manager thread is joined before the interpreter exits."""
        manager = getattr(self, "_executor_manager_thread", None)  # private; forgotten by the shutdown
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        _pools.discard(self)
        if manager is not None and manager.is_alive():
            _stopping.append(manager)


#: Pools made and not shut down yet.
_pools: WeakSet[_Pool] = WeakSet()
#: The manager threads of pools shut down without waiting: they may still be closing the pool.
_stopping: list[threading.Thread] = []


def _finish_pools() -> None:
    """At exit, before concurrent.futures wakes the pools (see the module doc): finish every pool of ours.

    A pool still open is shut down as CPython would at exit (its pending
    work done), but through :meth:`~ProcessPoolExecutor.shutdown`, which
    wakes its manager under the pool's lock; then every manager thread is
    joined, so that each has closed its wake-up pipe before the
    interpreter's unlocked wake-up looks at it.
    """
    for pool in list(_pools):
        pool.shutdown(wait=False)
    while _stopping:
        _stopping.pop().join()


def _forget_pools() -> None:
    """In a forked child: the pools are the parent's (their locks perhaps held by a thread of the parent)."""
    _pools.clear()
    _stopping.clear()


if hasattr(os, "register_at_fork"):  # not on Windows (no fork there)
    os.register_at_fork(after_in_child=_forget_pools)
# Registered after concurrent.futures.process registered its own hook (at its import, above): threading runs
# these hooks in reverse order, so this one runs first. Private CPython; where absent, there is no such hook.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_finish_pools)


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
