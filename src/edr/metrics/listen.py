"""The metrics endpoint's address (``metrics.listen``) and the error that says it cannot be served.

Kept apart from :mod:`edr.metrics.server` so that the agent, ``edr rules top``
and the tests read and check the address without importing prometheus_client.
"""

from __future__ import annotations


class MetricsUnavailable(Exception):
    """The endpoint cannot be served (a bad ``metrics.listen``, a port taken, prometheus-client missing);
    the message says which and why."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:9464"`` for IPv6) as (host, port); MetricsUnavailable naming the key."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsUnavailable(f"metrics.listen must be HOST:PORT (e.g. 127.0.0.1:9464), not {listen!r}")
    return host, int(port)
