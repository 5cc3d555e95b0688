"""IP addresses and CIDR ranges, IPv4 and IPv6, looked up without scanning every range.

Networks are grouped by prefix length: for each length present a dict maps
the network number to its indicator, so a lookup costs one shift and one
dict probe per *distinct prefix length* (at most 33 for IPv4, 129 for IPv6)
however many ranges are listed.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from edr.detect.ioc.lists import Indicator


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from an event field: tolerates brackets, zone ids, IPv4-mapped IPv6; None if not one."""
    text = text.strip()
    if not text:
        return None
    if text[0] == "[":
        text = text[1:].partition("]")[0]
    text = text.partition("%")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class IpSet:
    """Listed addresses and networks; ``lookup`` returns every indicator containing an address."""

    def __init__(self) -> None:
        # version -> [(prefix_len, {network_int: Indicator})], longest prefix first
        self._tables: dict[int, dict[int, dict[int, Indicator]]] = {4: {}, 6: {}}
        self._plans: dict[int, tuple[tuple[int, dict[int, Indicator]], ...]] = {4: (), 6: ()}
        self.addresses = 0
        self.networks = 0

    def __len__(self) -> int:
        return self.addresses + self.networks

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, indicator: Indicator) -> bool:
        """Add a network (an address is a /32 or /128); False if it was already listed."""
        table = self._tables[network.version].setdefault(network.prefixlen, {})
        bits = network.max_prefixlen
        key = int(network.network_address) >> (bits - network.prefixlen)
        if key in table:
            return False
        table[key] = indicator
        if network.prefixlen == bits:
            self.addresses += 1
        else:
            self.networks += 1
        self._plans[network.version] = tuple(
            sorted(((plen, t) for plen, t in self._tables[network.version].items()), reverse=True,
                   key=lambda item: item[0])
        )
        return True

    def lookup(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Indicator]:
        """Indicators whose network contains ``addr``, most specific first."""
        plan = self._plans[addr.version]
        if not plan:
            return []
        bits = addr.max_prefixlen
        value = int(addr)
        out = []
        for plen, table in plan:
            hit = table.get(value >> (bits - plen))
            if hit is not None:
                out.append(hit)
        return out

    def lookup_text(self, text: str) -> list[Indicator]:
        """``lookup`` for a field value; [] when it is not an address."""
        addr = _cached_parse(text)
        return self.lookup(addr) if addr is not None else []


@lru_cache(maxsize=4096)
def _cached_parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Hosts talk to the same few addresses over and over; parsing dominates the lookup.
    return parse_ip(text)


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A listed address or CIDR; host bits set in a CIDR are an error (``10.0.0.1/8`` is a typo)."""
    if "/" not in text:
        addr = parse_ip(text)
        if addr is None:
            raise ValueError("not an IP address or CIDR range")
        return ipaddress.ip_network(addr)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
