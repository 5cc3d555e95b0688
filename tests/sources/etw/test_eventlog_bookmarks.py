"""Where each channel was left, kept in a private file that is read defensively."""

from __future__ import annotations

import logging
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edr.sources.etw.eventlog_bookmarks import FILE_NAME, BookmarkFile, Bookmarks, bookmark_xml


def test_the_bookmark_windows_takes() -> None:
    text = bookmark_xml("Microsoft-Windows-Windows Defender/Operational", 4711)
    assert text == ("<BookmarkList><Bookmark Channel=\"Microsoft-Windows-Windows Defender/Operational\" "
                    "RecordId='4711' IsCurrent='true'/></BookmarkList>")
    odd = ET.fromstring(bookmark_xml("a'b\"c<&>", 1))  # any channel name stays one attribute
    assert odd.find("Bookmark").attrib["Channel"] == "a'b\"c<&>"  # type: ignore[union-attr]


def test_positions_advance_and_are_written_privately(tmp_path: Path) -> None:
    marks = Bookmarks()
    assert marks.get("Security") is None and not marks.dirty
    marks.advance("Security", 10)
    marks.advance("System", 3)
    assert marks.dirty
    store = BookmarkFile(tmp_path / "state")
    store.write(marks.to_bytes())
    path = tmp_path / "state" / FILE_NAME
    assert store.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    again = BookmarkFile(tmp_path / "state").load()
    assert again.positions() == {"Security": 10, "System": 3} and not again.dirty
    marks.advance("Security", 10)  # the same position is no change
    assert again.get("Security") == 10


def test_no_file_is_a_first_start(tmp_path: Path) -> None:
    assert BookmarkFile(tmp_path).load().positions() == {}


@pytest.mark.parametrize(("content", "problems", "kept"), [
    (b"{not json", ["not JSON"], {}),
    (b"[1, 2]", ['no "channels" object'], {}),
    (b'{"format": 2, "channels": {"Security": 1}}', ["format 2 is not 1"], {}),
    (b'{"format": 1, "channels": {"Security": "12", "System": -1, "Application": 7, "Setup": true}}',
     ["channels.Security: '12' is no record number", "channels.System: -1 is no record number",
      "channels.Setup: True is no record number"], {"Application": 7}),
])
def test_a_bad_file_is_reported_and_those_channels_start_anew(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                content: bytes, problems: list[str],
                                                                kept: dict[str, int]) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    os.chmod(tmp_path / FILE_NAME, 0o600)
    os.chmod(tmp_path, 0o700)
    with caplog.at_level(logging.WARNING, logger="edr.eventlog"):
        loaded = BookmarkFile(tmp_path).load()
    assert loaded.positions() == kept
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(problems)
    for message, problem in zip(messages, problems, strict=True):
        assert message.startswith(f"eventlog: {tmp_path / FILE_NAME}: ") and problem in message
        assert "starts with new events" in message


def test_a_file_others_could_have_written_or_a_link_is_not_trusted(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    os.chmod(tmp_path, 0o700)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b'{"format": 1, "channels": {"Security": 99}}')
    (tmp_path / FILE_NAME).symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="edr.eventlog"):
        assert BookmarkFile(tmp_path).load().positions() == {}
    assert "is a symbolic link: refusing to read it" in caplog.text
    (tmp_path / FILE_NAME).unlink()
    (tmp_path / FILE_NAME).write_bytes(target.read_bytes())
    os.chmod(tmp_path / FILE_NAME, 0o666)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edr.eventlog"):
        assert BookmarkFile(tmp_path).load().positions() == {}
    assert "writable by group and others" in caplog.text


def test_an_oversized_file_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.chmod(tmp_path, 0o700)
    (tmp_path / FILE_NAME).write_bytes(b" " * (2 << 20))
    os.chmod(tmp_path / FILE_NAME, 0o600)
    with caplog.at_level(logging.WARNING, logger="edr.eventlog"):
        assert BookmarkFile(tmp_path).load().positions() == {}
    assert "larger than 1048576 bytes, not a bookmark file" in caplog.text
