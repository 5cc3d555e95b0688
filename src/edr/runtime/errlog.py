"""Errors that may repeat without end: log the first few in full, then only count them.

An actor that skips a bad record, or an engine that fails on an odd event,
must say so without flooding the log when a stream is full of them. An
:class:`ErrorLog` logs the first ``limit`` occurrences of each key with
their message (and traceback when asked), one line saying that the rest
will only be counted, and keeps the counts for the health record.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

#: Occurrences of one key logged in full before the rest are only counted.
DEFAULT_LIMIT = 20


class ErrorLog:
    """Rate-limited error reporting: per key, ``limit`` lines, then counting.

    ``what`` names the kind of error in the "only counting" line (e.g.
    ``"undecodable records"``). Not thread-safe: one actor owns each.
    """

    __slots__ = ("_counts", "limit", "log", "total", "what")

    def __init__(self, log: logging.Logger, what: str, limit: int = DEFAULT_LIMIT) -> None:
        self.log = log
        self.what = what
        self.limit = limit
        self.total = 0
        self._counts: dict[Hashable, int] = {}

    def report(self, message: str, *args: Any, key: Hashable = None, exc_info: bool = False,
               level: int = logging.ERROR) -> None:
        """Count one error of ``key``; log it while fewer than ``limit`` of that key were logged."""
        self.total += 1
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        if n <= self.limit:
            self.log.log(level, message, *args, exc_info=exc_info)
        elif n == self.limit + 1:
            where = f" ({key})" if key is not None else ""
            self.log.log(level, "more %s%s: counting them without logging each", self.what, where)

    def count(self, key: Hashable = None) -> int:
        """How many errors of ``key`` were reported."""
        return self._counts.get(key, 0)
