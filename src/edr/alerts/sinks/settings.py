"""Configuration of the sinks: the ``[syslog]`` and ``[webhook]`` sections, in the style of :mod:`edr.config`.

Two attrs sections with the same ``metadata=_doc(...)`` / ``_path(...)`` and
validators as :mod:`edr.config`, so that they can be merged into ``Config``
as they are (``syslog: SyslogConfig``, ``webhook: WebhookConfig``); path keys
are resolved like every other. No destination configured (the default) means
no delivery: the sink actors then only drain their input.

Why sections and not a ``[[sinks]]`` list: every key then has a name the
environment can set (``EDR__SYSLOG__TARGETS='["tcp://siem:514"]'``) and an
error can name (``syslog.targets``), as for every other section. Several
destinations of one kind are a list (``targets``, ``urls``); each gets its own
spool and its own delivery task, so one that is down never holds back another.

``spool_directory`` holds one spool per destination, named after it
(:func:`~edr.alerts.sinks.targets.spool_name`); one process uses a spool at
a time.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from edr.alerts.sinks.targets import parse_syslog_target, parse_webhook_url, webhook_display
from edr.config import MAX_SECONDS, _doc, _one_of, _path, _positive, installed_layout

_STATE: Final = installed_layout().state
#: RFC 5424 facility names and codes (``security`` is code 13, "log audit").
FACILITIES: Final = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "solaris-cron": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}


def _seconds(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 0 < value <= MAX_SECONDS:
        raise ValueError(f"must be more than 0 and at most {MAX_SECONDS:g} seconds, not {value!r}")


def _syslog_targets(_inst: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for text in value:
        parse_syslog_target(text)
    if len(set(value)) != len(value):
        raise ValueError("lists a target twice")


def _webhook_urls(_inst: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for text in value:
        try:
            parse_webhook_url(text)
        except ValueError as exc:  # the message shows the URL without what may be its token
            raise ValueError(str(exc).replace(repr(text), repr(webhook_display(text)))) from None
    if len(set(value)) != len(value):
        raise ValueError("lists a URL twice")


def _message_bytes(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 480 <= value <= 65_000:
        raise ValueError(f"must be from 480 (RFC 5424's minimum) to 65000 bytes, not {value!r}")


@attrs.define
class SyslogConfig:
    """[syslog]: alerts to syslog receivers as RFC 5424 messages (edr addition)."""

    targets: list[str] = attrs.field(
        factory=list, validator=_syslog_targets,
        metadata=_doc('Receivers: "udp://HOST:PORT", "tcp://HOST:PORT" (RFC 6587 octet counting), '
                      '"tls://HOST:PORT" (RFC 5425) or "unix:///dev/log"; empty sends nothing.'),
    )
    replay: bool = attrs.field(
        default=False, metadata=_doc("Deliver the alerts of 'edr replay' too (by default only the live agent's)."),
    )
    facility: str = attrs.field(
        default="local0", validator=_one_of(*FACILITIES),
        metadata=_doc("Facility of every message (kern, user, ..., authpriv, security, local0..local7); the "
                      "severity follows rule.severity: critical 2, high 3, medium 4, low 5, informational 6."),
    )
    app_name: str = attrs.field(default="edr", metadata=_doc("APP-NAME of every message (printable ASCII)."))
    message: str = attrs.field(
        default="json", validator=_one_of("json", "text"),
        metadata=_doc('MSG part: "json", the ECS document (as in the alert file, with event.id), or "text", one '
                      'line naming the rule, the process and what it acted on. Rule id and severity are always in '
                      'the structured data [edr@32473 ...].'),
    )
    max_message_bytes: int = attrs.field(
        default=8192, validator=_message_bytes,
        metadata=_doc("Longest message sent (rsyslog's default limit is 8 KiB); a longer JSON message is sent "
                      "as text instead, a longer text cut, both counted."),
    )
    tls_ca_file: str = attrs.field(
        default="", metadata=_path('PEM CAs that sign tls:// receivers\' certificates; "" uses the system\'s.'),
    )
    tls_cert_file: str = attrs.field(
        default="", metadata=_path('PEM client certificate for tls:// receivers that ask for one ("" none).'),
    )
    tls_key_file: str = attrs.field(
        default="", metadata=_path('Its private key (mode 0600); "" when tls_cert_file holds it.'),
    )
    timeout_secs: float = attrs.field(
        default=30.0, validator=_seconds,
        metadata=_doc("Longest a connection attempt, or a send that makes no progress, may take."),
    )
    confirm_secs: float = attrs.field(
        default=2.0, validator=_seconds,
        metadata=_doc("tcp/tls: messages count as delivered once the connection has stayed up this long after "
                      "them (plain syslog has no acknowledgement); those sent before a break are sent again."),
    )
    retry_initial_secs: float = attrs.field(
        default=0.5, validator=_seconds, metadata=_doc("First wait before reconnecting; doubles up to retry_max_secs."),
    )
    retry_max_secs: float = attrs.field(
        default=60.0, validator=_seconds, metadata=_doc("Longest wait between two connection attempts."),
    )
    drain_secs: float = attrs.field(
        default=5.0, validator=_seconds,
        metadata=_doc("At a stop (or the end of a replay), how long to go on delivering what is spooled; the rest "
                      "is delivered at the next start."),
    )
    spool_directory: str = attrs.field(
        default=f"{_STATE}/spool", metadata=_path("Where each destination's spool is (created 0700)."),
    )
    spool_max_mb: int = attrs.field(
        default=256, validator=_positive,
        metadata=_doc("MiB of undelivered alerts each destination's spool may hold; beyond, new ones are counted "
                      "as lost (the alert file still has them)."),
    )


@attrs.define
class WebhookConfig:
    """[webhook]: alerts POSTed in batches to HTTPS receivers, signed with HMAC-SHA256 (edr addition)."""

    urls: list[str] = attrs.field(
        factory=list, validator=_webhook_urls,
        metadata=_doc('Receivers ("https://...", or "http://..." when written so); each has its own queue and '
                      'spool; empty sends nothing.'),
    )
    replay: bool = attrs.field(
        default=False, metadata=_doc("Deliver the alerts of 'edr replay' too (by default only the live agent's)."),
    )
    format: str = attrs.field(
        default="ndjson", validator=_one_of("ndjson", "json"),
        metadata=_doc('Body: "ndjson" (application/x-ndjson, one ECS document a line) or "json" (a JSON array).'),
    )
    secret_file: str = attrs.field(
        default="",
        metadata=_path('File holding the shared secret (mode 0600, at least 16 bytes: "openssl rand -hex 32"); '
                       'every request carries X-Edr-Signature: sha256=HMAC-SHA256(secret, body) in hex. "" sends '
                       'unsigned requests.'),
    )
    ca_file: str = attrs.field(default="", metadata=_path('PEM CAs for https:// receivers; "" uses the system\'s.'))
    cert_file: str = attrs.field(default="", metadata=_path('PEM client certificate ("" none).'))
    key_file: str = attrs.field(default="", metadata=_path('Its private key (mode 0600); "" when cert_file holds it.'))
    timeout_secs: float = attrs.field(
        default=30.0, validator=_seconds, metadata=_doc("Longest a connection, or a wait for the response, may take."),
    )
    max_batch_alerts: int = attrs.field(
        default=500, validator=_positive, metadata=_doc("Alerts per request at most."),
    )
    max_batch_kb: int = attrs.field(
        default=1024, validator=_positive,
        metadata=_doc("KiB of documents per request at most (one larger alert is sent alone)."),
    )
    retry_initial_secs: float = attrs.field(
        default=0.5, validator=_seconds,
        metadata=_doc("First wait before a failed request is retried; doubles (with jitter) up to retry_max_secs."),
    )
    retry_max_secs: float = attrs.field(
        default=60.0, validator=_seconds, metadata=_doc("Longest wait between two attempts, unless Retry-After asks."),
    )
    retry_after_max_secs: float = attrs.field(
        default=600.0, validator=_seconds,
        metadata=_doc("Longest wait a receiver's Retry-After (seconds or an HTTP date) may impose."),
    )
    drain_secs: float = attrs.field(
        default=5.0, validator=_seconds,
        metadata=_doc("At a stop (or the end of a replay), how long to go on delivering what is spooled; the rest "
                      "is delivered at the next start."),
    )
    spool_directory: str = attrs.field(
        default=f"{_STATE}/spool", metadata=_path("Where each destination's spool is (created 0700)."),
    )
    spool_max_mb: int = attrs.field(
        default=256, validator=_positive,
        metadata=_doc("MiB of undelivered alerts each destination's spool may hold; beyond, new ones are counted "
                      "as lost (the alert file still has them)."),
    )


SECTION_CLASSES = (SyslogConfig, WebhookConfig)
for _cls in SECTION_CLASSES:
    attrs.resolve_types(_cls)
