"""DNS-Client's ``QueryResults``, parsed into answers.

The provider writes the answers the way Sysmon copies them into its event 22:
``type: 5 alias.example.net;::ffff:20.190.159.23;2001:db8::1;`` (a CNAME as
``type: 5 <name>``, an IPv4 address as its IPv4-mapped IPv6 form, an IPv6
address as is, ``;`` after each).
"""

from __future__ import annotations

import ipaddress
import socket

import attrs


@attrs.frozen
class Answers:
    """The answers of one response: aliases (CNAME chain, in order) and addresses."""

    aliases: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    #: parts that are neither (other record types such as ``type: 33 ...``), kept for reports
    other: tuple[str, ...] = ()


_memo: dict[str, Answers] = {}
_MEMO_MAX = 1024


def parse_query_results(text: str) -> Answers:
    """Split a ``QueryResults`` string; IPv4-mapped addresses come back as plain IPv4.

    Answers repeat (the same names are resolved again and again), so recent
    ones are remembered.
    """
    hit = _memo.get(text)
    if hit is not None:
        return hit
    answers = _parse(text)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[text] = answers
    return answers


def _ipv4(text: str) -> str | None:
    try:
        return socket.inet_ntoa(socket.inet_aton(text)) if text.count(".") == 3 else None
    except OSError:
        return None


def _parse(text: str) -> Answers:
    aliases: list[str] = []
    addresses: list[str] = []
    other: list[str] = []
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        if part.startswith("type:"):
            rest = part[5:].strip()
            rtype, _, value = rest.partition(" ")
            value = value.strip()
            if rtype == "5" and value:
                aliases.append(value)
            else:
                other.append(part)
            continue
        if part[:7].lower() == "::ffff:" and "." in part:
            v4 = _ipv4(part[7:])  # the common case, without ipaddress's cost
            if v4 is not None:
                addresses.append(v4)
                continue
        try:
            address = ipaddress.ip_address(part)
        except ValueError:
            other.append(part)
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.append(str(address))
    return Answers(tuple(aliases), tuple(addresses), tuple(other))
