"""The live agent: pick this platform's sensor, check it can start, run the graph.

Start-up order, each step before anything slower: the sensor's
preconditions (exit 3), the directories it writes (exit 2 naming the first
that cannot be created or written: a log, alert, event or state directory),
the instance lock (exit 2 when another agent runs on this configuration),
the rule paths' permissions (refusals logged, the agent runs on the rest),
then the rules are compiled, and only then is the sensor attached (and
drained until the graph runs: start-up loses no kernel record), and the
graph runs until SIGINT/SIGTERM (as a Windows service: until the service
control manager's stop, see :mod:`edr.service.windows_stop`), stopping
within ``agent.stop_timeout_secs``.

SIGHUP (``edr reload``, systemd's ``ExecReload``) reloads the rules and the
reloadable configuration keys while the graph runs (see
:mod:`edr.wiring.reload`): it never stops the agent, not even when it
arrives during start-up (the reload then follows the start).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from edr.alerts.retention_task import retention_task
from edr.config import Config, LoadedConfig, SensorConfig
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

if TYPE_CHECKING:
    from edr.sources.ebpf.loader import Probe

log = logging.getLogger("edr")


class ServiceStop(Protocol):
    """Stops from a service manager that sends no signals (:class:`edr.service.windows_stop.ServiceStop`)."""

    @property
    def requested(self) -> bool:
        """Whether a stop has been asked for."""
        ...

    def attach(self, stop: Callable[[], None], abort: Callable[[], None],
               schedule: Callable[[Callable[[], None]], None], reload: Callable[[], None] | None = None) -> None:
        """From the event loop, once the graph runs: deliver stops with ``schedule(stop)``, then ``schedule(abort)``;
        reload requests with ``schedule(reload)``."""
        ...

    def detach(self) -> None:
        """The run is over."""
        ...


def linux_preflight() -> tuple[Probe, ...]:
    """What ``edr run`` checks before it starts the eBPF sensor, each a Probe (none stops the others).

    In order: privileges, bcc, kernel headers, tracefs. The sensor checks
    again as it loads (:func:`edr.sources.ebpf.loader.preflight_probes`,
    which accepts a little more: CAP_BPF and CAP_PERFMON without root,
    headers from /lib/modules/.../source or the kheaders module).
    """
    from edr.sources.ebpf.loader import Probe

    probes: list[Probe] = []
    if os.geteuid() != 0:
        probes.append(Probe("privileges", False, f"uid {os.geteuid()}",
                            "edr run needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs",
                            "run it with sudo"))
    else:
        probes.append(Probe("privileges", True, "running as root"))
    # found, not imported: importing bcc maps LLVM into the agent (the sensor compiles in a child)
    if importlib.util.find_spec("bcc") is None:
        probes.append(Probe("bcc", False, "not importable", "bcc is not importable",
                            "install it with `apt-get install python3-bpfcc` and use a venv made with "
                            "--system-site-packages (make run does both; see scripts/setup_host.sh)"))
    else:
        probes.append(Probe("bcc", True, "importable"))
    release = os.uname().release
    if not os.path.isdir(f"/lib/modules/{release}/build/include"):
        probes.append(Probe("kernel headers", False, f"none for {release}",
                            f"no kernel headers at /lib/modules/{release}/build",
                            "run scripts/setup_host.sh (installs linux-headers-amd64 and links it for this kernel)"))
    else:
        probes.append(Probe("kernel headers", True, f"/lib/modules/{release}/build/include"))
    roots = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    mounted = [root for root in roots if os.path.isdir(f"{root}/events")]
    if not mounted:
        probes.append(Probe("tracefs", False, "not mounted", "tracefs is not mounted",
                            "mount -t tracefs nodev /sys/kernel/tracing (scripts/setup_host.sh does it)"))
    else:
        probes.append(Probe("tracefs", True, f"mounted at {mounted[0]}"))
    return tuple(probes)


#: What only compiling the sensor needs: a cached build matching this kernel and configuration does
#: without. Not bcc: its version is part of the build's identity (the cache key), so without bcc no
#: cached build matches.
COMPILE_ONLY_PROBES = frozenset({"kernel headers"})


def preflight_linux(sensor: SensorConfig | None = None, cache_dir: str = "") -> str | None:
    """Why the eBPF sensor cannot start here, with the fix; None when it can.

    The kernel headers are needed only to compile the sensor (in a child
    process): when they are missing but ``cache_dir`` holds a build matching
    this kernel and the ``sensor`` settings, the sensor can start.
    """
    failing = [probe for probe in linux_preflight() if not probe.ok]
    if sensor is not None and cache_dir and any(p.name in COMPILE_ONLY_PROBES for p in failing):
        from edr.sources.ebpf import loader, objcache

        flags = loader.cflags(frozenset(sensor.families), sensor.max_args, sensor.max_arg_bytes, sensor.page_count)
        if objcache.status(cache_dir, flags)[0]:
            failing = [p for p in failing if p.name not in COMPILE_ONLY_PROBES]
    return failing[0].message if failing else None


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
            # UnsafePath carries what is wrong and the fix in ``reason``
            reason = str(getattr(exc, "reason", None) or exc.strerror or exc)
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


class ReloadRequests:
    """Rule reloads on request: SIGHUP, or a service control (see :mod:`edr.wiring.reload`).

    :meth:`run` is the background task: it reloads one request at a time and
    listens for SIGHUP when ``signals`` (the main thread, not Windows).
    Requests coalesce: while a reload compiles, one more request queues one
    more reload (it may carry edits made after this one read its files) and
    any further ones merge into it. The compile runs in a worker thread; the
    swap and the log lines happen on the event loop, and the service manager
    hears ``RELOADING=1`` (with ``MONOTONIC_USEC``) and, whatever the outcome,
    ``READY=1``. Cancelled with the other background tasks when the graph has
    ended; a compile under way is abandoned.
    """

    def __init__(self, reloader: Reloader, service: ServiceNotifier, early: EarlyHangup, *, signals: bool) -> None:
        self.reloader = reloader
        self.service = service
        self.early = early
        self.signals = signals
        self._send: trio.MemorySendChannel[str] | None = None
        self._early: list[str] = []

    def request(self, why: str) -> None:
        """Ask for a reload (in the event loop); before :meth:`run` listens, it is kept for then."""
        send = self._send
        if send is None:
            self._early.append(why)
            return
        try:
            send.send_nowait(why)
        except trio.WouldBlock:
            log.info("reload: %s while a reload is pending: merged into it", why)

    async def run(self, sup: Supervisor) -> None:
        """Serve requests until cancelled."""
        send, receive = trio.open_memory_channel[str](1)
        self._send = send
        for why in self._early:
            self.request(why)
        self._early.clear()
        reloader, service = self.reloader, self.service

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

        hangup = getattr(signal, "SIGHUP", None) if self.signals else None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            if hangup is None:  # a service's run (no signals there): its control requests come via request()
                return
            with trio.open_signal_receiver(hangup) as signals:
                if self.early.take():
                    self.request("SIGHUP received during start-up")
                async for _ in signals:
                    self.request("SIGHUP received")


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


def run_live(loaded: LoadedConfig, *, service_stop: ServiceStop | None = None) -> int:
    """Run the live pipeline of this platform until SIGINT/SIGTERM; returns the exit code.

    With ``service_stop`` (the Windows service), stops come through it instead
    of signals: one asked for before the graph runs means the graph never
    starts (exit 0), one asked for later is the supervisor's orderly stop.
    """
    early = EarlyHangup()
    try:
        return _run_live(loaded, early, service_stop)
    finally:
        early.restore()


def _run_live(loaded: LoadedConfig, early: EarlyHangup, service_stop: ServiceStop | None = None) -> int:
    mode = current().name
    if mode == "linux":
        problem = preflight_linux(loaded.config.sensor, loaded.config.sigma.cache_dir)
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
        return _run_locked(loaded, mode, early, service_stop)
    finally:
        lock.release()


def _service_stopping(sup: Supervisor) -> None:
    """The service control manager's stop, in the event loop: what the first SIGTERM does."""
    if sup.stop_timeout is None:
        log.info("service stop: stopping sources, draining the pipeline")
    else:
        log.info("service stop: stopping sources, draining the pipeline (at most %.1fs)", sup.stop_timeout)
    sup.stop()


def _abandon(sup: Supervisor) -> None:
    """Undo what building the actors started (the sensor, its start-up drain) when the graph will not run."""
    for actor in sup.actors.values():
        abandon = getattr(actor, "abandon", None)
        if abandon is not None:
            try:
                abandon()
            except Exception:  # the exit goes on: the kernel frees what is left
                log.exception("%s: could not be closed", getattr(actor, "name", actor))


def _run_locked(loaded: LoadedConfig, mode: str, early: EarlyHangup,
                service_stop: ServiceStop | None = None) -> int:
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
    if service_stop is not None and service_stop.requested:
        log.info("stop requested while starting: the graph was not started")
        _abandon(sup)
        return 0

    def started() -> None:
        # said once the graph runs and SIGTERM/SIGINT are the supervisor's: from here a stop drains
        log.info("edr started (%s graph, pid %d)", mode, os.getpid())
        service.notify_ready()
        if service_stop is not None:
            service_stop.attach(functools.partial(_service_stopping, sup), functools.partial(sup.abort, "second stop"),
                                trio.lowlevel.current_trio_token().run_sync_soon,
                                functools.partial(reloads.request, "service control: reload"))

    # a service's Trio runs outside the main thread, where signals cannot be received: its reloads come
    # from the service control manager through service_stop
    reloads = ReloadRequests(reloader, service, early, signals=service_stop is None)
    background = [functools.partial(health_task, interval=float(loaded.config.health.interval_secs)),
                  reloads.run]
    if loaded.config.health.watchdog:
        background.append(watchdog_task)
    background.append(functools.partial(retention_task, config=trust.config))
    from edr.metrics.listen import MetricsUnavailable
    from edr.metrics.observe import observe

    try:
        observers = observe(trust.config, sup, ctx.shared.detection.engines)
    except MetricsUnavailable as exc:
        log.error("%s", exc)
        print(f"edr: {exc}", file=sys.stderr)
        _abandon(sup)
        return 3
    background += observers.background
    try:
        # a service's Trio runs outside the main thread, where signals cannot be received: its stops come
        # through service_stop
        code = trio.run(functools.partial(sup.run, background=background, handle_signals=service_stop is None,
                                          on_started=started,
                                          on_stuck=hard_exit(sup, lambda: log_health(sup, final=True))))
    finally:
        observers.stop()
        if service_stop is not None:
            service_stop.detach()
    service.notify_stopping()
    log_health(sup, final=True)
    report_unwritten(sup, echo=not loaded.config.logging.console_output)
    log.info("edr stopped (exit %d)", code)
    return code
