"""LiveHost's file look-ups, on real files: birth times on the sensor's clock, special files."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from edr.sources.ebpf.host import LiveHost

SLACK_NS = 50_000_000  # a few coarse-clock ticks


def test_birth_time_of_a_new_file_is_now_on_the_boot_clock(tmp_path: Path) -> None:
    host = LiveHost()
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    f = tmp_path / "new"
    f.write_text("x")
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    born = host.birth_boot_ns(str(f))
    if born is None:
        pytest.skip(f"{tmp_path} is on a filesystem without birth times")
    assert before - SLACK_NS <= born <= after
    # writing to it later does not move its birth (the clock conversion itself jitters by microseconds)
    time.sleep(0.05)
    f.write_text("y")
    again = host.birth_boot_ns(str(f))
    assert again is not None and abs(again - born) < 1_000_000


def test_birth_time_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert LiveHost().birth_boot_ns(str(tmp_path / "missing")) is None


def test_special_files(tmp_path: Path) -> None:
    host = LiveHost()
    regular = tmp_path / "f"
    regular.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        assert host.special_file(str(sock_path))
    assert host.special_file("/dev/null")
    assert host.special_file(str(fifo))
    assert not host.special_file(str(regular))
    assert not host.special_file(str(tmp_path))
    assert not host.special_file(str(tmp_path / "gone"))
