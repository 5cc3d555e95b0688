"""Progress of an install or an update: a small callback, drawn by tqdm on a terminal only.

The commands report phases through :class:`Progress` (``begin``,
``advance``, ``end``) and know nothing of terminals, so they stay testable
and the same calls serve a CLI, a service log or nothing
(:class:`NullProgress`). :func:`terminal_progress` gives a tqdm bar on
standard error when it is a terminal (:func:`interactive`) and
:class:`NullProgress` otherwise: a pipe, a log file, a service's journal or
a ``--json`` consumer never sees control characters. The Sigma rule
compile (``compile``: rule files, on a cold start, ``edr rules check``, and
as the ``validate`` phase of an install) and ``edr replay`` (bytes of the
recorded files) report through the same classes.

Phases, in order: ``download`` (bytes; ``update`` only), ``read`` (files
read, hashed and written), ``validate`` (loading every rule with edr's
Sigma loader: no count is known, so the bar shows the time spent, ticking
on its own), then ``activate``.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


class Progress(Protocol):
    """Receives the progress of a long operation. Calls come from one thread, in order."""

    def begin(self, phase: str, total: int | None = None, unit: str = "") -> None:
        """A phase starts; ``total`` units are expected (None: unknown)."""
        ...

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units of the current phase are done."""
        ...

    def end(self) -> None:
        """The current phase is over (also called when it failed)."""
        ...


class NullProgress:
    """Progress that shows nothing."""

    def begin(self, phase: str, total: int | None = None, unit: str = "") -> None:
        """See :class:`Progress`."""

    def advance(self, amount: int = 1) -> None:
        """See :class:`Progress`."""

    def end(self) -> None:
        """See :class:`Progress`."""


_LABELS = {"download": "downloading", "read": "reading pack", "validate": "validating rules",
           "activate": "activating", "compile": "compiling Sigma rules", "replay": "replaying"}


class TqdmProgress:
    """Progress drawn by tqdm on ``stream``; a phase with no total shows its elapsed time, refreshed twice a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._bar: tqdm | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _width(self) -> dict[str, object]:
        """tqdm's size options: follow the terminal, or 80 by 24 if it reports no size (a serial console).

        tqdm hides a bar below the terminal's last row: with 0 rows reported, every bar.
        """
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (AttributeError, OSError, ValueError):
            size = os.terminal_size((0, 0))
        return {"dynamic_ncols": True} if size.columns and size.lines else {"ncols": 80, "nrows": 24}

    def begin(self, phase: str, total: int | None = None, unit: str = "") -> None:
        """See :class:`Progress`."""
        # imported here: a replay or a start without a terminal draws nothing, and tqdm costs ~14 ms to import
        from tqdm import tqdm

        self.end()
        label = _LABELS.get(phase, phase)
        if unit == "B":
            self._bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                             file=self.stream, leave=True, **self._width())
        elif total is None:
            self._bar = tqdm(total=None, desc=label, file=self.stream, leave=True,
                             bar_format="{desc}: {elapsed}")
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, args=(self._bar,), daemon=True,
                                            name="edr-progress")
            self._ticker.start()
        else:
            self._bar = tqdm(total=total, desc=label, unit=f" {unit}" if unit else "it", file=self.stream,
                             leave=True, **self._width())

    def _tick(self, bar: tqdm) -> None:
        while not self._stop.wait(0.5):
            bar.refresh()

    def advance(self, amount: int = 1) -> None:
        """See :class:`Progress`."""
        if self._bar is not None:
            self._bar.update(amount)

    def end(self) -> None:
        """See :class:`Progress`."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def interactive(stream: TextIO) -> bool:
    """Whether a person watches ``stream``: it is a terminal, and this process is not a systemd service.

    A service may have a terminal (``StandardError=tty``: a console that
    also logs to the journal); one that systemd supervises says so with
    ``NOTIFY_SOCKET``, and a stream connected to the journal is the one
    ``JOURNAL_STREAM`` names (device:inode, as systemd documents).
    """
    try:
        if not stream.isatty():
            return False
        status = os.fstat(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    if os.environ.get("NOTIFY_SOCKET"):
        return False
    journal = os.environ.get("JOURNAL_STREAM", "")
    return journal != f"{status.st_dev}:{status.st_ino}"


_quiet = False


def quiet() -> None:
    """No progress from now on in this process, even on a terminal (``--no-progress``)."""
    global _quiet
    _quiet = True


def terminal_progress(stream: TextIO | None = None) -> Progress:
    """tqdm progress on ``stream`` (standard error by default) if :func:`interactive`, else :class:`NullProgress`.

    Also :class:`NullProgress` after :func:`quiet`.
    """
    stream = sys.stderr if stream is None else stream
    return TqdmProgress(stream) if interactive(stream) and not _quiet else NullProgress()
