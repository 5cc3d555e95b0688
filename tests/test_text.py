"""Text that is not valid Unicode (surrogate escapes from live paths) and JSON it cannot break."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from edr.alerts.ndjson import dumps_line
from edr.text import printable, replaced, utf8

RAW = st.binary(max_size=24)


@given(RAW)
def test_utf8_is_valid_and_keeps_every_valid_character(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    out = utf8(text).decode()  # valid UTF-8
    assert out == replaced(text) and len(out) == len(text)
    assert all(a == b or (b == "\ufffd" and 0xD800 <= ord(a) < 0xE000) for a, b in zip(text, out, strict=True))


@given(st.text(max_size=12))
def test_valid_text_is_untouched(text: str) -> None:
    assert printable(text) is text
    assert replaced(text) is text
    assert utf8(text) == text.encode()


def test_printable_spells_out_what_is_not_unicode() -> None:
    assert printable("/etc/cron.d/x\udcff\udcfe") == "/etc/cron.d/x\\xff\\xfe"
    assert printable("a\ud800b") == "a\\ud800b"  # a lone surrogate that is no escaped byte
    assert utf8("a\ud800b") == "a\ufffdb".encode()


def test_dumps_line_writes_what_orjson_refuses() -> None:
    doc = {"file.path": "/etc/cron.d/x\udcff", "edr.event.Big": 10**30, "neg": -(10**20), "ok": 2**64 - 1,
           "list": ["\udcfe", 1], "key\udcff": True, "nested": {"k": ("\ud800",), 10**25: 1}}
    line = dumps_line(doc)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"file.path": "/etc/cron.d/x\\xff", "edr.event.Big": str(10**30),
                                  "neg": str(-(10**20)), "ok": 2**64 - 1, "list": ["\\xfe", 1], "key\\xff": True,
                                  "nested": {"k": ["\\ud800"], str(10**25): 1}}
    plain = {"a": "b", "n": 1}
    assert dumps_line(plain) == orjson.dumps(plain, option=orjson.OPT_APPEND_NEWLINE)
