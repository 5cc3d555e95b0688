"""A webhook receiver for the tests: a real HTTP/1.1 server on loopback, in a thread, that checks every signature.

It answers the first ``fail_first`` requests 503 with a ``Retry-After`` taken
in turn from ``retry_after`` (seconds or an HTTP date, made when the request
comes), answers 503 too while :attr:`WebhookReceiver.down` is set, and 422
to a batch holding an id of :attr:`WebhookReceiver.poison`; every other
request is accepted (200) and its documents recorded. Deduplication is the
receiver's, by ``event.id``: :attr:`accepted_ids` lists every id of every
accepted request, duplicates included, so a test can tell "exactly once".
"""

from __future__ import annotations

import email.utils
import http.server
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from edr.alerts.sinks.webhook_protocol import SIGNATURE_HEADER, verify_signature


@attrs.define
class Request:
    """One request as the receiver saw it."""

    at: float  #: monotonic time it arrived
    status: int  #: what it was answered
    count: int  #: documents in its body
    signed: bool  #: its X-Edr-Signature verified with the secret
    retry_after: str | None  #: the Retry-After it was answered with, if any


class WebhookReceiver:
    """The server, its state and what it recorded (see the module's notes); a context manager."""

    def __init__(self, secret: bytes, *, fail_first: int = 0,
                 retry_after: tuple[Callable[[], str], ...] = (lambda: "1",), fmt: str = "ndjson",
                 tls: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.retry_after = retry_after
        self.fmt = fmt
        self.down = False
        #: ids the receiver refuses: a batch holding one is answered 422
        self.poison: set[str] = set()
        self.requests: list[Request] = []
        self.accepted_ids: list[str] = []
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.scheme = "http"
        #: the common name of each client certificate presented (TLS)
        self.peers: list[str] = []
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}/alerts"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _documents(self, data: bytes) -> list[dict[str, Any]]:
        if self.fmt == "ndjson":
            assert data.endswith(b"\n"), data[-80:]
            return [orjson.loads(line) for line in data.split(b"\n")[:-1]]
        docs = orjson.loads(data)
        assert isinstance(docs, list)
        return docs

    def _answer(self, data: bytes, signature: str | None, count: str | None) -> tuple[int, str | None]:
        signed = verify_signature(self.secret, data, signature)
        docs = self._documents(data)
        with self._lock:
            failures = sum(1 for r in self.requests if r.status == 503 and r.retry_after != "down")
            if not signed:
                self.bad_signatures += 1
                status, retry = 401, None
            elif any(doc["event.id"] in self.poison for doc in docs):
                status, retry = 422, None
            elif self.down:
                status, retry = 503, "down"
            elif failures < self.fail_first:
                status, retry = 503, self.retry_after[failures % len(self.retry_after)]()
            else:
                status, retry = 200, None
                self.accepted_ids.extend(doc["event.id"] for doc in docs)
            assert count == str(len(docs)), (count, len(docs))
            self.requests.append(Request(time.monotonic(), status, len(docs), signed, retry))
        return status, retry

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if isinstance(self.connection, ssl.SSLSocket):
                    cert = self.connection.getpeercert() or {}
                    receiver.peers.append(dict(x[0] for x in cert.get("subject", ()))["commonName"])
                data = self.rfile.read(int(self.headers["Content-Length"]))
                status, retry = receiver._answer(data, self.headers.get(SIGNATURE_HEADER),
                                                 self.headers.get("X-Edr-Count"))
                self.send_response(status)
                if retry is not None:
                    self.send_header("Retry-After", "1" if retry == "down" else retry)
                body = b"ok" if status == 200 else b"unavailable"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def http_date(seconds_ahead: float) -> str:
    """An HTTP date (IMF-fixdate) ``seconds_ahead`` from now."""
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)
