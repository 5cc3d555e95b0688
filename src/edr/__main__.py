"""``python -m edr``."""

from edr.cli import entry

entry()
