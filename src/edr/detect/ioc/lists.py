"""Reading the IOC list files: one indicator per line, errors with file and line.

Format shared by every list: ``#`` starts a comment (at the start of a line
or after whitespace), blank lines are ignored, and an optional ``;`` separates the value
from a free-text description (Rustinel's ``value;comment`` form), e.g.::

    203.0.113.0/24 ; documentation range used by the tests
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs

from edr.runtime.errors import EdrError, Location

# A comment starts at "#" at the start of a line or after whitespace, so a
# regex such as "C:\\x#y" keeps its "#".
_COMMENT = re.compile(r"(?:^|\s)#")


@attrs.frozen
class Indicator:
    """One listed indicator and where it came from.

    ``type`` is the short kind used in rule ids (``md5``, ``sha1``,
    ``sha256``, ``ip``, ``domain``, ``path_regex``); ``value`` is its
    normalized text as it appears in ``ioc:<type>:<value>``.
    """

    type: str
    value: str
    source: str
    line: int
    comment: str = ""

    @property
    def rule_id(self) -> str:
        """``ioc:<type>:<value>``."""
        return f"ioc:{self.type}:{self.value}"


@attrs.frozen
class ListLine:
    """A meaningful line of a list file: value, optional comment, position."""

    value: str
    comment: str
    source: str
    line: int


class IocLineError(EdrError, ValueError):
    """A list file, or a line of one, that was skipped; ``location`` names the file and the line."""


def read_list(path: str, errors: list[IocLineError]) -> Iterator[ListLine]:
    """The value lines of ``path``; a missing or unreadable file is one error, not an exception.

    An empty ``path`` is no list (``edr.rule_trust`` gives that for a list it refused).
    """
    if not path:
        return
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        errors.append(IocLineError("file not found; list is empty", Location(path)))
        return
    except OSError as exc:
        errors.append(IocLineError(f"cannot read ({exc.strerror or exc}); list is empty", Location(path)))
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.split(raw, 1)[0]
        value, _, comment = line.partition(";")
        value = value.strip()
        if not value:
            continue
        yield ListLine(value=value, comment=comment.strip(), source=path, line=number)


def bad_line(errors: list[IocLineError], item: ListLine, reason: str) -> None:
    """Record a skipped line (its message: ``file:line: reason: 'value' (skipped)``)."""
    errors.append(IocLineError(f"{reason}: {item.value!r} (skipped)", Location(item.source, item.line)))
