"""The live agent: pick this platform's sensor, check it can start, run the graph.

Start-up order, each step before anything slower: the sensor's
preconditions (exit 3), the directories it writes (exit 2 naming the first
that cannot be created or written: a log, alert, event or state directory),
the instance lock (exit 2 when another agent runs on this configuration),
the rule paths' permissions (refusals logged, the agent runs on the rest),
then the rules are compiled, and only then is the sensor attached (and
drained until the graph runs: start-up loses no kernel record), and the
graph runs until SIGINT/SIGTERM, stopping within ``agent.stop_timeout_secs``.

SIGHUP (``edr reload``, systemd's ``ExecReload``) reloads the rules and the
reloadable configuration keys while the graph runs (see
:mod:`edr.wiring.reload`): it never stops the agent, not even when it
arrives during start-up (the reload then follows the start).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from edr.config import Config, LoadedConfig
from edr.health import health_task, log_health, watchdog_task
from edr.instance_lock import LOCK_NAME, InstanceLock, InstanceLocked, acquire
from edr.platform import ServiceNotifier, current
from edr.platform.private_files import PrivateDir
from edr.rule_trust import check_config_file, check_rules
from edr.rulepacks.active import expand_pack
from edr.runtime.supervisor import Supervisor
from edr.shutdown import hard_exit, report_unwritten
from edr.wiring.context import AgentContext, Shared
from edr.wiring.graphs import mode_graph
from edr.wiring.reload import Reloader

log = logging.getLogger("edr")


def preflight_linux() -> str | None:
    """Why the eBPF sensor cannot start here, with the fix; None when it can."""
    if os.geteuid() != 0:
        return "edr run needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return ("bcc is not importable: install it with `apt-get install python3-bpfcc` and use a venv made "
                "with --system-site-packages (make run does both; see scripts/setup_host.sh)")
    release = os.uname().release
    if not os.path.isdir(f"/lib/modules/{release}/build/include"):
        return (f"no kernel headers at /lib/modules/{release}/build: run scripts/setup_host.sh "
                "(installs linux-headers-amd64 and links it for this kernel)")
    if not (os.path.isdir("/sys/kernel/tracing/events") or os.path.isdir("/sys/kernel/debug/tracing/events")):
        return "tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing (scripts/setup_host.sh does it)"
    return None


def take_instance_lock(loaded: LoadedConfig) -> InstanceLock | str:
    """The instance lock of this configuration, or why it cannot be had (a message for exit 2)."""
    try:
        return acquire(loaded.config.agent.state_directory)
    except InstanceLocked as exc:
        return str(exc)
    except OSError as exc:  # UnsafePath's message says what is wrong and the fix
        return f"cannot take the instance lock in {loaded.config.agent.state_directory} (agent.state_directory): {exc}"


#: The name of the file a start-up check creates (and removes) in each directory to prove it writable.
_PROBE = ".edr-write-check"


def written_directories(config: Config) -> list[tuple[str, str]]:
    """The directories the agent writes, as (configuration key, path): logs, alerts, events (when on), state."""
    dirs = [("logging.directory", config.logging.directory), ("alerts.directory", config.alerts.directory)]
    if config.events.enabled:
        dirs.append(("events.directory", config.events.directory))
    dirs.append(("agent.state_directory", config.agent.state_directory))
    return dirs


def unwritable_directory(config: Config) -> tuple[str, str] | None:
    """The first directory the agent writes that cannot be used: (its key, why, naming key and path); or None.

    Each is created as its writer would create it (owner-only, checked, no
    links) and a file is created in it and removed again, so a read-only
    mount, a file in the way or permissions are all found before the sensor
    starts. At run time the writers retry instead (a disk may come back).
    """
    seen: set[str] = set()
    for key, path in written_directories(config):
        path = os.path.abspath(path)
        if path in seen:
            continue
        seen.add(path)
        directory = PrivateDir(path)
        probe = f"{_PROBE}.{os.getpid()}"
        try:
            os.close(directory.open_append(probe))
            os.unlink(probe, dir_fd=directory.fd())
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if getattr(exc, "reason", None):  # UnsafePath: what is wrong and the fix
                reason = str(exc.reason)  # type: ignore[attr-defined]
            return key, f"the directory {path} ({key}) cannot be written: {reason}"
        finally:
            directory.close()
    return None


class EarlyHangup:
    """SIGHUP before the reload task listens: remembered (the reload follows the start), never fatal.

    Installed first thing in :func:`run_live`; the reload task's signal
    receiver replaces it while the graph runs and puts it back after, so a
    SIGHUP at any time during the run is either a reload or remembered.
    """

    def __init__(self) -> None:
        self.pending = False
        self.previous: Any = None
        try:
            self.previous = signal.signal(signal.SIGHUP, self._handler)
        except (ValueError, AttributeError):  # not the main thread, or no SIGHUP (Windows)
            self.previous = None

    def _handler(self, _signum: int, _frame: object) -> None:
        self.pending = True

    def take(self) -> bool:
        """Whether a SIGHUP came since the last call."""
        pending, self.pending = self.pending, False
        return pending

    def restore(self) -> None:
        """Put back the disposition it replaced."""
        if self.previous is not None:
            signal.signal(signal.SIGHUP, self.previous)
            self.previous = None


def reload_task(reloader: Reloader, service: ServiceNotifier,
                early: EarlyHangup) -> Callable[[Supervisor], Awaitable[None]]:
    """The background task that reloads the rules on SIGHUP (see :mod:`edr.wiring.reload`).

    Requests coalesce: while a reload compiles, one more SIGHUP queues
    one more reload (it may carry edits made after this one read its
    files) and any further ones merge into it. The compile runs in a worker
    thread; the swap and the log lines happen here, on the event loop, and
    the service manager hears ``RELOADING=1`` (with ``MONOTONIC_USEC``) and,
    whatever the outcome, ``READY=1``. Cancelled with the other background
    tasks when the graph has ended; a compile under way is abandoned.
    """

    async def run(sup: Supervisor) -> None:
        send, receive = trio.open_memory_channel[str](1)

        def request(why: str) -> None:
            try:
                send.send_nowait(why)
            except trio.WouldBlock:
                log.info("reload: %s while a reload is pending: merged into it", why)

        async def worker() -> None:
            async for why in receive:
                if sup.stopping:
                    log.info("reload: %s ignored: the agent is stopping", why)
                    continue
                service.notify_reloading()
                log.info("reload: %s; compiling the rules (rule set #%d stays in force meanwhile)", why,
                         reloader.holder.version)
                candidate = await trio.to_thread.run_sync(reloader.compile, abandon_on_cancel=True)
                reloader.apply(candidate)
                service.notify_ready()

        hangup = getattr(signal, "SIGHUP", None)
        if hangup is None:  # Windows: no SIGHUP (a service control would be its reload)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            with trio.open_signal_receiver(hangup) as signals:
                if early.take():
                    request("SIGHUP received during start-up")
                async for _ in signals:
                    request("SIGHUP received")

    return run


def _prepare_rules(loaded: LoadedConfig) -> tuple[Config, list[str] | None, tuple[str, ...]]:
    """What the engines of ``loaded`` are built from: rule packs expanded, untrusted rule files refused.

    Returns that configuration, the YARA files to compile (None: all) and
    the refusals' messages (logged here). A configuration file other users
    can change raises ConfigError, as at start.
    """
    warning = check_config_file(loaded)
    if warning:
        log.warning("%s", warning)
    trust = check_rules(expand_pack(loaded.config))
    trust.log_refusals()
    yara_files = None if trust.yara_files is None else [str(f) for f in trust.yara_files]
    return trust.config, yara_files, tuple(r.message(trust.enforced) for r in trust.refusals)


def running_agent(state_directory: str) -> int | str:
    """The PID of the agent holding the instance lock of ``state_directory``, or why there is none.

    The lock is tested, not trusted: a lock file nobody holds (the agent
    ended) is no agent, whatever PID it names. Nothing is written.
    """
    directory = PrivateDir(os.path.abspath(state_directory), create=False)
    path = directory.path / LOCK_NAME
    try:
        fd = directory.open_read(LOCK_NAME)
    except FileNotFoundError:
        return f"no edr agent is running on this configuration: {path} does not exist (agent.state_directory)"
    except OSError as exc:
        return f"cannot read the instance lock {path} (agent.state_directory): {exc}"
    finally:
        directory.close()
    try:
        if current().lock_file(fd):  # taken: nobody held it (closing the descriptor drops it again)
            return f"no edr agent is running on this configuration: nobody holds the lock {path}"
        for _ in range(50):  # the holder writes its PID just after taking the lock
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return int(text)
            time.sleep(0.02)
        return f"the agent holding {path} has not written its PID there"
    finally:
        os.close(fd)


def signal_reload(state_directory: str) -> tuple[int | None, str]:
    """Send SIGHUP to the agent of ``state_directory``: (its PID, what was done) or (None, why not)."""
    pid = running_agent(state_directory)
    if isinstance(pid, str):
        return None, pid
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return None, f"cannot signal the agent (PID {pid}): {exc.strerror or exc}"
    return pid, f"reload requested: SIGHUP sent to the edr agent (PID {pid}); its log says what was reloaded"


def run_live(loaded: LoadedConfig) -> int:
    """Run the live pipeline of this platform until SIGINT/SIGTERM; returns the exit code."""
    early = EarlyHangup()
    try:
        return _run_live(loaded, early)
    finally:
        early.restore()


def _run_live(loaded: LoadedConfig, early: EarlyHangup) -> int:
    mode = current().name
    if mode == "linux":
        problem = preflight_linux()
        if problem:
            log.error("cannot start the live sensor: %s", problem)
            print(f"edr: cannot start the live sensor: {problem}", file=sys.stderr)
            return 3
    unwritable = unwritable_directory(loaded.config)
    if unwritable:
        key, why = unwritable
        # One line on stderr: the op log's own (console logging on) or ours. The op log gets it
        # unless the log's directory is the one that cannot be written (its handler would complain too).
        logged = key != "logging.directory"
        if logged:
            log.error("cannot start: %s", why)
        if not (logged and loaded.config.logging.console_output):
            print(f"edr: cannot start: {why}", file=sys.stderr)
        return 2
    lock = take_instance_lock(loaded)
    if isinstance(lock, str):
        log.error("%s", lock)
        print(f"edr: {lock}", file=sys.stderr)
        return 2
    try:
        return _run_locked(loaded, mode, early)
    finally:
        lock.release()


def _run_locked(loaded: LoadedConfig, mode: str, early: EarlyHangup) -> int:
    trust = check_rules(expand_pack(loaded.config))
    trust.log_refusals(echo=not loaded.config.logging.console_output)
    graph = mode_graph(mode, loaded.config.pipeline.capacities)
    yara_files = None if trust.yara_files is None else [str(f) for f in trust.yara_files]
    ctx = AgentContext.create(trust.config, mode, shared=Shared(trust.config, yara_files=yara_files), log=log)
    sup = Supervisor(graph, ctx, stop_timeout=loaded.config.agent.stop_timeout_secs)
    service = current().service
    # The rules first (seconds, a cold Sigma set 10-15 s), the sensor after: attached, its rings
    # are drained from then on, so compiling before attaching keeps that start-up window short.
    rules = ctx.shared.rules
    # The full collection the supervisor makes before the graph runs walks every object of the
    # rules (a second or more for SigmaHQ's) holding the GIL, and the sensor's start-up drain
    # cannot run meanwhile: do it now, before the sensor is attached, and freeze what it keeps
    # (as the supervisor would), so that collection finds almost nothing left to walk.
    gc.collect()
    gc.freeze()
    refusals = tuple(r.message(trust.enforced) for r in trust.refusals)
    reloader = Reloader(loaded, trust.config, rules, problems=refusals + rules.current.problems,
                        prepare=_prepare_rules, log=logging.getLogger("edr.reload"))
    try:
        sup.build_actors()
    except Exception as exc:  # a sensor that fails to load is reported, not a traceback
        from edr.sources.ebpf.errors import SensorUnavailable

        if isinstance(exc, SensorUnavailable):
            log.error("cannot start the live sensor: %s", exc)
            print(f"edr: cannot start the live sensor: {exc}", file=sys.stderr)
            return 3
        raise
    def started() -> None:
        # said once the graph runs and SIGTERM/SIGINT are the supervisor's: from here a stop drains
        log.info("edr started (%s graph, pid %d)", mode, os.getpid())
        service.notify_ready()

    background = [functools.partial(health_task, interval=float(loaded.config.health.interval_secs)),
                  reload_task(reloader, service, early)]
    if loaded.config.health.watchdog:
        background.append(watchdog_task)
    code = trio.run(functools.partial(sup.run, background=background,
                                      on_started=started,
                                      on_stuck=hard_exit(sup, lambda: log_health(sup, final=True))))
    service.notify_stopping()
    log_health(sup, final=True)
    report_unwritten(sup, echo=not loaded.config.logging.console_output)
    log.info("edr stopped (exit %d)", code)
    return code
