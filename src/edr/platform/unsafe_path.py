"""The error every private-files implementation raises for a path it refuses."""

from __future__ import annotations

import errno
import os


class UnsafePath(OSError):
    """A path the agent refuses to write to or to trust; ``reason`` says why and how to fix it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(errno.EPERM, f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
