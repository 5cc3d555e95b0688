"""Continuing the alert chain across restarts: the tail of the newest alert file, and an anchor file.

At start the writer must know the seq and hash of the last line written.
Two witnesses, read once:

- **the tail**: the last complete lines of the newest alert file (its last
  64 KiB, and at least two lines; a partial line after them is ignored:
  :class:`~edr.alerts.daily_file.DailyFile` cuts it off before it appends),
  with the previous day's last line when the newest file holds only one.
  The last *chained* line among them is what the chain must continue from
  for the files to verify (lines after it that are not chained lines, such
  as a crash's half line ended by a newline in an append-only file, are
  reported by ``verify`` and skipped), and checking its link to the line
  before under the current key tells whether the key changed.
- **the anchor**: ``alert-chain.json`` in the agent's state directory,
  ``{"version": 1, "family": ..., "seq": ..., "hash": ..., "alg": ..., "key_id": ...}``,
  replaced atomically (:meth:`~edr.platform.private_files.PrivateDir.write_atomic`) after
  lines are written, at most once per :class:`AnchorSchedule` interval and at
  close. It is never ahead of the files unless lines were lost or removed:
  when the newest file was deleted, or its last lines cut, while the agent
  was stopped, the anchor says more was written than the files hold, and the
  chain continues from the anchor, so the next line links to lines that are
  not there and ``edr alerts verify`` reports them missing.

:func:`resume` decides from both (sans-IO); :func:`recover_chain` reads them.
When neither gives a usable last line (no files and no anchor, an unreadable
or unchained last line, a last line that does not verify under a changed
key), the next line starts a new segment whose ``edr.chain.start`` field says
why, and that is logged; nothing fails.

Limits: a chain cannot show lines removed from its end when nothing was
written after them and the anchor was removed too (or changed alongside):
ship alerts off the host for that. Lines written after the last anchor save
(at most one interval's worth) can be cut unnoticed by someone who can write
the alert directory while the agent is stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs
import orjson

from edr.alerts.chain import (
    ALGORITHMS,
    GENESIS,
    ChainedLine,
    ChainFormatError,
    ChainStart,
    ChainState,
    algorithm,
    key_id,
    parse_line,
)
from edr.alerts.family import family_members
from edr.platform.private_files import PrivateDir

ANCHOR_NAME: Final = "alert-chain.json"
_ANCHOR_VERSION: Final = 1
_READ_BACK: Final = 65_536
_MAX_ANCHOR: Final = 4096


@attrs.frozen
class Anchor:
    """The last line written, as the writer recorded it: for which alert files, with which key."""

    family: str  #: absolute ``<directory>/<filename>`` of the alert files
    seq: int
    hash: str
    alg: str
    key_id: str | None

    def to_bytes(self) -> bytes:
        """The anchor file's content."""
        return orjson.dumps({"version": _ANCHOR_VERSION, "family": self.family, "seq": self.seq,
                             "hash": self.hash, "alg": self.alg, "key_id": self.key_id})

    @classmethod
    def from_bytes(cls, data: bytes) -> Anchor:
        """Parse an anchor file; raises ValueError saying what is wrong."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != _ANCHOR_VERSION:
            raise ValueError(f"not a version {_ANCHOR_VERSION} chain anchor")
        seq, digest, alg = doc.get("seq"), doc.get("hash"), doc.get("alg")
        family, kid = doc.get("family"), doc.get("key_id")
        if type(seq) is not int or seq < 0:
            raise ValueError(f"seq is {seq!r}")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"hash is {digest!r}")
        if alg not in ALGORITHMS:
            raise ValueError(f"alg is {alg!r}")
        if not isinstance(family, str) or not (kid is None or isinstance(kid, str)):
            raise ValueError("family or key_id has the wrong type")
        return cls(family=family, seq=seq, hash=digest, alg=alg, key_id=kid)


@attrs.frozen
class Tail:
    """The end of the newest alert file: its last complete lines, oldest first (with ``error``, none)."""

    file: str
    lines: tuple[bytes, ...] = ()
    error: str | None = None  #: why the file could not be read


@attrs.frozen
class Resumption:
    """Where the chain continues from, and what the operator should be told about it (warnings)."""

    start: ChainStart
    notes: tuple[str, ...] = ()


def family_path(directory: str | os.PathLike[str], filename: str) -> str:
    """The absolute ``<directory>/<filename>`` an anchor is kept for."""
    return os.path.join(os.path.abspath(directory), filename)


def resume(tail: Tail | None, anchor: Anchor | None, *, key: bytes | None, family: str) -> Resumption:
    """Decide where the chain continues from the newest file's ``tail`` and the ``anchor`` (see the module)."""
    notes: list[str] = []
    if anchor is not None and anchor.family != family:
        notes.append(f"chain anchor is for {anchor.family}, not {family}: ignored")
        anchor = None
    elif anchor is not None and (anchor.alg != algorithm(key) or anchor.key_id != key_id(key)):
        notes.append(f"chain anchor was written with another key ({anchor.alg}): ignored")
        anchor = None

    last: ChainedLine | None = None
    before: ChainedLine | None = None
    problem: str | None = None
    where = tail.file if tail is not None else ""
    if tail is not None and tail.error is not None:
        problem = f"{where}: {tail.error}"
    elif tail is not None and tail.lines:
        last, before, problem = _last_chained(tail)
        if last is not None and problem is not None:
            notes.append(f"{problem}: continuing from seq {last.seq} before it; verify reports it")
            problem = None

    verified = _verifies(last, before, key)
    if last is not None and (verified is not False or anchor is not None):
        if anchor is not None and anchor.seq > last.seq:
            notes.append(f"{where} ends at seq {last.seq} but seq {anchor.seq} was written: alert lines were "
                         f"removed; continuing from seq {anchor.seq}, so that verify shows the gap")
            return Resumption(ChainStart(ChainState(anchor.seq, anchor.hash)), tuple(notes))
        if anchor is not None and anchor.seq == last.seq and anchor.hash != last.hash:
            notes.append(f"the last line of {where} (seq {last.seq}) is not the line that was written: "
                         f"continuing from the line written, so that verify shows the change")
            return Resumption(ChainStart(ChainState(anchor.seq, anchor.hash)), tuple(notes))
        if verified is False:
            notes.append(f"the last line of {where} (seq {last.seq}) does not verify with the current key: "
                         f"it was changed; continuing from it, verify shows where")
        return Resumption(ChainStart(ChainState(last.seq, last.hash)), tuple(notes))
    if anchor is not None:
        why = problem or ("no alert line in the alert files" if last is None else
                          f"the last line of {where} does not verify with the current key")
        notes.append(f"{why}; continuing from the chain anchor (seq {anchor.seq})")
        return Resumption(ChainStart(ChainState(anchor.seq, anchor.hash)), tuple(notes))
    if last is not None:  # verified is False and nothing else to go by: the key was changed (or set, or removed)
        reason = (f"the last line of {where} (seq {last.seq}) does not verify with the current key "
                  f"({algorithm(key)}): the key changed")
    else:
        reason = problem or "new chain"
    if problem is not None or last is not None:
        notes.append(f"starting a new chain segment: {reason}")
    return Resumption(ChainStart(ChainState(last.seq if last is not None else 0, GENESIS), reason), tuple(notes))


def _last_chained(tail: Tail) -> tuple[ChainedLine | None, ChainedLine | None, str | None]:
    """The last chained line of ``tail``, the chained line just before it, and why later lines were skipped."""
    problem: str | None = None
    lines = tail.lines
    for i in range(len(lines) - 1, -1, -1):
        try:
            last = parse_line(lines[i])
        except ChainFormatError as exc:
            if problem is None:
                problem = f"the last line of {tail.file}: {exc}"
            continue
        return last, _parsed(lines[i - 1]) if i > 0 else None, problem
    return None, None, problem


def _parsed(line: bytes) -> ChainedLine | None:
    try:
        return parse_line(line)
    except ChainFormatError:
        return None


def _verifies(last: ChainedLine | None, before: ChainedLine | None, key: bytes | None) -> bool | None:
    """Whether the last line links under ``key`` (None: nothing to check it against)."""
    if last is None:
        return None
    if last.start is not None:
        return last.alg == algorithm(key) and last.link_ok(GENESIS, key)
    if before is None:
        return None
    return last.link_ok(before.hash, key)


def tail_lines(fd: int, *, min_lines: int = 2, min_bytes: int = _READ_BACK) -> list[bytes]:
    """The complete lines (newline included) in the last ``min_bytes`` of the file open on ``fd``, in order.

    At least the last ``min_lines`` lines if the file has them, however long
    they are. Bytes after the last newline (a partial line) are not a line.
    Reads back from the end in steps, so only the end of a large file is read.
    """
    size = os.fstat(fd).st_size
    data = b""
    pos = size
    while pos > 0:
        start = max(0, pos - _READ_BACK)
        data = os.pread(fd, pos - start, start) + data
        pos = start
        end = data.rfind(b"\n") + 1
        # min_lines + 1 newlines: the one ending the line before the first line kept
        if len(data) >= min_bytes and data.count(b"\n", 0, end) > min_lines:
            break
    end = data.rfind(b"\n") + 1
    # split on newlines only: bytes.splitlines would also split on a bare \r inside a broken line
    lines = [part + b"\n" for part in data[:end].split(b"\n")[:-1]]
    if pos > 0 and lines:
        lines = lines[1:]  # its beginning may be before what was read
    return lines


def read_tail(directory: str | os.PathLike[str], filename: str) -> Tail | None:
    """The end of the newest member of the family that holds a complete line; None when there is none.

    When that file holds a single line, the last line of the member before
    it comes first in :attr:`Tail.lines`. Files are opened without following
    links (:meth:`PrivateDir.open_read`); one that cannot be read gives a
    :class:`Tail` with its ``error``.
    """
    pdir = PrivateDir(directory, create=False)
    try:
        try:
            names = os.listdir(pdir.fd())
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Tail(file=os.fspath(Path(directory)), error=str(exc))
        found: Tail | None = None
        for _day, name in reversed(family_members(names, filename)):
            path = os.fspath(Path(directory) / name)
            try:
                fd = pdir.open_read(name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                return found if found is not None else Tail(file=path, error=str(exc))
            try:
                lines = tail_lines(fd)
            except OSError as exc:
                return found if found is not None else Tail(file=path, error=str(exc))
            finally:
                os.close(fd)
            if not lines:
                continue
            if found is not None:  # the line before the newest file's only line
                return attrs.evolve(found, lines=(lines[-1], *found.lines))
            found = Tail(file=path, lines=tuple(lines))
            if len(lines) > 1:
                return found
        return found
    finally:
        pdir.close()


def load_anchor(state_directory: str | os.PathLike[str]) -> tuple[Anchor | None, str | None]:
    """The anchor in ``state_directory`` and a note if it exists but cannot be used (None, None: none yet)."""
    pdir = PrivateDir(state_directory, create=False)
    path = Path(state_directory) / ANCHOR_NAME
    try:
        fd = pdir.open_read(ANCHOR_NAME)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        pdir.close()
        return None, f"chain anchor {path}: {exc}: ignored"
    try:
        data = os.read(fd, _MAX_ANCHOR + 1)
        return Anchor.from_bytes(data), None
    except (OSError, ValueError) as exc:
        return None, f"chain anchor {path}: cannot be used ({exc}): ignored"
    finally:
        os.close(fd)
        pdir.close()


def save_anchor(state_dir: PrivateDir, anchor: Anchor) -> None:
    """Replace the anchor file in one step (raises OSError); blocking: call it from a worker thread."""
    state_dir.write_atomic(ANCHOR_NAME, anchor.to_bytes())


def recover_chain(directory: str | os.PathLike[str], filename: str, *,
                  state_directory: str | os.PathLike[str] | None, key: bytes | None) -> Resumption:
    """Read the tail of the alert files and the anchor, and :func:`resume`; blocking, once at start."""
    family = family_path(directory, filename)
    anchor: Anchor | None = None
    notes: list[str] = []
    if state_directory is not None:
        anchor, note = load_anchor(state_directory)
        if note:
            notes.append(note)
    result = resume(read_tail(directory, filename), anchor, key=key, family=family)
    return attrs.evolve(result, notes=(*notes, *result.notes))


class AnchorSchedule:
    """When to save the anchor: after lines are written, at most once per ``interval`` seconds (sans-IO).

    ``due`` is true when the chain moved since the last save and the
    interval has passed; the writer also saves at close, whatever the time.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._saved: ChainState | None = None
        self._at = float("-inf")

    def due(self, now: float, state: ChainState) -> bool:
        """True when ``state`` should be saved now."""
        return state != self._saved and now - self._at >= self.interval

    def due_in(self, now: float) -> float:
        """Seconds from ``now`` until the interval since the last save has passed (0 when it has)."""
        return max(0.0, self._at + self.interval - now)

    def pending(self, state: ChainState) -> bool:
        """True when ``state`` was not saved yet (a save at close is needed)."""
        return state != self._saved

    def saved(self, now: float, state: ChainState) -> None:
        """Record a successful save of ``state`` at ``now``."""
        self._saved, self._at = state, now


def anchor_for(state: ChainState, *, family: str, key: bytes | None) -> Anchor:
    """The anchor recording ``state`` of the chain of ``family`` under ``key``."""
    return Anchor(family=family, seq=state.seq, hash=state.hash, alg=algorithm(key), key_id=key_id(key))
