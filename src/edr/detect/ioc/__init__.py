"""Atomic IOC engine: hashes, IPs/CIDRs, domains and path regexes from plain list files."""

from edr.detect.ioc.engine import IocSet, load_iocs
from edr.detect.ioc.lists import Indicator

__all__ = ["Indicator", "IocSet", "load_iocs"]
