"""A hash chain over the alert lines, so that an edited, removed or reordered line shows, sans-IO.

Every alert line ends with two fields, the last two members of its JSON object:

- ``edr.chain.seq``: 1, 2, 3... one more than the line before, across daily
  files and restarts;
- ``edr.chain.hash``: 64 lowercase hex digits, always the very last member,
  so the line ends with exactly ``,"edr.chain.hash":"<64 hex>"}`` and a newline.

**Canonical bytes** of a line: the line as written, without its newline and
without that final ``,"edr.chain.hash":"<64 hex>"`` member, that is the line
minus its last 86 bytes, plus ``}``. They are the bytes the writer produced
(orjson, :func:`edr.alerts.ndjson.dumps_line`) with ``edr.chain.seq`` as the
last member; nothing is re-serialized, so no JSON library's spacing, key
order, escaping or float formatting is part of the definition, and a change
to any byte of a line, even one a JSON parser would not see, breaks the chain.

**Link**: ``hash = SHA-256(prev || canonical)`` in hex, where ``prev`` is the
previous line's ``edr.chain.hash`` as its 64 ASCII hex characters. With a key
(``[alerts] chain_key_file``) it is ``HMAC-SHA256(key, prev || canonical)``
instead: whoever rewrites the whole chain without the key is caught too. The
key is the file's bytes with surrounding whitespace removed (at least 16).

**Segments**: the first line of a chain has ``prev`` = 64 zeros (:data:`GENESIS`)
and two more fields, inside its canonical bytes: ``edr.chain.start`` (why a
chain starts here: ``"new chain"``, or why the agent could not continue the
previous one: an unreadable last line, a changed key) and ``edr.chain.alg``
(``"sha256"`` or ``"hmac-sha256"``). A chain is continued across restarts
(see :mod:`edr.alerts.chain_recovery`); a new segment starts only when it
cannot be, and the verifier lists every segment start.

A third party verifies a file with the standard library alone (this very
snippet is run by the tests)::

    import hashlib, hmac, json

    def verify_lines(lines, key=None, prev=None):
        for line in lines:                        # bytes, each ending in b"\\n"
            doc = json.loads(line)
            digest = doc["edr.chain.hash"]
            assert line[-86:] == b',"edr.chain.hash":"' + digest.encode() + b'"}\\n'
            canonical = line[:-86] + b"}"
            if "edr.chain.start" in doc:
                prev = "0" * 64
            if prev is not None:                  # None: the first line given continues an older file
                data = prev.encode() + canonical
                mac = hmac.new(key, data, "sha256") if key else hashlib.sha256(data)
                assert mac.hexdigest() == digest, doc["edr.chain.seq"]
            prev = digest

(:mod:`edr.alerts.verify` does the same and also checks that ``seq`` counts
up by one, reporting the first broken, missing or reordered line.)

Cost, on top of the serialization the writer does anyway: about 3.5 µs per
1.5 KB alert with SHA-256 and 5 to 9 µs with HMAC on the project's shared
2-core VM, nearly all of it the hash itself (``scripts/bench_chain.py``).
"""

from __future__ import annotations

import errno
import hmac
import os
import stat
from pathlib import Path
from typing import Any, Final

import attrs
import orjson

from edr.alerts.digests import hmac_sha256_hex, sha256_hex
from edr.alerts.ndjson import dumps_line
from edr.platform.private_files import UnsafePath, check_trusted

SEQ_KEY: Final = "edr.chain.seq"
HASH_KEY: Final = "edr.chain.hash"
START_KEY: Final = "edr.chain.start"
ALG_KEY: Final = "edr.chain.alg"
#: Keys the chain owns; a document that already has one keeps its value under ``edr.displaced.chain.*``.
RESERVED_KEYS: Final = (SEQ_KEY, HASH_KEY, START_KEY, ALG_KEY)
DISPLACED_PREFIX: Final = "edr.displaced."

SHA256: Final = "sha256"
HMAC_SHA256: Final = "hmac-sha256"
ALGORITHMS: Final = (SHA256, HMAC_SHA256)
#: ``prev`` of the first line of a segment.
GENESIS: Final = "0" * 64
#: What precedes the hash at the end of every chained line.
HASH_MEMBER: Final = b',"edr.chain.hash":"'
#: Bytes after the canonical part: the hash member, ``"}`` and the newline.
SUFFIX_LEN: Final = len(HASH_MEMBER) + 64 + 3
#: A key shorter than this (after stripping whitespace) is refused.
MIN_KEY_BYTES: Final = 16
_MAX_KEY_FILE: Final = 4096
_HEX: Final = frozenset(b"0123456789abcdef")
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class ChainKeyError(ValueError):
    """A key file that cannot be used; the message names the file and says how to fix it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def load_chain_key(path: str | os.PathLike[str], *, private: bool = True) -> bytes:
    """The HMAC key in ``path``: its bytes with surrounding whitespace removed (at least 16).

    ``private`` (the agent): the file must be a regular file reached without a
    symbolic link, readable and writable by its owner only (mode 0600 or
    0400), owned by root or the agent's user, in directories only they can
    change (:func:`~edr.platform.private_files.check_trusted`); whoever could read it could
    forge a chain, whoever could replace it could choose the key. Without
    ``private`` (``edr alerts verify``, run by anyone holding a copy of the
    key) any readable file will do. Raises :class:`ChainKeyError`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | (_NOFOLLOW if private else getattr(os, "O_CLOEXEC", 0)))
    except FileNotFoundError:
        raise ChainKeyError(path, "does not exist") from None
    except OSError as exc:
        if private and exc.errno == errno.ELOOP:
            raise ChainKeyError(path, "is a symbolic link: name the key file itself") from None
        raise ChainKeyError(path, f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChainKeyError(path, "is not a regular file")
        if private:
            if st.st_mode & 0o077:
                raise ChainKeyError(path, f"is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                                          f"chmod 600 {os.fspath(path)}")
            try:
                check_trusted(path)
            except UnsafePath as exc:
                raise ChainKeyError(path, exc.reason) from None
        data = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ChainKeyError(path, f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise ChainKeyError(path, f"is larger than {_MAX_KEY_FILE} bytes: not a key file")
    key = data.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ChainKeyError(path, f"holds {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} "
                                  f"(make one with: openssl rand -hex 32 > {Path(path).name})")
    return key


def algorithm(key: bytes | None) -> str:
    """The link algorithm a key implies: :data:`HMAC_SHA256` with one, :data:`SHA256` without."""
    return HMAC_SHA256 if key else SHA256


def key_id(key: bytes | None) -> str | None:
    """A short fingerprint of ``key`` (not the key, nor enough to find it), to notice a key change."""
    if not key:
        return None
    return hmac.new(key, b"edr alert chain key id", "sha256").hexdigest()[:16]


def link_hash(prev: str, canonical: bytes, key: bytes | None = None) -> str:
    """The hash of a line whose canonical bytes are ``canonical`` after a line whose hash is ``prev``."""
    data = prev.encode("ascii") + canonical
    # the GIL kept while hashing: see edr.alerts.digests
    if key:
        return hmac_sha256_hex(key, data)
    return sha256_hex(data)


class ChainFormatError(ValueError):
    """A line that is not a chained alert line; the message says what is wrong with it.

    ``kind`` is ``"unchained"`` for a well-formed JSON object without chain
    fields (written before the chain, or by something else), ``"malformed"``
    for anything else.
    """

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.kind = kind


@attrs.frozen
class ChainedLine:
    """What the chain needs of one line: its seq and hash, its canonical bytes, its segment fields."""

    seq: int
    hash: str
    canonical: bytes
    start: str | None = None  #: ``edr.chain.start``: this line starts a segment, for this reason
    alg: str | None = None  #: ``edr.chain.alg`` of a segment start

    def link_ok(self, prev: str, key: bytes | None) -> bool:
        """True when this line's hash is the link of ``prev`` and its canonical bytes under ``key``."""
        return hmac.compare_digest(link_hash(prev, self.canonical, key), self.hash)


def parse_line(line: bytes) -> ChainedLine:
    """Split one whole line (ending in a newline) into its chain parts; raises :class:`ChainFormatError`."""
    if not line.endswith(b"\n"):
        raise ChainFormatError("no newline at its end (a partial line left by a crash or a full disk?)")
    try:
        doc = orjson.loads(line)
    except ValueError as exc:
        raise ChainFormatError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ChainFormatError("not a JSON object")
    seq = doc.get(SEQ_KEY)
    digest = doc.get(HASH_KEY)
    if seq is None and digest is None:
        raise ChainFormatError("has no edr.chain fields (written before the chain, or not by edr)", "unchained")
    if type(seq) is not int or seq < 1:
        raise ChainFormatError(f"edr.chain.seq is {seq!r}, not a positive integer")
    if not isinstance(digest, str) or len(digest) != 64 or not _HEX.issuperset(digest.encode()):
        raise ChainFormatError(f"edr.chain.hash is {digest!r}, not 64 lowercase hex digits")
    if line[-SUFFIX_LEN:] != HASH_MEMBER + digest.encode() + b'"}\n':
        raise ChainFormatError("edr.chain.hash is not the last member of the line")
    start = doc.get(START_KEY)
    alg = doc.get(ALG_KEY)
    if start is not None:
        if not isinstance(start, str):
            raise ChainFormatError(f"edr.chain.start is {start!r}, not a string")
        if alg not in ALGORITHMS:
            raise ChainFormatError(f"edr.chain.alg is {alg!r}, not one of {', '.join(ALGORITHMS)}")
    return ChainedLine(seq=seq, hash=digest, canonical=line[:-SUFFIX_LEN] + b"}", start=start,
                       alg=alg if start is not None else None)


@attrs.frozen
class ChainState:
    """Where a chain stands: the seq and hash of its last line (0 and :data:`GENESIS` before any)."""

    seq: int = 0
    hash: str = GENESIS


@attrs.frozen
class ChainStart:
    """Where the next line continues from; with ``segment`` set, it starts a new segment for that reason.

    A new segment still numbers on from ``state.seq`` (1 when nothing is
    known), so ``seq`` stays unique across the files.
    """

    state: ChainState = ChainState()
    segment: str | None = None

    @classmethod
    def new_chain(cls) -> ChainStart:
        """A chain with nothing before it."""
        return cls(ChainState(), "new chain")


class AlertChain:
    """Seals alert documents into chained lines, one after another.

    Not thread-safe; the lines must be written in the order they were sealed
    (a :class:`~edr.alerts.daily_file.DailyFile` keeps that order through
    retries). Plain state, no I/O: the writer keeps :attr:`state` in an
    anchor file (:mod:`edr.alerts.chain_recovery`).
    """

    def __init__(self, start: ChainStart | None = None, *, key: bytes | None = None) -> None:
        start = start if start is not None else ChainStart.new_chain()
        self.key = key or None
        self.alg = algorithm(self.key)
        self._seq = start.state.seq
        self._hash = start.state.hash
        self._segment = start.segment
        self.sealed = 0
        self.segments = 0
        self.displaced = 0

    @property
    def last_hash(self) -> str:
        """The link of the last line sealed (or resumed from): what :meth:`seal` wrote as ``edr.chain.hash``."""
        return self._hash

    @property
    def state(self) -> ChainState:
        """The seq and hash of the last line sealed (or resumed from)."""
        return ChainState(self._seq, self._hash)

    def seal(self, doc: dict[str, Any]) -> bytes:
        """The NDJSON line of ``doc`` with its chain fields; ``doc`` is modified (the fields are added).

        Values already under a key the chain owns (:data:`RESERVED_KEYS`) are
        kept under ``edr.displaced.chain.*`` (counted in ``displaced``), so the
        line has one of each key and nothing is lost.
        """
        for key in RESERVED_KEYS:
            if key in doc:
                doc[DISPLACED_PREFIX + key[4:]] = doc.pop(key)
                self.displaced += 1
        seq = self._seq + 1
        if self._segment is not None:
            doc[START_KEY] = self._segment
            doc[ALG_KEY] = self.alg
            prev = GENESIS
            self.segments += 1
        else:
            prev = self._hash
        doc[SEQ_KEY] = seq
        body = dumps_line(doc)  # b'{...,"edr.chain.seq":N}\n'
        digest = link_hash(prev, body[:-1], self.key)
        self._seq, self._hash, self._segment = seq, digest, None
        self.sealed += 1
        return b'%b,"edr.chain.hash":"%b"}\n' % (body[:-2], digest.encode("ascii"))

    def statistics(self) -> dict[str, Any]:
        """Lines sealed, segments started, reserved keys displaced, the last seq."""
        return {"sealed": self.sealed, "segments": self.segments, "displaced": self.displaced, "seq": self._seq}
