"""Which files replay reads as what, and which it refuses (and why): never by name, never silently."""

from __future__ import annotations

import gzip
import io
import os
import socket
import threading
from pathlib import Path

import orjson
import pytest

from edr.sources.replay.formats import UnusableFile, detect_format, expand_inputs, open_recording

EVENT = orjson.dumps({"ts": 1.0, "category": "file_event", "product": "linux", "fields": {"a": 1}}) + b"\n"
EVTX_JSON = b'{\n  "Event": {\n    "System": {\n      "EventID": 1\n    }\n  }\n}\n'


def fmt(data: bytes) -> str:
    return detect_format(io.BytesIO(data))


@pytest.mark.parametrize(("data", "want"), [
    (b"ElfFile\0" + os.urandom(200), "evtx"),
    (EVTX_JSON, "evtx_json"),
    (b"Record 1\n" + EVTX_JSON, "evtx_json"),
    (b'{"Event":{"System":{}}}\n', "evtx_json"),  # one record per line (jsonl) is evtx JSON too
    (b"\xef\xbb\xbf" + EVTX_JSON, "evtx_json"),
    (EVENT * 3, "ndjson"),
    (b"{bad\n" + EVENT, "ndjson"),  # an invalid first line starting with "{" is not taken for evtx JSON
    (b"{" + b"x" * (2 << 20) + b"\n" + EVENT, "ndjson"),  # nor is a first line longer than anything read ahead
    (b"x" * (3 << 20) + b"\n" + EVENT, "ndjson"),  # a huge first line that is no object: the next one is
    (b"this is not json\n" + EVENT, "ndjson"),
    (EVENT + b"\0" * 5000 + EVENT, "ndjson"),  # unwritten blocks left by a crash
    # DEL needs no escape in JSON: a command line full of it is still text (the fuzzer's ebpf round trip)
    (orjson.dumps({"category": "process_creation", "fields": {"CommandLine": "\x7f" * 500}}) + b"\n", "ndjson"),
    (b"", "ndjson"),  # an empty stream
    (b"\n\n", "ndjson"),
])
def test_formats_are_told_by_content(data: bytes, want: str) -> None:
    assert fmt(data) == want


@pytest.mark.parametrize(("data", "reason"), [
    (os.urandom(4096).replace(b"\0", b"\1"), "binary data"),
    (b"\x00\x01\x02\x03" * 100, "binary data"),
    (gzip.compress(EVENT * 10), "gzip-compressed"),
    ("\ufeff".encode("utf-16-le") + EVTX_JSON.decode().encode("utf-16-le"), "UTF-16 text"),
    (b"date,host,user\n2026-01-01,a,b\n", "none of the first 16 lines is a JSON object"),
    (b"\n".join([b"text"] * 20) + b"\n" + EVENT, "none of the first 16 lines"),
    (b"[1, 2, 3]\n", "none of the first 16 lines"),
])
def test_what_matches_no_format_is_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UnusableFile, match=reason) as info:
        fmt(data)
    assert str(info.value).startswith("not a recognised format")


def test_detection_leaves_the_file_at_its_start() -> None:
    for data in (EVENT, b"x" * 100_000 + b"\n" + EVENT, EVTX_JSON):
        fh = io.BytesIO(data)
        detect_format(fh)
        assert fh.read() == data


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "events.ndjson"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(outcome, fifo), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening a FIFO blocked"
    assert isinstance(outcome[0], UnusableFile) and str(outcome[0]) == "not a regular file (a FIFO)"


def _capture(outcome: list[BaseException], path: Path) -> None:
    try:
        open_recording(path)
    except BaseException as exc:
        outcome.append(exc)


def test_devices_sockets_and_directories_are_no_regular_files(tmp_path: Path) -> None:
    with pytest.raises(UnusableFile, match=r"^not a regular file \(a character device\)$"):
        open_recording("/dev/zero")  # would otherwise be read for ever
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s.ndjson"))
        with pytest.raises(UnusableFile, match=r"\(a socket\)"):
            open_recording(tmp_path / "s.ndjson")
    with pytest.raises(UnusableFile, match=r"\(a directory\)"):
        open_recording(tmp_path)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UnusableFile, match=r"^cannot read: \[Errno 2\]"):
        open_recording(tmp_path / "nope.ndjson")
    good = tmp_path / "good.ndjson"
    good.write_bytes(EVENT)
    fh, found = open_recording(good)
    with fh:
        assert found == "ndjson" and fh.read() == EVENT


def test_a_fifo_named_on_the_command_line_is_no_missing_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "events.json.2026-01-01")
    (tmp_path / "a.evtx").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    files, missing = expand_inputs([str(tmp_path / "events.json.2026-01-01"), str(tmp_path), "nope"])
    # named: taken whatever it is; in a directory: by name, FIFO included, for the source to report
    assert files == [str(tmp_path / "events.json.2026-01-01"), str(tmp_path / "a.evtx"),
                     str(tmp_path / "events.json.2026-01-01")]
    assert missing == ["nope"]
