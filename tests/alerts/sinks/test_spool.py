"""The disk spool: order, acknowledgement, restart, kill -9, torn writes, damage, a full spool, a busy one."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edr.alerts.sinks.spool import ACK_NAME, Spool, SpoolBusy, segment_name
from edr.alerts.sinks.spool_frames import HEADER_SIZE, frame
from edr.platform.private_files import UnsafePath


def records(n: int, start: int = 0, size: int = 100) -> list[bytes]:
    return [f"record {i:06d} ".encode().ljust(size, b".") for i in range(start, start + n)]


def drain(spool: Spool, offset: int | None = None, max_records: int = 1000, max_bytes: int = 1 << 20,
          ack: bool = True) -> list[bytes]:
    """Every record from ``offset`` (default the ack offset), acknowledging each batch with ``ack``."""
    out: list[bytes] = []
    pos = spool.ack_offset if offset is None else offset
    while (batch := spool.read(pos, max_records, max_bytes)) is not None:
        out.extend(batch.payloads)
        if ack:
            spool.ack(batch.end, len(batch))
        pos = batch.end
    return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def open_spool(path: Path, **kw: object) -> Spool:
    spool = Spool(path, **{"max_bytes": 1 << 20, "segment_bytes": 4096, **kw})  # type: ignore[arg-type]
    spool.open()
    return spool


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".seg"))


def test_records_come_back_in_order_across_segments_and_delivered_segments_go(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    for i in range(10):
        assert spool.append(records(10, i * 10)).accepted == 10
    assert spool.pending_records == 100
    assert len(segments(tmp_path / "s")) > 3  # 100 records of 112 bytes in 4 KiB segments
    batch = spool.read(spool.ack_offset, 7, 1 << 20)
    assert batch is not None and batch.payloads == records(7)
    assert spool.read(batch.end, 1000, 250).payloads == records(2, 7)  # max_bytes: 2 records of 100
    assert spool.read(batch.end, 1000, 10).payloads == records(1, 7)  # always at least one
    assert drain(spool) == records(100)
    assert spool.pending_records == 0 and spool.pending_bytes == 0
    assert len(segments(tmp_path / "s")) == 1  # the one being written stays
    assert spool.read(spool.ack_offset, 10, 1 << 20) is None
    st = os.stat(tmp_path / "s")
    assert stat.S_IMODE(st.st_mode) == 0o700
    for p in (tmp_path / "s").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    spool.close()


def test_restart_delivers_what_was_not_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    spool.append(records(50))
    got = []
    pos = spool.ack_offset
    for _ in range(3):
        batch = spool.read(pos, 10, 1 << 20)
        assert batch is not None
        got.extend(batch.payloads)
        pos = batch.end
        spool.ack(batch.end, len(batch))
    assert got == records(30)
    spool.close()
    again = open_spool(tmp_path / "s")
    assert again.pending_records == again.recovered == 20
    assert drain(again) == records(20, 30)
    again.append(records(5, 50))
    assert drain(again) == records(5, 50)
    again.close()


def test_ack_file_is_written_at_most_every_interval_and_at_close(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = open_spool(tmp_path / "s", ack_interval=1.0, clock=clock)
    spool.append(records(3))
    first = spool.read(spool.ack_offset, 1, 1 << 20)
    assert first is not None
    spool.ack(first.end, 1)  # the first ack is written at once
    assert (tmp_path / "s" / ACK_NAME).read_text() == f"{first.end}\n"
    second = spool.read(first.end, 1, 1 << 20)
    assert second is not None
    spool.ack(second.end, 1)
    assert (tmp_path / "s" / ACK_NAME).read_text() == f"{first.end}\n"  # within the interval
    clock.now = 1.5
    third = spool.read(second.end, 1, 1 << 20)
    assert third is not None
    spool.ack(third.end, 1)
    assert (tmp_path / "s" / ACK_NAME).read_text() == f"{third.end}\n"
    spool.close()


def test_an_ack_lost_with_the_process_means_redelivery_not_loss(tmp_path: Path) -> None:
    """Acks inside the interval are not on disk: a crash then redelivers them (at least once)."""
    clock = FakeClock()
    spool = open_spool(tmp_path / "s", ack_interval=60.0, clock=clock)
    spool.append(records(4))
    b1 = spool.read(spool.ack_offset, 1, 1 << 20)
    assert b1 is not None
    spool.ack(b1.end, 1)  # written
    b2 = spool.read(b1.end, 2, 1 << 20)
    assert b2 is not None
    spool.ack(b2.end, 2)  # not written: the process "dies" without close
    spool._close_files()
    spool._release()
    again = open_spool(tmp_path / "s")
    assert drain(again) == records(3, 1)
    again.close()


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from edr.alerts.sinks.spool import Spool
    spool = Spool(sys.argv[1], max_bytes=1 << 24, segment_bytes=8192)
    spool.open()
    for i in range(20):
        spool.append([f"record {i * 25 + j:06d}".encode() for j in range(25)])
        if i == 9:
            batch = spool.read(spool.ack_offset, 100, 1 << 20)
            spool.ack(batch.end, len(batch))  # 100 delivered
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_after_append_loses_nothing(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "s")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    spool = open_spool(tmp_path / "s")  # the dead process's lock went with it
    assert spool.recovered == 400
    assert drain(spool) == [f"record {i:06d}".encode() for i in range(100, 500)]
    assert spool.torn_bytes == spool.corrupt_bytes == 0
    spool.close()


def test_a_torn_write_is_skipped_counted_and_never_merged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = open_spool(tmp_path / "s")
    spool.append(records(3))
    spool.close()
    seg = tmp_path / "s" / segments(tmp_path / "s")[-1]
    torn = frame(records(1, 3)[0])[:-40]  # a crash in the middle of a write
    with open(seg, "ab") as fh:
        fh.write(torn)
    with caplog.at_level(logging.WARNING, logger="edr.sinks"):
        again = open_spool(tmp_path / "s")
    assert again.torn_records == 1 and again.torn_bytes == len(torn)
    assert "cut short" in caplog.text and seg.name in caplog.text
    assert again.pending_records == 3
    again.append(records(2, 10))
    # the new records went to a new segment: nothing was appended after the torn bytes
    assert seg.stat().st_size == 3 * len(frame(records(1)[0])) + len(torn)
    assert drain(again) == records(3) + records(2, 10)
    again.close()
    third = open_spool(tmp_path / "s")
    assert drain(third) == []
    third.close()


def test_damage_inside_a_segment_skips_that_record_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = open_spool(tmp_path / "s")
    spool.append(records(5))
    spool.close()
    seg = tmp_path / "s" / segments(tmp_path / "s")[0]
    data = bytearray(seg.read_bytes())
    one = len(frame(records(1)[0]))
    data[2 * one + HEADER_SIZE + 10] ^= 0xFF  # the third record's payload
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="edr.sinks"):
        again = open_spool(tmp_path / "s")
    assert again.corrupt_bytes == one
    assert "damaged bytes" in caplog.text
    assert again.pending_records == 4
    assert drain(again) == records(2) + records(2, 3)
    again.close()


def test_a_full_spool_refuses_counts_and_never_blocks(tmp_path: Path) -> None:
    one = len(frame(records(1)[0]))
    spool = open_spool(tmp_path / "s", max_bytes=10 * one, segment_bytes=4 * one)
    done = spool.append(records(15))
    assert (done.accepted, done.full) == (10, 5)
    assert spool.full == 5 and spool.pending_records == 10
    assert spool.append(records(1, 99)).full == 1
    batch = spool.read(spool.ack_offset, 4, 1 << 20)
    assert batch is not None
    spool.ack(batch.end, len(batch))  # room for 4 more
    assert spool.append(records(6, 15)).accepted == 4
    assert drain(spool) == records(10)[4:] + records(4, 15)
    # delivered segments were removed: what is on disk is at most the bound plus the segment being written
    assert spool.disk_bytes <= 10 * one + 4 * one
    spool.close()


def test_a_record_larger_than_a_read_window(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", max_bytes=8 << 20)
    big = b"x" * (3 << 20)
    spool.append([b"small", big, b"after"])
    assert drain(spool, max_bytes=1024) == [b"small", big, b"after"]
    spool.close()


def test_an_unreadable_ack_file_redelivers_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = open_spool(tmp_path / "s")
    spool.append(records(4))
    drain(spool, max_records=2)
    spool.close()
    (tmp_path / "s" / ACK_NAME).write_bytes(b"garbage\n")
    with caplog.at_level(logging.WARNING, logger="edr.sinks"):
        again = open_spool(tmp_path / "s")
    assert "not an offset" in caplog.text
    assert again.pending_records == 4  # at least once: delivered again rather than lost
    assert drain(again) == records(4)
    again.close()


def test_an_ack_pointing_inside_a_record_moves_back_to_its_start(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    spool.append(records(3))
    spool.close()
    one = len(frame(records(1)[0]))
    (tmp_path / "s" / ACK_NAME).write_text(f"{one + 7}\n")
    again = open_spool(tmp_path / "s")
    assert again.ack_offset == one
    assert drain(again) == records(2, 1)
    again.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    with pytest.raises(SpoolBusy, match="in use by another edr process"):
        Spool(tmp_path / "s", max_bytes=1 << 20).open()
    spool.close()
    Spool(tmp_path / "s", max_bytes=1 << 20).open()


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "open"
    target.mkdir()
    os.chmod(target, 0o777)
    with pytest.raises(UnsafePath, match="writable"):
        Spool(target, max_bytes=1 << 20).open()


def test_a_planted_segment_link_is_refused(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    spool.close()
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    (tmp_path / "s" / segment_name(0)).unlink()
    os.symlink(victim, tmp_path / "s" / segment_name(0))
    with pytest.raises(OSError):
        Spool(tmp_path / "s", max_bytes=1 << 20).open()
    assert victim.read_bytes() == b""


def test_a_segment_removed_by_someone_else_is_a_gap_not_a_crash(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", segment_bytes=1024)
    for i in range(6):
        spool.append(records(5, i * 5))
    spool.close()
    names = segments(tmp_path / "s")
    assert len(names) >= 3
    (tmp_path / "s" / names[1]).unlink()
    again = open_spool(tmp_path / "s", segment_bytes=1024)
    got = drain(again)
    assert got[:5] == records(5) and len(got) < 30 and got[-5:] == records(5, 25)
    again.close()
