"""Progress: a tqdm bar on a terminal (a real pseudo-terminal), nothing at all off one."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
from pathlib import Path

from edr.progress import TqdmProgress
from edr.rulepacks import NullProgress, install, terminal_progress
from tests.rulepacks.packs import make_zip, settings, sigmahq_like


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_progress_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # what a terminal window sets
    stream = os.fdopen(slave, "w", buffering=1)
    progress = terminal_progress(stream)
    assert isinstance(progress, TqdmProgress)
    cfg = settings(tmp_path)
    install(make_zip(tmp_path / "p.zip", sigmahq_like(5)), cfg.store_directory, cfg, progress)
    stream.close()
    shown = _read_all(master)
    os.close(master)
    assert "reading pack" in shown and "7/7 [" in shown  # 6 rules and the licence, all read
    assert "validating rules" in shown
    assert "\r" in shown  # redrawn in place


def test_a_terminal_that_reports_no_width_still_shows_progress(tmp_path: Path) -> None:
    master, slave = pty.openpty()  # a new pseudo-terminal is 0 x 0 until someone sets its size
    stream = os.fdopen(slave, "w", buffering=1)
    cfg = settings(tmp_path)
    install(make_zip(tmp_path / "p.zip", sigmahq_like(5)), cfg.store_directory, cfg, terminal_progress(stream))
    stream.close()
    shown = _read_all(master)
    os.close(master)
    assert "reading pack" in shown and "7/7 [" in shown


def test_nothing_is_written_off_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = terminal_progress(stream)
    assert isinstance(progress, NullProgress)
    cfg = settings(tmp_path)
    install(make_zip(tmp_path / "p.zip", sigmahq_like(5)), cfg.store_directory, cfg, progress)
    assert stream.getvalue() == ""
