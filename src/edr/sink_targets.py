"""Where a sink delivers: syslog targets and webhook URLs parsed and checked, sans-IO.

A syslog target is a URL: ``udp://host:514``, ``tcp://host:514`` (RFC 6587
octet counting), ``tls://host:6514`` (RFC 5425) or ``unix:///dev/log`` (a
local datagram socket). IPv6 hosts go in brackets (``tcp://[::1]:5514``).
Without a port, udp and tcp use 514 and tls 6514. A webhook is an
``https://`` URL, or ``http://`` when written so (a receiver on a trusted
network or this host).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final
from urllib.parse import urlsplit

import attrs

SYSLOG_TRANSPORTS: Final = ("udp", "tcp", "tls", "unix")
_DEFAULT_PORTS: Final = {"udp": 514, "tcp": 514, "tls": 6514}
_SAFE: Final = re.compile(r"[^A-Za-z0-9.-]+")


@attrs.frozen
class SyslogTarget:
    """One syslog destination: transport, host and port, or the socket path (``unix``)."""

    url: str
    transport: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def stream(self) -> bool:
        """True for the connection-oriented transports (tcp, tls)."""
        return self.transport in ("tcp", "tls")


def parse_syslog_target(text: str) -> SyslogTarget:
    """``text`` as a :class:`SyslogTarget`; ValueError saying what is wrong and what would be right."""
    if not isinstance(text, str) or "://" not in text:
        raise ValueError(f"{text!r} is not a syslog target: write udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT "
                         "or unix:///PATH")
    parts = urlsplit(text)
    transport = parts.scheme.lower()
    if transport not in SYSLOG_TRANSPORTS:
        raise ValueError(f"{text!r}: transport {parts.scheme!r} is not one of {', '.join(SYSLOG_TRANSPORTS)}")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a syslog target has no query or fragment")
    if transport == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{text!r}: a local socket is unix:///ABSOLUTE/PATH (three slashes)")
        return SyslogTarget(text, transport, path=parts.path)
    if parts.path not in ("", "/"):
        raise ValueError(f"{text!r}: a network syslog target has no path")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    if port == 0:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535")
    return SyslogTarget(text, transport, parts.hostname, port if port is not None else _DEFAULT_PORTS[transport])


@attrs.frozen
class WebhookTarget:
    """One webhook destination: the URL, and its parts as the HTTP client needs them."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  #: path and query, what the request line names

    @property
    def display(self) -> str:
        """The URL as logs, statistics and the spool's name show it: see :func:`webhook_display`."""
        return webhook_display(self.url)


def webhook_display(url: str) -> str:
    """``url`` without its path and query, which often hold the receiver's token (Slack's
    ``/services/T../B../XXXX``, ``?token=``): ``https://host:port/…`` and a short hash of the whole URL to
    tell two apart; a URL with neither is shown whole."""
    parts = urlsplit(url)
    if parts.path in ("", "/") and not parts.query:
        return url
    return f"{parts.scheme}://{parts.netloc}/… #{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def parse_webhook_url(text: str) -> WebhookTarget:
    """``text`` as a :class:`WebhookTarget`; ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a URL")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError(f"{text!r}: a webhook is an https:// URL (or http:// for a receiver on a trusted network)")
    if parts.fragment:
        raise ValueError(f"{text!r}: a webhook URL has no #fragment")
    if parts.username or parts.password:
        raise ValueError(f"{text!r}: credentials do not belong in the URL (sign with webhook.secret_file)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(text, scheme, parts.hostname, port or (443 if scheme == "https" else 80), target)


def spool_name(kind: str, url: str) -> str:
    """The spool directory name of a destination: readable, and unique per URL (a hash of it ends the name).

    A webhook's is made from its host and port only (its path and query may hold a token: see
    :func:`webhook_display`).
    """
    shown = urlsplit(url).netloc if kind == "webhook" else url.split("://", 1)[-1]
    readable = _SAFE.sub("-", shown).strip("-.")[:48]
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return f"{kind}-{readable}-{digest}" if readable else f"{kind}-{digest}"
