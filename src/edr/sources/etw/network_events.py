"""Microsoft-Windows-Kernel-Network: TCP/UDP, IPv4/IPv6 connect and accept.

The provider's template declares the addresses as ``win:UInt32`` (IPv4) or
``win:Binary`` (IPv6) and the ports as ``win:UInt16``, with no IP or port
out-type: the values are the raw socket-address fields, in network byte
order, exactly as recorded (``daddr`` 396344852 is 20.190.159.23, ``dport``
47873 is port 443). Should a manifest declare ``win:IPv4``/``win:Port``
instead, TDH formats them itself (``"20.190.159.23"``, ``"443"``); a dotted or
colon-separated address marks that case and its ports are then taken as
they come.

The header's process is often System (pid 4, the stack completing the
connect); the ``PID`` property names the process that owns the socket.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, Any, Final

from edr import event as ev
from edr.event import Event, F
from edr.sources.etw.record import Header, as_bytes, as_int

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

_TRUE: Final = "true"
_FALSE: Final = "false"

#: event id -> (protocol, initiated, ipv6)
EVENTS: Final[dict[int, tuple[str, str, bool]]] = {
    12: ("tcp", _TRUE, False),   # TCPv4 connection attempted
    15: ("tcp", _FALSE, False),  # TCPv4 connection accepted
    28: ("tcp", _TRUE, True),    # TCPv6 connection attempted
    31: ("tcp", _FALSE, True),   # TCPv6 connection accepted
    42: ("udp", _TRUE, False),   # UDPv4 send
    43: ("udp", _FALSE, False),  # UDPv4 receive
    58: ("udp", _TRUE, True),    # UDPv6 send
    59: ("udp", _FALSE, True),   # UDPv6 receive
}
_PACK_U32: Final = struct.Struct("<I")


def address(value: Any) -> tuple[str, bool] | None:
    """``(address text, formatted by TDH)`` of a ``daddr``/``saddr`` property; None when unreadable."""
    if isinstance(value, str) and ("." in value or ":" in value):
        try:
            return str(ipaddress.ip_address(value.strip())), True
        except ValueError:
            return None
    if isinstance(value, str) and value.strip()[:2] in ("0x", "0X") and len(value.strip()) > 10:
        raw = as_bytes(value)  # an IPv6 address as win:Binary
        if raw is not None and len(raw) == 16:
            return str(ipaddress.IPv6Address(raw)), False
        return None
    number = as_int(value)
    if number is None or not 0 <= number <= 0xFFFFFFFF:
        return None
    # the u32 holds the address bytes in network order, read as a little-endian integer
    return socket.inet_ntoa(_PACK_U32.pack(number)), False


def port(value: Any, formatted: bool) -> int | None:
    """A port in host order: swapped from network order unless TDH already formatted it."""
    number = as_int(value)
    if number is None or not 0 <= number <= 0xFFFF:
        return None
    return number if formatted else ((number & 0xFF) << 8) | (number >> 8)


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """Kernel-Network record -> network_connection (data transfer events are ignored)."""
    kind = EVENTS.get(h.event_id)
    if kind is None:
        return None
    protocol, initiated, _v6 = kind
    dst = address(d.get("daddr"))
    src = address(d.get("saddr"))
    if dst is None or src is None:
        n.counts["network_malformed"] += 1
        return None
    formatted = dst[1]
    pid = as_int(d.get("PID"))
    if pid is None:
        pid = h.pid
    fields: dict[str, Any] = {F.PROTOCOL: protocol, F.INITIATED: initiated}
    for prefix, addr, port_value in (("Source", src[0], d.get("sport")), ("Destination", dst[0], d.get("dport"))):
        fields[f"{prefix}Ip"] = addr
        fields[f"{prefix}IsIpv6"] = _TRUE if ":" in addr else _FALSE
        number = port(port_value, formatted)
        if number is not None:
            fields[f"{prefix}Port"] = number
    # the remote end is the destination of a connect and the source of an accept
    remote = fields[F.DESTINATION_IP] if initiated == _TRUE else fields[F.SOURCE_IP]
    name = n.dns.lookup(remote, h.timestamp)
    if name:
        fields[F.DESTINATION_HOSTNAME if initiated == _TRUE else F.SOURCE_HOSTNAME] = name
    n.subject(pid, h, d, fields)
    return [n.event(ev.NETWORK_CONNECTION, fields, h)]
