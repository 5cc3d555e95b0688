"""RFC 5424 syslog messages for alerts, and RFC 6587 octet-counting framing, sans-IO.

A message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [edr@32473 id="..." rule="..." name="..." severity="..."
    engine="..."] MSG

- ``PRI`` = facility * 8 + severity. The facility is configured
  (``syslog.facility``); the severity follows ``rule.severity``:

  ============= ========================
  rule.severity syslog severity
  ============= ========================
  critical      2 (Critical)
  high          3 (Error)
  medium        4 (Warning)
  low           5 (Notice)
  informational 6 (Informational)
  other         4 (Warning), as medium
  ============= ========================

- ``TIMESTAMP`` is ``event.created``, when edr made the alert (the time the
  message originated); when the activity happened is ``@timestamp`` in the
  document. ``HOSTNAME`` is ``host.name``; ``APP-NAME`` is configured
  (``edr``); ``PROCID`` the agent's process id; ``MSGID`` ``alert``. A header
  field that is not printable US-ASCII without spaces (or is too long for
  its field) is sent as the NILVALUE ``-``.
- The structured data element ``edr@32473`` (32473 is the enterprise number
  RFC 5612 reserves for documentation and examples) carries the alert's id
  (``event.id``, what receivers deduplicate on), ``rule.id``,
  ``rule.name``, ``rule.severity`` and ``rule.engine``; values are escaped as
  RFC 5424 says (``\\``, ``"`` and ``]`` get a backslash).
- ``MSG`` is the ECS document as JSON (``message = "json"``), or one line of
  text naming the rule and what the process did (``"text"``). It is sent
  without a BOM (RFC 5424's MSG-ANY): the JSON is UTF-8 either way, and a
  BOM would stop a SIEM's JSON parser.

A message longer than ``max_bytes`` is sent with the text MSG instead of the
JSON one (``shortened``), and a text still too long is cut at a character
boundary (``truncated``): a receiver that truncates by itself would leave
broken JSON.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from edr.alerts.sinks.document import payload

SD_ID: Final = "edr@32473"
#: rule.severity -> RFC 5424 severity code.
SEVERITIES: Final = {"critical": 2, "high": 3, "medium": 4, "low": 5, "informational": 6}
DEFAULT_SEVERITY: Final = 4
_SD_PARAMS: Final = (("id", "event.id"), ("rule", "rule.id"), ("name", "rule.name"), ("severity", "rule.severity"),
                     ("engine", "rule.engine"))
#: (label, document key) of the text form, in order; the first present of a group of keys is used.
_TEXT_FIELDS: Final = (
    ("host", ("host.name",)), ("user", ("user.name",)), ("process", ("process.executable", "process.name")),
    ("pid", ("process.pid",)), ("parent", ("process.parent.executable",)), ("cmd", ("process.command_line",)),
    ("file", ("file.path",)), ("dest", ("destination.ip",)), ("port", ("destination.port",)),
    ("query", ("dns.question.name",)), ("registry", ("registry.path",)), ("id", ("event.id",)),
)
_HEADER_OK: Final = re.compile(r"^[!-~]+$")
_TIMESTAMP: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
_SD_SPECIAL: Final = re.compile(r'[\\"\]]')
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def header_field(value: Any, limit: int) -> str:
    """``value`` as a header field: printable US-ASCII without spaces, at most ``limit`` long, else ``-``."""
    if isinstance(value, str) and len(value) <= limit and _HEADER_OK.match(value):
        return value
    return "-"


def sd_escape(value: str) -> str:
    """A PARAM-VALUE: ``\\``, ``"`` and ``]`` escaped with a backslash (RFC 5424 section 6.3.3)."""
    return _SD_SPECIAL.sub(lambda m: "\\" + m.group(0), value) if _SD_SPECIAL.search(value) else value


def structured_data(doc: dict[str, Any]) -> str:
    """The ``[edr@32473 ...]`` element of ``doc`` (only the keys it has as text)."""
    params = []
    for name, key in _SD_PARAMS:
        value = doc.get(key)
        if isinstance(value, str):
            params.append(f'{name}="{sd_escape(value)}"')
    return f"[{SD_ID} {' '.join(params)}]" if params else "-"


def text_message(doc: dict[str, Any]) -> str:
    """One line of text: ``rule.name (severity): host=... process=... pid=... cmd=...`` (controls as spaces)."""
    parts = [f"{doc.get('rule.name', '?')} ({doc.get('rule.severity', '?')}):"]
    for label, keys in _TEXT_FIELDS:
        for key in keys:
            value = doc.get(key)
            if value is not None and value != "":
                parts.append(f"{label}={value}")
                break
    return _CONTROL.sub(" ", " ".join(str(p) for p in parts))


def cut_utf8(data: bytes, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, never inside a UTF-8 character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


class SyslogFormatter:
    """Turns ECS documents into RFC 5424 messages (see the module's notes).

    ``json_message(doc)`` is the JSON MSG for ``doc`` (the sink passes the
    serialization it already has). Counts ``shortened`` and ``truncated``.
    """

    def __init__(self, *, facility: int, app_name: str, procid: int, message: str = "json",
                 max_bytes: int = 8192) -> None:
        if not 0 <= facility <= 23:
            raise ValueError(f"a syslog facility is 0 to 23, not {facility}")
        if message not in ("json", "text"):
            raise ValueError(f"message must be json or text, not {message!r}")
        self.facility = facility
        self.app_name = header_field(app_name, 48)
        self.procid = header_field(str(procid), 128)
        self.message = message
        self.max_bytes = max_bytes
        self.shortened = 0
        self.truncated = 0
        self._pri = {code: f"<{facility * 8 + code}>1 " for code in range(8)}

    def format(self, doc: dict[str, Any], json_message: bytes | None = None) -> bytes:
        """The message for ``doc``; ``json_message`` is its JSON (computed when None and needed)."""
        level = doc.get("rule.severity")
        severity = SEVERITIES.get(level, DEFAULT_SEVERITY) if isinstance(level, str) else DEFAULT_SEVERITY
        stamp = doc.get("event.created")
        if not (isinstance(stamp, str) and _TIMESTAMP.match(stamp)):
            stamp = "-"
        head = (f"{self._pri[severity]}{stamp} {header_field(doc.get('host.name'), 255)} {self.app_name} "
                f"{self.procid} alert {structured_data(doc)} ").encode()
        if self.message == "json":
            if json_message is None:
                json_message = payload(doc)
            if len(head) + len(json_message) <= self.max_bytes:
                return head + json_message
            self.shortened += 1
        body = text_message(doc).encode("utf-8", "replace")
        if len(head) + len(body) > self.max_bytes:
            self.truncated += 1
            body = cut_utf8(body, max(0, self.max_bytes - len(head)))
            if len(head) > self.max_bytes:
                return cut_utf8(head, self.max_bytes)
        return head + body


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %b" % (len(message), message)


def octet_frames(messages: Sequence[bytes]) -> bytes:
    """The frames of ``messages``, back to back (one write for a batch)."""
    return b"".join(b"%d %b" % (len(m), m) for m in messages)
