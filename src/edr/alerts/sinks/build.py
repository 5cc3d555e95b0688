"""Sink actors made from the ``[syslog]`` and ``[webhook]`` sections (called by :mod:`edr.wiring.builders`).

A destination that cannot be used as configured (a target the validator
would refuse, reached here through a configuration made in code) is logged
with its key and skipped; the others run. Files named by the configuration
(CA, certificate, key, secret) are read when a connection is made, not
here: a problem with one is a delivery failure, logged and retried, and
the alerts wait in the spool meanwhile.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edr.alerts.chain import load_chain_key
from edr.alerts.ecs import HostInfo
from edr.alerts.sinks.actor import SinkActor
from edr.alerts.sinks.document import payload
from edr.alerts.sinks.syslog_format import SyslogFormatter
from edr.config import FACILITIES, SyslogConfig, WebhookConfig
from edr.sink_targets import parse_syslog_target, parse_webhook_url, spool_name, webhook_display

if TYPE_CHECKING:
    from edr.alerts.sinks.destination import Destination

_MB = 1 << 20


def _active(cfg: SyslogConfig | WebhookConfig, destinations: list[str], mode: str, section: str,
            log: logging.Logger) -> bool:
    if not destinations:
        return False
    if mode == "replay" and not cfg.replay:
        log.debug("%s: not delivering replayed alerts (%s.replay = false)", section, section)
        return False
    return True


def build_syslog(cfg: SyslogConfig, mode: str, name: str, log: logging.Logger,
                 host: HostInfo | None = None) -> SinkActor:
    """The syslog sink of ``cfg``: one destination per target; draining only when there is none."""
    formatter = SyslogFormatter(facility=FACILITIES[cfg.facility], app_name=cfg.app_name, procid=os.getpid(),
                                message=cfg.message, max_bytes=cfg.max_message_bytes)

    def encode(doc: dict[str, Any]) -> bytes:
        return formatter.format(doc, payload(doc) if cfg.message == "json" else None)

    def extra() -> dict[str, Any]:
        return {"shortened": formatter.shortened, "truncated": formatter.truncated}

    destinations: list[Destination] = []
    if _active(cfg, cfg.targets, mode, "syslog", log):
        # the delivery machinery (spool, retries, transports) only when there is a target to deliver to:
        # a replay, or an agent without one, drains and skips its import
        from edr.alerts.sinks.retry import Backoff
        from edr.alerts.sinks.spool import Spool
        from edr.alerts.sinks.syslog_delivery import DatagramSyslog, StreamSyslog
        from edr.alerts.sinks.syslog_transport import datagram_connector, stream_connector

        for text in cfg.targets:
            try:
                target = parse_syslog_target(text)
            except ValueError as exc:
                log.error("syslog.targets: %s; this target is skipped", exc)
                continue
            spool = Spool(Path(cfg.spool_directory) / spool_name("syslog", text), max_bytes=cfg.spool_max_mb * _MB)
            backoff = Backoff(cfg.retry_initial_secs, max(cfg.retry_initial_secs, cfg.retry_max_secs))
            if target.stream:
                connect = stream_connector(target, user_timeout=cfg.confirm_secs / 2, ca_file=cfg.tls_ca_file,
                                           cert_file=cfg.tls_cert_file, key_file=cfg.tls_key_file)
                destinations.append(StreamSyslog(text, spool, connect, hold=cfg.confirm_secs,
                                                 timeout=cfg.timeout_secs, backoff=backoff,
                                                 drain_secs=cfg.drain_secs, log=log))
            else:
                destinations.append(DatagramSyslog(text, spool, datagram_connector(target), backoff=backoff,
                                                   drain_secs=cfg.drain_secs, log=log))
    return SinkActor(name, destinations, encode, host, log=log, extra_statistics=extra)


def _secret(path: str) -> bytes | None:
    return load_chain_key(path) if path else None


def build_webhook(cfg: WebhookConfig, mode: str, name: str, log: logging.Logger,
                  host: HostInfo | None = None) -> SinkActor:
    """The webhook sink of ``cfg``: one destination (queue, spool, delivery task) per URL."""
    destinations: list[Destination] = []
    if _active(cfg, cfg.urls, mode, "webhook", log):
        # urllib3 only when there is a URL to deliver to: a replay or an agent without one skips its import
        from edr.alerts.sinks.retry import Backoff
        from edr.alerts.sinks.spool import Spool
        from edr.alerts.sinks.webhook_client import WebhookClient
        from edr.alerts.sinks.webhook_delivery import WebhookDelivery

        if not cfg.secret_file:
            log.warning("webhook: no secret_file: requests are not signed, receivers cannot tell they come from edr")
        for text in cfg.urls:
            try:
                target = parse_webhook_url(text)
            except ValueError as exc:
                log.error("webhook.urls: %s; this URL is skipped", str(exc).replace(text, webhook_display(text)))
                continue
            if target.scheme == "http" and target.host not in ("localhost", "127.0.0.1", "::1"):
                log.warning("webhook: %s is plain http: alerts cross the network unencrypted", target.display)
            client = WebhookClient(target, timeout=cfg.timeout_secs, ca_file=cfg.ca_file, cert_file=cfg.cert_file,
                                   key_file=cfg.key_file)
            spool = Spool(Path(cfg.spool_directory) / spool_name("webhook", text), max_bytes=cfg.spool_max_mb * _MB)
            backoff = Backoff(cfg.retry_initial_secs, max(cfg.retry_initial_secs, cfg.retry_max_secs))
            destinations.append(WebhookDelivery(
                target.display, spool, client, fmt=cfg.format, load_secret=functools.partial(_secret, cfg.secret_file),
                max_batch=cfg.max_batch_alerts, max_batch_bytes=cfg.max_batch_kb * 1024,
                retry_after_max=cfg.retry_after_max_secs, backoff=backoff, drain_secs=cfg.drain_secs, log=log))
    return SinkActor(name, destinations, payload, host, log=log)
