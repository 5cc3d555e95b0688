"""Errors of the eBPF sensor."""

from __future__ import annotations


class SensorUnavailable(RuntimeError):
    """The sensor cannot run on this host; the message says what is missing and how to fix it."""
