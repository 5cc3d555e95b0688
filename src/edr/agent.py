"""The live agent: pick this platform's sensor, check it can start, run the graph.

Start-up order, each step before anything slower: the sensor's
preconditions (exit 3), the instance lock (exit 2 when another agent runs
on this configuration), the rule paths' permissions (refusals logged, the
agent runs on the rest), then the rules and the sensor are loaded and the
graph runs until SIGINT/SIGTERM, stopping within ``agent.stop_timeout_secs``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

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


def run_live(loaded: LoadedConfig) -> int:
    """Run the live pipeline of this platform until SIGINT/SIGTERM; returns the exit code."""
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
        return _run_locked(loaded, mode)
    finally:
        lock.release()


def _run_locked(loaded: LoadedConfig, mode: str) -> int:
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
    def started() -> None:
        # said once the graph runs and SIGTERM/SIGINT are the supervisor's: from here a stop drains
        log.info("edr started (%s graph, pid %d)", mode, os.getpid())
        service.notify_ready()

    background = [functools.partial(health_task, interval=float(loaded.config.health.interval_secs))]
    if loaded.config.health.watchdog:
        background.append(watchdog_task)
    background.append(functools.partial(retention_task, config=trust.config))
    code = trio.run(functools.partial(sup.run, background=background,
                                      on_started=started,
                                      on_stuck=hard_exit(sup, lambda: log_health(sup, final=True))))
    service.notify_stopping()
    log_health(sup, final=True)
    report_unwritten(sup, echo=not loaded.config.logging.console_output)
    log.info("edr stopped (exit %d)", code)
    return code
