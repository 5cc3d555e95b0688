"""What a sink sends for an alert: its ECS document, with a stable id in ``event.id``, sans-IO.

**The id.** Delivery is at least once (a spool redelivers what it cannot
prove delivered), so receivers deduplicate, and they need a key:
``event.id`` (ECS: "unique ID to describe the event"). It is the BLAKE2b
digest (16 bytes, 32 hex digits) of the document serialized as the alert
file writes it (:func:`edr.alerts.ndjson.dumps_line`, keys in the
document's order) *without* the keys that change from one writing of the
same alert to the next (:data:`VOLATILE_KEYS`: ``event.created``, the
hash chain's fields, ``event.id`` itself). So:

- one alert has one id however often it is sent, and whichever writer
  computes it (the alert file's writer and a sink agree, so a SIEM fed by
  both keeps one copy);
- replaying the same recording again gives the same ids (a second replay
  into the same SIEM adds nothing);
- two different alerts differ in some key (rule, event time, sequence,
  file line...), so they have different ids.

A document that already has a string ``event.id`` keeps it.
"""

from __future__ import annotations

from typing import Any, Final

from edr.alerts.digests import blake2b_hex
from edr.alerts.ecs import HostInfo, alert_document
from edr.alerts.ndjson import dumps_line
from edr.detect.alert import Alert

ID_KEY: Final = "event.id"
#: Keys left out of the id: they differ between two writings of the same alert.
VOLATILE_KEYS: Final = frozenset({"event.created", ID_KEY, "edr.chain.seq", "edr.chain.hash", "edr.chain.start",
                                  "edr.chain.alg"})


def alert_id(doc: dict[str, Any]) -> str:
    """The stable id of the alert ``doc`` describes (see the module's notes): 32 lowercase hex digits."""
    stable = doc.copy()  # a copy and a few deletions: ten times cheaper than filtering every key
    for key in VOLATILE_KEYS:
        if key in stable:
            del stable[key]
    return blake2b_hex(dumps_line(stable), 16)  # the GIL kept while hashing: see edr.alerts.digests


def sink_document(item: Alert | dict[str, Any], host: HostInfo) -> dict[str, Any]:
    """The document to deliver for ``item``: an :class:`Alert` (mapped as the writer maps it) or an ECS
    document already made (copied: a batch is shared by every edge it was sent on); ``event.id`` set.

    Raises TypeError for anything else (a bug upstream, not bad data).
    """
    if isinstance(item, Alert):
        doc = alert_document(item, host)
    elif isinstance(item, dict):
        doc = dict(item)
    else:
        raise TypeError(f"a sink delivers alerts or ECS documents, not {type(item).__name__}")
    if not isinstance(doc.get(ID_KEY), str):
        doc[ID_KEY] = alert_id(doc)
    return doc


def payload(doc: dict[str, Any]) -> bytes:
    """``doc`` as one line of JSON without its newline (never raises, whatever it holds)."""
    return dumps_line(doc)[:-1]
