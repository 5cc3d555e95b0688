"""Delivery to one webhook receiver: batches POSTed one at a time, each acknowledged by the response.

A batch leaves the spool when the receiver answers 2xx, so delivery is
exactly what the receiver confirmed (at least once: a batch whose response
was lost is sent again, with the same ``event.id``\\ s). Other answers are
handled as :func:`~edr.alerts.sinks.webhook_protocol.classify` says: a
refused batch is split in halves until the one document the receiver
refuses is found and set aside (``rejected``, logged with its id); every
other failure waits (exponential backoff with jitter, or the receiver's
``Retry-After`` up to ``retry_after_max_secs``) and tries the same batch
again. After a split, batches grow back (doubling) with each success.

The request runs in a worker thread (urllib3). If the sink is cancelled
meanwhile the thread is abandoned, not waited for: its batch was not
acknowledged, so it is sent again at the next start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio
import urllib3

from edr.alerts.sinks.destination import Destination
from edr.alerts.sinks.retry import Backoff, retry_after
from edr.alerts.sinks.spool import Spool
from edr.alerts.sinks.webhook_client import WebhookClient
from edr.alerts.sinks.webhook_protocol import Outcome, body, classify, headers


class WebhookDelivery(Destination):
    """One webhook URL (see the module's notes).

    ``load_secret`` returns the shared secret (None: unsigned); it is called
    until it succeeds, so a secret file that is wrong at start (its mode, its
    length) is used once fixed, and nothing is sent unsigned meanwhile.
    """

    kind = "webhook"

    def __init__(self, name: str, spool: Spool, client: WebhookClient, *, fmt: str,
                 load_secret: Callable[[], bytes | None], max_batch: int, max_batch_bytes: int,
                 retry_after_max: float, backoff: Backoff, drain_secs: float, log: logging.Logger,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, spool, backoff=backoff, drain_secs=drain_secs, log=log)
        self.client = client
        self.fmt = fmt
        self.load_secret = load_secret
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.retry_after_max = retry_after_max
        self.clock = clock
        self.rejected = 0
        self.requests = 0
        self.splits = 0
        self._limit = max_batch
        self._secret: bytes | None = None
        self._secret_loaded = False

    async def deliver(self) -> None:
        """POST batches until the input is closed and nothing is left."""
        while not self._secret_loaded:
            try:
                self._secret = await trio.to_thread.run_sync(self.load_secret)
            except (OSError, ValueError) as exc:
                await self.failure(f"cannot load the secret: {exc}")
                continue
            self._secret_loaded = True
        while True:
            if self.done:
                return
            more = self.arm()
            closed = self.input_closed  # before the read: what was stored before the close, it sees
            batch = await self.read(self.spool.ack_offset, self._limit, self.max_batch_bytes)
            if batch is None:
                if closed:
                    return
                await self.wait_for_more(more)
                continue
            data = body(batch.payloads, self.fmt)
            request_headers = headers(data, self.fmt, self._secret, len(batch))
            self.requests += 1
            try:
                response = await trio.to_thread.run_sync(self.client.post, data, request_headers,
                                                         abandon_on_cancel=True)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                self.client.close()
                await self.failure(f"request failed: {exc}")
                continue
            outcome = classify(response.status, len(batch))
            if outcome is Outcome.DELIVERED:
                await self.ack(batch.end, len(batch))
                self._limit = min(self.max_batch, self._limit * 2)
            elif outcome is Outcome.SPLIT:
                self.splits += 1
                self._limit = max(1, len(batch) // 2)
                self.log.warning("webhook sink %s: the receiver refused a batch of %d with HTTP %d (%r); trying "
                                 "halves of %d", self.name, len(batch), response.status,
                                 response.excerpt[:120], self._limit)
            elif outcome is Outcome.REJECTED:
                self.rejected += 1
                self.log.error("webhook sink %s: the receiver refused alert %s with HTTP %d (%r); it is set aside "
                               "(rejected; the alert file has it) so the alerts behind it go on", self.name,
                               _alert_id(batch.payloads[0]), response.status, response.excerpt[:200])
                await self.ack(batch.end, 1)
                self.sent -= 1  # acknowledged to leave the spool, but not delivered
            else:
                wait = retry_after(response.headers.get("retry-after"), self.clock())
                if wait is not None:
                    wait = min(wait, self.retry_after_max)  # failure() counts it in the backoff all the same
                await self.failure(f"the receiver answered HTTP {response.status} ({response.excerpt[:120]!r})",
                                   wait=wait)

    async def close(self) -> None:
        """Close the connection, then the spool."""
        self.client.close()
        await super().close()

    def statistics(self) -> dict[str, object]:
        """The common counters, and requests, splits and rejected documents."""
        stats = super().statistics()
        stats.update(requests=self.requests, rejected=self.rejected)
        if self.splits:
            stats["splits"] = self.splits
        return stats


def _alert_id(payload: bytes) -> str:
    """The ``event.id`` in a document's JSON, for a log line (without parsing the whole of it)."""
    at = payload.rfind(b'"event.id":"')
    if at < 0:
        return "(no event.id)"
    start = at + len(b'"event.id":"')
    end = payload.find(b'"', start)
    return payload[start:end].decode("ascii", "replace") if end > 0 else "(no event.id)"
