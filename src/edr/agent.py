"""The live agent: pick this platform's sensor, check it can start, run the graph.

Start-up order, each step before anything slower: the sensor's
preconditions (exit 3), the instance lock (exit 2 when another agent runs
on this configuration), the rule paths' permissions (refusals logged, the
agent runs on the rest), then the rules and the sensor are loaded and the
graph runs until SIGINT/SIGTERM (as a Windows service: until the service
control manager's stop, see :mod:`edr.service.windows_stop`), stopping
within ``agent.stop_timeout_secs``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from edr.alerts.retention_task import retention_task
from edr.config import LoadedConfig
from edr.health import health_task, log_health, watchdog_task
from edr.instance_lock import InstanceLock, InstanceLocked, acquire
from edr.platform import current
from edr.rule_trust import check_rules
from edr.rulepacks.active import expand_pack
from edr.runtime.supervisor import Supervisor
from edr.shutdown import hard_exit, report_unwritten
from edr.wiring.context import AgentContext, Shared
from edr.wiring.graphs import mode_graph

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
               schedule: Callable[[Callable[[], None]], None]) -> None:
        """From the event loop, once the graph runs: deliver stops with ``schedule(stop)``, then ``schedule(abort)``."""
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
    try:
        import bcc  # noqa: F401
    except ImportError:
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


def preflight_linux() -> str | None:
    """Why the eBPF sensor cannot start here, with the fix; None when it can."""
    return next((probe.message for probe in linux_preflight() if not probe.ok), None)


def take_instance_lock(loaded: LoadedConfig) -> InstanceLock | str:
    """The instance lock of this configuration, or why it cannot be had (a message for exit 2)."""
    try:
        return acquire(loaded.config.agent.state_directory)
    except InstanceLocked as exc:
        return str(exc)
    except OSError as exc:  # UnsafePath's message says what is wrong and the fix
        return f"cannot take the instance lock in {loaded.config.agent.state_directory} (agent.state_directory): {exc}"


def run_live(loaded: LoadedConfig, *, service_stop: ServiceStop | None = None) -> int:
    """Run the live pipeline of this platform until SIGINT/SIGTERM; returns the exit code.

    With ``service_stop`` (the Windows service), stops come through it instead
    of signals: one asked for before the graph runs means the graph never
    starts (exit 0), one asked for later is the supervisor's orderly stop.
    """
    mode = current().name
    if mode == "linux":
        problem = preflight_linux()
        if problem:
            log.error("cannot start the live sensor: %s", problem)
            print(f"edr: cannot start the live sensor: {problem}", file=sys.stderr)
            return 3
    lock = take_instance_lock(loaded)
    if isinstance(lock, str):
        log.error("%s", lock)
        print(f"edr: {lock}", file=sys.stderr)
        return 2
    try:
        return _run_locked(loaded, mode, service_stop)
    finally:
        lock.release()


def _service_stopping(sup: Supervisor) -> None:
    """The service control manager's stop, in the event loop: what the first SIGTERM does."""
    if sup.stop_timeout is None:
        log.info("service stop: stopping sources, draining the pipeline")
    else:
        log.info("service stop: stopping sources, draining the pipeline (at most %.1fs)", sup.stop_timeout)
    sup.stop()


def _run_locked(loaded: LoadedConfig, mode: str, service_stop: ServiceStop | None = None) -> int:
    trust = check_rules(expand_pack(loaded.config))
    trust.log_refusals(echo=not loaded.config.logging.console_output)
    graph = mode_graph(mode, loaded.config.pipeline.capacities)
    yara_files = None if trust.yara_files is None else [str(f) for f in trust.yara_files]
    ctx = AgentContext.create(trust.config, mode, shared=Shared(trust.config, yara_files=yara_files), log=log)
    sup = Supervisor(graph, ctx, stop_timeout=loaded.config.agent.stop_timeout_secs)
    service = current().service
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
        return 0

    def started() -> None:
        # said once the graph runs and SIGTERM/SIGINT are the supervisor's: from here a stop drains
        log.info("edr started (%s graph, pid %d)", mode, os.getpid())
        service.notify_ready()
        if service_stop is not None:
            service_stop.attach(functools.partial(_service_stopping, sup), functools.partial(sup.abort, "second stop"),
                                trio.lowlevel.current_trio_token().run_sync_soon)

    background = [functools.partial(health_task, interval=float(loaded.config.health.interval_secs))]
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
