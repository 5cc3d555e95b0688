"""The chained line format: canonical bytes, links, segments, reserved keys, the HMAC key file."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from edr.alerts import chain as chain_module
from edr.alerts.chain import (
    GENESIS,
    SUFFIX_LEN,
    AlertChain,
    ChainFormatError,
    ChainKeyError,
    ChainStart,
    ChainState,
    load_chain_key,
    parse_line,
)
from edr.alerts.ndjson import dumps_line

from .conftest import chain_lines

KEY = b"0123456789abcdef0123456789abcdef"


def doc(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"@timestamp": "2026-03-01T10:00:00.000Z", "rule.id": f"R-{i}", "process.pid": 4000 + i,
            "message": "sigma: caf\u00e9 \"quoted\" \\ back\nslash", **extra}


def test_line_layout_canonical_bytes_and_links() -> None:
    chain = AlertChain()
    first = chain.seal(doc(1))
    second = chain.seal(doc(2))
    for n, line in enumerate((first, second), 1):
        parsed = orjson.loads(line)
        assert parsed["edr.chain.seq"] == n
        digest = parsed["edr.chain.hash"]
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        # the hash is the last member, the seq the one before it
        assert line.endswith(b',"edr.chain.seq":%d,"edr.chain.hash":"%s"}\n' % (n, digest.encode()))
        assert len(line) - len(line[:-SUFFIX_LEN]) == 86
    # the first line starts the chain and says so; its canonical bytes are the writer's own serialization
    body1 = dumps_line({**doc(1), "edr.chain.start": "new chain", "edr.chain.alg": "sha256", "edr.chain.seq": 1})
    assert first[:-SUFFIX_LEN] + b"}" == body1[:-1]
    h1 = hashlib.sha256(GENESIS.encode() + body1[:-1]).hexdigest()
    assert orjson.loads(first)["edr.chain.hash"] == h1
    body2 = dumps_line({**doc(2), "edr.chain.seq": 2})
    assert "edr.chain.start" not in orjson.loads(second)
    assert orjson.loads(second)["edr.chain.hash"] == hashlib.sha256(h1.encode() + body2[:-1]).hexdigest()
    assert chain.state == ChainState(2, orjson.loads(second)["edr.chain.hash"])


def test_hmac_links_use_the_key() -> None:
    plain = AlertChain().seal(doc(1))
    keyed_chain = AlertChain(key=KEY)
    keyed = keyed_chain.seal(doc(1))
    assert orjson.loads(keyed)["edr.chain.alg"] == "hmac-sha256"
    body = keyed[:-SUFFIX_LEN] + b"}"
    assert orjson.loads(keyed)["edr.chain.hash"] == hmac.new(KEY, GENESIS.encode() + body, "sha256").hexdigest()
    assert orjson.loads(keyed)["edr.chain.hash"] != orjson.loads(plain)["edr.chain.hash"]


def test_resumed_chain_continues_without_a_marker() -> None:
    chain = AlertChain(ChainStart(ChainState(41, "ab" * 32)))
    line = chain.seal(doc())
    parsed = orjson.loads(line)
    assert parsed["edr.chain.seq"] == 42 and "edr.chain.start" not in parsed
    assert parse_line(line).link_ok("ab" * 32, None)


def test_new_segment_numbers_on_and_names_its_reason() -> None:
    chain = AlertChain(ChainStart(ChainState(7, GENESIS), "the last line of x: not JSON"))
    parsed = orjson.loads(chain.seal(doc()))
    assert parsed["edr.chain.seq"] == 8
    assert parsed["edr.chain.start"] == "the last line of x: not JSON" and parsed["edr.chain.alg"] == "sha256"


def test_reserved_keys_in_a_document_are_displaced_not_lost() -> None:
    chain = AlertChain()
    line = chain.seal(doc(edr_x=1, **{"edr.chain.seq": "forged", "edr.chain.hash": "f" * 64}))
    assert line.count(b'"edr.chain.seq"') == 1 and line.count(b'"edr.chain.hash"') == 1
    parsed = orjson.loads(line)
    assert parsed["edr.displaced.chain.seq"] == "forged"
    assert parsed["edr.displaced.chain.hash"] == "f" * 64
    assert parsed["edr.chain.seq"] == 1
    assert chain.displaced == 2
    assert parse_line(line).link_ok(GENESIS, None)


def test_documents_orjson_refuses_are_chained_too() -> None:
    # a file name that is not UTF-8 (lone surrogate) and an integer beyond 64 bits take dumps_line's slow path
    chain = AlertChain()
    lines = [chain.seal(doc(1, **{"file.path": "/tmp/\udcff.bin", "edr.event.Big": 1 << 70})), chain.seal(doc(2))]
    from edr.alerts.verify import ChainVerifier

    v = ChainVerifier()
    for n, line in enumerate(lines, 1):
        v.feed("mem", n, line)
    assert v.report().ok


def _third_party_verifier() -> Any:
    """The snippet of edr.alerts.chain's docstring, compiled as it is printed there."""
    text = chain_module.__doc__ or ""
    start = text.index("    import hashlib, hmac, json")
    end = text.index("\n\n(", start)
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(text[start:end]), namespace)
    return namespace["verify_lines"]


@pytest.mark.shared
def test_the_documented_stdlib_snippet_verifies_a_real_alert_file(replay_alert_lines: list[bytes]) -> None:
    verify_lines = _third_party_verifier()
    plain = chain_lines(replay_alert_lines, AlertChain())
    keyed = chain_lines(replay_alert_lines, AlertChain(key=KEY))
    verify_lines(plain)
    verify_lines(keyed, key=KEY)
    verify_lines(plain[10:])  # a file whose first line continues an older one
    edited = list(plain)
    edited[5] = edited[5].replace(b'"rule.severity":"', b'"rule.severity":"x', 1)
    with pytest.raises(AssertionError):
        verify_lines(edited)
    with pytest.raises(AssertionError):
        verify_lines(keyed, key=b"not the key at all, but long")


def test_parse_line_rejects_what_is_not_a_chained_line() -> None:
    good = AlertChain().seal(doc())
    with pytest.raises(ChainFormatError, match="partial line"):
        parse_line(good[:-1])
    with pytest.raises(ChainFormatError, match="not JSON"):
        parse_line(b'{"a":\n')
    with pytest.raises(ChainFormatError, match="not a JSON object"):
        parse_line(b"[1,2]\n")
    with pytest.raises(ChainFormatError, match=r"no edr\.chain fields") as info:
        parse_line(dumps_line(doc()))
    assert info.value.kind == "unchained"
    moved = orjson.loads(good)
    moved["late"] = 1  # the hash no longer last
    with pytest.raises(ChainFormatError, match="not the last member"):
        parse_line(orjson.dumps(moved) + b"\n")
    bad_seq = good.replace(b'"edr.chain.seq":1', b'"edr.chain.seq":"1"')
    with pytest.raises(ChainFormatError, match="not a positive integer"):
        parse_line(bad_seq)
    upper = good[:-SUFFIX_LEN] + b',"edr.chain.hash":"' + b"A" * 64 + b'"}\n'
    with pytest.raises(ChainFormatError, match="64 lowercase hex"):
        parse_line(upper)
    bad_alg = good.replace(b'"edr.chain.alg":"sha256"', b'"edr.chain.alg":"md5"')
    with pytest.raises(ChainFormatError, match=r"edr\.chain\.alg"):
        parse_line(bad_alg)


# --- the key file ------------------------------------------------------------------------------


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600, name: str = "chain.key") -> Path:
    d = tmp_path / "keys"
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / name
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_key_is_the_file_without_surrounding_whitespace(tmp_path: Path) -> None:
    path = key_file(tmp_path, b"  " + KEY + b"\n")
    assert load_chain_key(path) == KEY


@pytest.mark.parametrize(("data", "mode", "message"), [
    (KEY, 0o644, "accessible to group or others (mode 0644): chmod 600"),
    (KEY, 0o640, "accessible to group or others"),
    (b"short\n", 0o600, "holds 5 bytes; a key needs at least 16"),
    (b"x" * 5000, 0o600, "larger than 4096 bytes"),
])
def test_unusable_key_files_are_refused_naming_the_file(tmp_path: Path, data: bytes, mode: int,
                                                        message: str) -> None:
    path = key_file(tmp_path, data, mode)
    with pytest.raises(ChainKeyError) as info:
        load_chain_key(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_key_file_missing_or_a_link_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ChainKeyError, match="does not exist"):
        load_chain_key(tmp_path / "nope")
    real = key_file(tmp_path, KEY)
    link = real.parent / "link.key"
    link.symlink_to(real)
    with pytest.raises(ChainKeyError, match="symbolic link"):
        load_chain_key(link)
    assert load_chain_key(link, private=False) == KEY  # the verifier may be handed a link
    with pytest.raises(ChainKeyError, match="not a regular file"):
        load_chain_key(real.parent)


def test_key_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    path = shared / "chain.key"
    path.write_bytes(KEY)
    os.chmod(path, 0o600)
    with pytest.raises(ChainKeyError, match="writable by"):
        load_chain_key(path)


def test_verifier_accepts_a_readable_copy_of_the_key(tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY, 0o644)
    assert load_chain_key(path, private=False) == KEY
