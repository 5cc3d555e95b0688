"""The webhook's side of HTTP: request bodies, signatures, and what a response means, sans-IO.

A request carries a batch of ECS documents, as NDJSON (one document a line,
``Content-Type: application/x-ndjson``) or as a JSON array
(``application/json``), and these headers:

- ``X-Edr-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes
  with the shared secret (GitHub's webhook convention), so a receiver can
  check that edr sent it and nobody changed it. The receiver compares in
  constant time (``hmac.compare_digest``); see :func:`verify_signature`.
- ``X-Edr-Count: <documents>``, for receivers that log deliveries. A
  batch sent again (after a timeout, say) carries the same documents:
  receivers deduplicate by ``event.id``.

What a response means (:func:`classify`):

- 2xx: delivered.
- 400, 413, 422 with several documents: the receiver refused the batch,
  perhaps for one document or its size: it is split in half and each half
  tried again. With one document: that document is *rejected* (counted,
  logged with its id and the receiver's answer, and skipped), since
  retrying it would stop every alert behind it.
- Anything else (3xx, 401, 403, 404, 408, 429, 5xx...): retried with
  backoff, honouring ``Retry-After``; the documents stay spooled. A wrong
  secret or URL is a configuration the operator fixes, not a reason to drop
  alerts.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence
from typing import Final

from edr import __version__

CONTENT_TYPES: Final = {"ndjson": "application/x-ndjson", "json": "application/json"}
SIGNATURE_HEADER: Final = "X-Edr-Signature"
_SPLIT_STATUSES: Final = frozenset({400, 413, 422})


def body(payloads: Sequence[bytes], fmt: str) -> bytes:
    """The request body of ``payloads`` (each one JSON document) in ``fmt`` (``ndjson`` or ``json``)."""
    if fmt == "ndjson":
        return b"\n".join(payloads) + b"\n" if payloads else b""
    if fmt == "json":
        return b"[" + b",".join(payloads) + b"]"
    raise ValueError(f"format must be ndjson or json, not {fmt!r}")


def signature(secret: bytes, data: bytes) -> str:
    """The ``X-Edr-Signature`` value of ``data``: ``sha256=`` and the HMAC-SHA256 in lowercase hex."""
    return "sha256=" + hmac.digest(secret, data, "sha256").hex()


def verify_signature(secret: bytes, data: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``data`` under ``secret`` (for receivers; constant time)."""
    return header is not None and hmac.compare_digest(signature(secret, data), header)


def headers(data: bytes, fmt: str, secret: bytes | None, count: int) -> dict[str, str]:
    """The request headers of a batch of ``count`` documents whose body is ``data``."""
    out = {"Content-Type": CONTENT_TYPES[fmt], "User-Agent": f"edr/{__version__}", "X-Edr-Count": str(count)}
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, data)
    return out


class Outcome(enum.Enum):
    """What to do after a response (see the module's notes)."""

    DELIVERED = "delivered"
    SPLIT = "split"
    REJECTED = "rejected"
    RETRY = "retry"


def classify(status: int, documents: int) -> Outcome:
    """The outcome of ``status`` for a batch of ``documents``."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in _SPLIT_STATUSES:
        return Outcome.SPLIT if documents > 1 else Outcome.REJECTED
    return Outcome.RETRY
