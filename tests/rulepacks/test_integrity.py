"""edr.rulepacks.integrity: SHA256SUMS, minisign signatures (py-minisign, and the minisign tool when present)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import minisign
import pytest

from edr.rulepacks import PackError
from edr.rulepacks.integrity import (
    check_signature,
    check_sums,
    load_public_key,
    parse_sums,
    tree_digest,
)

H = hashlib.sha256(b"x").hexdigest()
G = hashlib.sha256(b"y").hexdigest()


def test_sums_in_sha256sum_format() -> None:
    listed = parse_sums(f"{H}  rules/a.yml\n{G.upper()} *./rules/b.yml\n\n".encode())
    assert listed == {"rules/a.yml": H, "rules/b.yml": G}


@pytest.mark.parametrize(("text", "line", "words"), [
    (f"{H}  rules/a.yml\nnot a line\n", 2, "sha256sum's format"),
    (f"{H[:-1]}  rules/a.yml\n", 1, "sha256sum's format"),
    (f"{H}  ../etc/passwd\n", 1, "'..'"),
    (f"{H}  /etc/passwd\n", 1, "absolute"),
    (f"{H}  rules/a.yml\n{G}  rules/a.yml\n", 2, "twice"),
])
def test_malformed_sums_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PackError) as info:
        parse_sums(text.encode())
    assert (info.value.kind, info.value.member, info.value.line) == ("integrity", "SHA256SUMS", line)
    assert words in info.value.reason


def test_empty_or_binary_sums_are_refused() -> None:
    with pytest.raises(PackError, match="lists no file"):
        parse_sums(b"\n")
    with pytest.raises(PackError, match="not UTF-8"):
        parse_sums(b"\xff\xfe")


def test_check_sums() -> None:
    check_sums({"a.yml": H, "tool.py": G}, {"a.yml": H, "tool.py": G, "other.txt": H}, frozenset({"a.yml"}))
    with pytest.raises(PackError, match="not listed") as info:
        check_sums({"a.yml": H}, {"a.yml": H, "b.yml": H}, frozenset({"a.yml", "b.yml"}))
    assert info.value.member == "b.yml"
    with pytest.raises(PackError, match="missing from the pack"):
        check_sums({"a.yml": H, "b.yml": H}, {"a.yml": H}, frozenset({"a.yml"}))
    with pytest.raises(PackError, match="SHA-256 mismatch") as info:
        check_sums({"a.yml": H}, {"a.yml": G}, frozenset({"a.yml"}))
    assert info.value.kind == "integrity"


def test_digest_depends_on_content_not_order() -> None:
    assert tree_digest({"a": H, "b": G}) == tree_digest({"b": G, "a": H})
    assert tree_digest({"a": H, "b": G}) != tree_digest({"a": G, "b": H})
    assert tree_digest({"a": H}).startswith("sha256:")


@pytest.fixture(scope="module")
def keys() -> tuple[minisign.KeyPair, minisign.KeyPair]:
    return minisign.KeyPair.generate(), minisign.KeyPair.generate()


def _sig(pair: minisign.KeyPair, data: bytes) -> bytes:
    return bytes(pair.secret_key.sign(data, trusted_comment="timestamp:1700000000\tfile:SHA256SUMS"))


def test_signatures(keys: tuple[minisign.KeyPair, minisign.KeyPair]) -> None:
    good, other = keys
    data = f"{H}  rules/a.yml\n".encode()
    info = check_signature(data, _sig(good, data), good.public_key, required=True)
    assert info.status == "verified" and info.signed
    assert info.trusted_comment == "timestamp:1700000000\tfile:SHA256SUMS"
    assert len(info.key_id) == 16
    # signed by another key
    with pytest.raises(PackError, match="does not verify") as err:
        check_signature(data, _sig(other, data), good.public_key, required=False)
    assert err.value.kind == "signature"
    # the list changed after signing
    with pytest.raises(PackError, match="does not verify"):
        check_signature(data + b"\n" + f"{G}  rules/b.yml\n".encode(), _sig(good, data), good.public_key,
                        required=True)
    with pytest.raises(PackError, match="not a minisign signature"):
        check_signature(data, b"untrusted comment: x\nnot base64\n", good.public_key, required=True)
    # present but nothing to check it with: recorded, not trusted
    assert check_signature(data, _sig(good, data), None, required=False).status == "unverified"
    assert check_signature(None, None, None, required=False).status == "none"


def test_required_signatures(keys: tuple[minisign.KeyPair, minisign.KeyPair]) -> None:
    good, _ = keys
    data = f"{H}  rules/a.yml\n".encode()
    with pytest.raises(PackError, match="not signed") as err:
        check_signature(data, None, good.public_key, required=True)
    assert err.value.kind == "signature"
    with pytest.raises(PackError, match="not signed"):
        check_signature(None, None, good.public_key, required=True)
    with pytest.raises(PackError, match="public_key is not set") as err:
        check_signature(data, _sig(good, data), None, required=True)
    assert err.value.kind == "config"
    with pytest.raises(PackError, match="no SHA256SUMS") as err:
        check_signature(None, _sig(good, data), good.public_key, required=False)


def test_public_key_setting(tmp_path: Path, keys: tuple[minisign.KeyPair, minisign.KeyPair]) -> None:
    good, _ = keys
    text = good.public_key.to_base64().decode()
    assert load_public_key(text) == good.public_key
    pub = tmp_path / "edr.pub"
    pub.write_bytes(bytes(good.public_key) + b"\n")
    assert load_public_key(str(pub)) == good.public_key
    assert load_public_key("") is None
    with pytest.raises(PackError, match="cannot read") as err:
        load_public_key(str(tmp_path / "missing.pub"))
    assert err.value.kind == "config"
    bad = tmp_path / "bad.pub"
    bad.write_text("untrusted comment: x\nRWQnotakey\n")
    with pytest.raises(PackError, match="not a minisign public key"):
        load_public_key(str(bad))


@pytest.mark.skipif(shutil.which("minisign") is None, reason="the minisign tool is not installed")
def test_signatures_made_by_the_minisign_tool_verify(tmp_path: Path) -> None:
    """Interoperability: a key and a signature made by minisign itself (prehashed, as it signs by default)."""
    sec, pub = tmp_path / "edr.key", tmp_path / "edr.pub"
    subprocess.run(["minisign", "-G", "-W", "-s", str(sec), "-p", str(pub)], check=True, capture_output=True)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{H}  rules/a.yml\n")
    subprocess.run(["minisign", "-S", "-s", str(sec), "-m", str(sums), "-t", "edr test pack"], check=True,
                   capture_output=True)
    signature = (tmp_path / "SHA256SUMS.minisig").read_bytes()
    key = load_public_key(str(pub))
    info = check_signature(sums.read_bytes(), signature, key, required=True)
    assert info.status == "verified"
    assert info.trusted_comment == "edr test pack"
    assert info.key_id in pub.read_text()  # the id minisign prints in the key's comment
    with pytest.raises(PackError, match="does not verify"):
        check_signature(sums.read_bytes() + b"\n", signature, key, required=True)
