"""systemd integration: readiness, reload, stopping and watchdog notifications (the sd_notify protocol).

The service manager passes ``NOTIFY_SOCKET``, the address of an AF_UNIX
datagram socket (a path, or ``@name`` in the abstract namespace); each
notification is one datagram of newline-separated ``KEY=VALUE`` lines.  The
unit (``Type=notify``, see :mod:`edr.service.systemd_unit`) expects, in order:

- ``READY=1`` once the pipeline runs (:func:`notify_ready`);
- ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` microseconds
  (:func:`watchdog_interval` says how often to send it; the caller pings
  from its event loop, so a stuck loop is what gets the agent restarted);
- ``RELOADING=1`` when a reload starts and ``READY=1`` when it is done
  (:func:`notify_reloading`, then :func:`notify_ready`);
- ``STOPPING=1`` when an orderly stop begins (:func:`notify_stopping`).

Every function is a no-op returning False when ``NOTIFY_SOCKET`` is unset,
so the console run is unaffected, and never raises: a notification that
cannot be delivered must not take the agent down.  Each sends at most one
datagram and never blocks, since they are called from the event loop: when
the manager's queue is full the message is dropped and False returned.
"""

from __future__ import annotations

import os
import socket
import time


def _address(value: str) -> str:
    # "@name" is the abstract namespace, whose addresses start with a NUL byte
    return "\0" + value[1:] if value.startswith("@") else value


def notify(message: str) -> bool:
    """Send one sd_notify datagram (``READY=1``, ``WATCHDOG=1``...); False if not under systemd or undeliverable."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
            s.connect(_address(addr))
            s.sendall(message.encode())
    except OSError:
        return False
    return True


def notify_ready() -> bool:
    """``READY=1``: start-up (or a reload) is complete."""
    return notify("READY=1")


def notify_reloading(monotonic_usec: int | None = None) -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC``: a reload has begun; send :func:`notify_ready` when it is done.

    systemd 253 and later match the reload to this notification by the
    CLOCK_MONOTONIC time it carries (microseconds); older ones ignore it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 if monotonic_usec is None else monotonic_usec
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def notify_stopping() -> bool:
    """``STOPPING=1``: an orderly stop has begun."""
    return notify("STOPPING=1")


def notify_watchdog() -> bool:
    """``WATCHDOG=1``: the agent is alive."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd asked for (seconds), or None.

    None when ``WATCHDOG_USEC`` is unset, not a positive number, or when
    ``WATCHDOG_PID`` names another process (the variables were inherited).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
