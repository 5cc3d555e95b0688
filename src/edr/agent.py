"""The live agent: pick this platform's sensor, check it can start, run the graph."""

from __future__ import annotations

import functools
import logging
import os
import sys

import trio

from edr.config import LoadedConfig
from edr.health import health_task, log_health, watchdog_task
from edr.runtime.actor import ActorContext
from edr.runtime.graph import graph_path, load_graph
from edr.runtime.supervisor import Supervisor
from edr.service import systemd

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


def run_live(loaded: LoadedConfig) -> int:
    """Run the live pipeline of this platform until SIGINT/SIGTERM; returns the exit code."""
    mode = "windows" if sys.platform == "win32" else "linux"
    if mode == "linux":
        problem = preflight_linux()
        if problem:
            log.error("cannot start the live sensor: %s", problem)
            print(f"edr: cannot start the live sensor: {problem}", file=sys.stderr)
            return 3
    graph = load_graph(graph_path(mode)).with_capacities(loaded.config.pipeline.capacities)
    ctx = ActorContext(config=loaded.config, mode=mode, log=log)
    sup = Supervisor(graph, ctx)
    try:
        sup.build_actors()
    except Exception as exc:  # a sensor that fails to load is reported, not a traceback
        from edr.sources.ebpf.errors import SensorUnavailable

        if isinstance(exc, SensorUnavailable):
            log.error("cannot start the live sensor: %s", exc)
            print(f"edr: cannot start the live sensor: {exc}", file=sys.stderr)
            return 3
        raise
    log.info("edr started (%s graph, pid %d)", mode, os.getpid())
    background = [functools.partial(health_task, interval=float(loaded.config.health.interval_secs))]
    if loaded.config.health.watchdog:
        background.append(watchdog_task)
    code = trio.run(functools.partial(sup.run, background=background,
                                      on_started=lambda: systemd.notify("READY=1")))
    systemd.notify("STOPPING=1")
    log_health(sup, final=True)
    log.info("edr stopped (exit %d)", code)
    return code
