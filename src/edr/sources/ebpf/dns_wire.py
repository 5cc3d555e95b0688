"""A small DNS message parser (RFC 1035) for captured query and answer payloads.

Sans-IO and defensive: payloads come from user memory of arbitrary processes,
so every malformed message yields None, never an exception.
"""

from __future__ import annotations

import ipaddress
from typing import Final, NamedTuple

QTYPE_NAMES: Final = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY",
}
TYPE_A: Final = 1
TYPE_CNAME: Final = 5
TYPE_AAAA: Final = 28


class Answer(NamedTuple):
    """One resource record of the answer section."""

    rtype: int
    ttl: int
    value: str  # an address for A/AAAA, a name for CNAME, "" for others


class DnsMessage(NamedTuple):
    """The parts of a DNS message the sensor reports."""

    txid: int
    is_response: bool
    rcode: int
    qname: str
    qtype: int
    answers: tuple[Answer, ...]


class _Malformed(Exception):
    pass


def _name(buf: bytes, pos: int) -> tuple[str, int]:
    """Read a possibly compressed name at ``pos``; return it and the position after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if pos >= len(buf):
            raise _Malformed
        length = buf[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(buf):
                raise _Malformed
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | buf[pos + 1]
            jumps += 1
            if jumps > 32:  # a pointer loop
                raise _Malformed
            continue
        if length & 0xC0:
            raise _Malformed
        pos += 1
        if length == 0:
            break
        if pos + length > len(buf):
            raise _Malformed
        labels.append(buf[pos:pos + length].decode("ascii", "backslashreplace"))
        pos += length
        if len(labels) > 127:
            raise _Malformed
    return ".".join(labels), (end if end >= 0 else pos)


def _u16(buf: bytes, pos: int) -> int:
    if pos + 2 > len(buf):
        raise _Malformed
    return (buf[pos] << 8) | buf[pos + 1]


def _parse(buf: bytes) -> DnsMessage:
    if len(buf) < 12:
        raise _Malformed
    txid = _u16(buf, 0)
    flags = _u16(buf, 2)
    qdcount = _u16(buf, 4)
    ancount = _u16(buf, 6)
    if qdcount < 1:
        raise _Malformed
    qname, pos = _name(buf, 12)
    qtype = _u16(buf, pos)
    pos += 4
    for _ in range(qdcount - 1):
        _, pos = _name(buf, pos)
        pos += 4
    answers: list[Answer] = []
    for _ in range(min(ancount, 64)):
        try:
            _, pos = _name(buf, pos)
            rtype = _u16(buf, pos)
            ttl = (_u16(buf, pos + 4) << 16) | _u16(buf, pos + 6)
            rdlen = _u16(buf, pos + 8)
        except _Malformed:
            break  # the capture is bounded: keep the answers that fit
        pos += 10
        if pos + rdlen > len(buf):
            break
        rdata = buf[pos:pos + rdlen]
        value = ""
        if rtype == TYPE_A and rdlen == 4:
            value = str(ipaddress.IPv4Address(rdata))
        elif rtype == TYPE_AAAA and rdlen == 16:
            value = str(ipaddress.IPv6Address(rdata))
        elif rtype == TYPE_CNAME:
            try:
                value, _ = _name(buf, pos)
            except _Malformed:
                value = ""
        answers.append(Answer(rtype, ttl, value))
        pos += rdlen
    return DnsMessage(txid, bool(flags & 0x8000), flags & 0xF, qname, qtype, tuple(answers))


def parse_dns(payload: bytes) -> DnsMessage | None:
    """Parse a UDP DNS message, or a TCP one with its 2-byte length prefix; None if malformed."""
    try:
        return _parse(payload)
    except (_Malformed, ValueError):
        pass
    if len(payload) > 14 and int.from_bytes(payload[:2], "big") >= 12:
        try:
            return _parse(payload[2:])
        except (_Malformed, ValueError):
            return None
    return None


def qtype_name(qtype: int) -> str:
    """The mnemonic of a query type (``A``, ``AAAA``...), or ``TYPE<n>`` (RFC 3597)."""
    return QTYPE_NAMES.get(qtype, f"TYPE{qtype}")


def sysmon_query_results(answers: tuple[Answer, ...]) -> str:
    """Answers formatted as Sysmon's QueryResults: ``type:  5 alias;::ffff:1.2.3.4;2001:db8::1;``."""
    parts: list[str] = []
    for a in answers:
        if a.rtype == TYPE_A and a.value:
            parts.append(f"::ffff:{a.value};")
        elif a.rtype == TYPE_AAAA and a.value:
            parts.append(f"{a.value};")
        elif a.rtype == TYPE_CNAME and a.value:
            parts.append(f"type:  5 {a.value};")
    return "".join(parts)
