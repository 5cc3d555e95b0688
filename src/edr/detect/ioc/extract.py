"""Pulling candidate addresses and domain names out of free text (command lines, DNS answers)."""

from __future__ import annotations

import re
from typing import Final

# Deliberately loose: candidates are confirmed by the exact lookups, so a
# false candidate (a file name such as "setup.py") only costs a dict probe.
_IPV4: Final = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6: Final = re.compile(r"(?<![\w:])\[?((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f.]{0,15})\]?")
_DOMAIN: Final = re.compile(
    r"(?<![\w.-])((?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62})(?![\w-])"
)


def ips_in(text: str) -> list[str]:
    """Address-like substrings of ``text`` (IPv4 dotted quads and IPv6 with at least two colons)."""
    out = _IPV4.findall(text) if "." in text else []
    if "::" in text or text.count(":") >= 2:
        out.extend(m for m in _IPV6.findall(text) if m.count(":") >= 2)
    return out


def domains_in(text: str) -> list[str]:
    """Domain-like substrings of ``text`` (dotted names ending in a letter label)."""
    if "." not in text:
        return []
    return _DOMAIN.findall(text)


def dns_answers(value: object) -> list[str]:
    """The entries of a Sysmon ``QueryResults`` value (``type:  5 cname;::ffff:1.2.3.4;``) or a list."""
    if isinstance(value, list):
        items = [str(v) for v in value]
    elif isinstance(value, str):
        items = value.split(";")
    else:
        return []
    out = []
    for item in items:
        item = item.strip()
        if item.startswith("type:"):
            # "type:  5 alias.example.com": the record data is the last word.
            parts = item.split()
            item = parts[-1] if len(parts) >= 3 else ""
        if item:
            out.append(item)
    return out
