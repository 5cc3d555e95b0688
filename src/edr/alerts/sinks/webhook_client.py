"""HTTP POSTs to one webhook receiver, through urllib3 (blocking: the sink calls it from a worker thread).

One keep-alive connection per receiver (a pool of one), no automatic
retries and no redirects (the sink decides what a failure means, see
:mod:`edr.alerts.sinks.webhook_protocol`), TLS verified against the
configured CAs (else the system's), a client certificate when configured.
The pool is made at the first request, so a CA or certificate file that is
wrong at start is used once it is fixed; its problem is then an error of
that request, naming the file.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import urllib3

from edr.sink_targets import WebhookTarget

#: Bytes of a refusal's body kept for the log.
EXCERPT = 200


@attrs.frozen
class Response:
    """What came back: the status, the headers (names in lowercase) and the body's beginning."""

    status: int
    headers: dict[str, str]
    excerpt: bytes


class WebhookClient:
    """POSTs bodies to one webhook URL; :meth:`post` raises OSError or ``urllib3.exceptions.HTTPError``."""

    def __init__(self, target: WebhookTarget, *, timeout: float, ca_file: str = "", cert_file: str = "",
                 key_file: str = "") -> None:
        self.target = target
        self.timeout = timeout
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._lock = threading.Lock()

    def _make_pool(self) -> urllib3.HTTPConnectionPool:
        timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        common: dict[str, Any] = {"maxsize": 1, "timeout": timeout, "retries": False, "block": False}
        if self.target.scheme == "http":
            return urllib3.HTTPConnectionPool(self.target.host, self.target.port, **common)
        if self.key_file:
            st = os.stat(self.key_file)  # OSError names the file
            if st.st_mode & 0o077:
                raise PermissionError(f"webhook.key_file {self.key_file} is accessible to group or others (mode "
                                      f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 {self.key_file}")
        for key, path in (("webhook.ca_file", self.ca_file), ("webhook.cert_file", self.cert_file)):
            if path and not os.path.isfile(path):
                raise FileNotFoundError(f"{key} {path}: no such file")
        return urllib3.HTTPSConnectionPool(
            self.target.host, self.target.port, cert_reqs="CERT_REQUIRED", ca_certs=self.ca_file or None,
            cert_file=self.cert_file or None, key_file=self.key_file or None, **common)

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` and return the response (any status); raises on a connection or protocol failure."""
        with self._lock:
            if self._pool is None:
                self._pool = self._make_pool()
            pool = self._pool
        response = pool.urlopen("POST", self.target.target, body=body, headers=dict(headers), retries=False,
                                redirect=False, preload_content=False, assert_same_host=False)
        try:
            data = response.read(EXCERPT)
            response.drain_conn()  # the rest is read and dropped, so the connection can be used again
        finally:
            response.release_conn()
        return Response(response.status, {k.lower(): v for k, v in response.headers.items()}, data)

    def close(self) -> None:
        """Close the connection (a later :meth:`post` opens a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
