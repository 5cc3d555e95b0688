"""``edr alerts verify FILE...``: check the alert chain (:mod:`edr.alerts.chain`) and report what broke it.

:class:`ChainVerifier` is the sans-IO core: fed one line at a time, across
files in the order given (a shell glob of ``alerts.json.*`` gives day order),
it checks that every line is a chained alert line, that ``edr.chain.seq``
counts up by one and that each hash links to the line before. Problems,
first found first:

- ``altered``: the hash does not match, so this line or the one before it
  was changed (an edit that recomputed this line's hash shows on the next);
- ``missing``: seq jumps forward and the skipped lines never come: removed;
- ``reordered``: seq jumps and the skipped lines come later: lines moved
  (reported once, at the first line out of place); or a segment starts with
  a seq not above the last one (files given out of order);
- ``duplicate``: a seq seen before (the same line twice, or a forged line, or
  two writers sharing one file);
- ``malformed`` / ``unchained``: not a chained alert line (a partial line
  left by a crash on an append-only file, a line without chain fields);
- ``unkeyed``: with a key given, a segment that declares plain SHA-256, which
  anyone could have written.

The first line given, unless it starts a segment, continues lines that are
not given (older files removed by retention): it is the trusted starting
point, and only its successors are checked against it. Without a key, a
segment that declares HMAC cannot be checked: the report says so and the
exit code is 2 (give ``--key-file``).

Exit codes of :func:`run_verify`: 0 intact, 1 a problem was found, 2 usage
(a file or key that cannot be read, a keyed chain without the key).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Final, TextIO

import attrs
import orjson

from edr.alerts.chain import (
    GENESIS,
    HMAC_SHA256,
    SHA256,
    ChainedLine,
    ChainFormatError,
    ChainKeyError,
    link_hash,
    load_chain_key,
    parse_line,
)

EXIT_OK: Final = 0
EXIT_BROKEN: Final = 1
EXIT_USAGE: Final = 2
_KEY_HINT: Final = " (or the chain was written with a key: give the right --key-file)"


@attrs.define
class Problem:
    """One place where the chain is broken: where, what kind, expected vs found."""

    kind: str
    file: str
    line: int
    detail: str
    expected_seq: int | None = None
    found_seq: int | None = None
    expected_hash: str | None = None
    found_hash: str | None = None


@attrs.frozen
class Segment:
    """A line that starts a chain segment (``edr.chain.start``), and why the writer started one."""

    file: str
    line: int
    seq: int
    reason: str
    alg: str


@attrs.define
class VerifyReport:
    """What :func:`verify` found; ``problems`` holds the first ``max_problems`` of ``problem_count``."""

    files: list[str] = attrs.field(factory=list)
    lines: int = 0
    chained: int = 0
    problems: list[Problem] = attrs.field(factory=list)
    problem_count: int = 0
    segments: list[Segment] = attrs.field(factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    keyed: bool = False
    needs_key: bool = False
    unchecked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is wrong and every hash could be checked."""
        return self.problem_count == 0 and not self.needs_key

    @property
    def first(self) -> Problem | None:
        """The first problem in file order, if any."""
        return self.problems[0] if self.problems else None

    @property
    def exit_code(self) -> int:
        """0 intact, 1 broken, 2 a keyed chain verified without its key."""
        if self.problem_count:
            return EXIT_BROKEN
        return EXIT_USAGE if self.needs_key else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (the ``--json`` output)."""
        doc = attrs.asdict(self)
        doc["ok"] = self.ok
        doc["exit_code"] = self.exit_code
        return doc


@attrs.define
class _Gap:
    """Seqs ``lo..hi``, skipped where gap ``gap_id`` was found, that may yet come later."""

    lo: int
    hi: int
    gap_id: int


@attrs.define
class _GapStats:
    """A gap as found: how many seqs it skipped, how many came later, the problem it was reported as."""

    total: int
    problem: int  #: its index in the report's problems
    filled: int = 0
    first_fill: tuple[str, int] | None = None


class ChainVerifier:
    """Checks chained lines fed in file order (sans-IO); :meth:`report` says what it found.

    ``key``: the HMAC key the chain was written with, if any. ``memory``:
    how many recent (seq, hash) pairs are kept to check lines that come out
    of order; ``max_gaps``: how many gaps are tracked for lines that may yet
    come. Beyond either, a late line is still reported, less precisely.
    """

    def __init__(self, key: bytes | None = None, *, max_problems: int = 100, memory: int = 65_536,
                 max_gaps: int = 1024) -> None:
        self.key = key or None
        self.max_problems = max_problems
        self.memory = memory
        self.max_gaps = max_gaps
        self._report = VerifyReport(keyed=self.key is not None)
        self._seg_key = self.key  # the key of the current segment's links (None: plain SHA-256)
        self._checkable = True  # False in a keyed segment verified without the key
        self._max_seq: int | None = None
        self._prev = GENESIS
        self._recent: dict[int, str] = {}
        self._gaps: list[_Gap] = []
        self._gap_stats: dict[int, _GapStats] = {}
        self._links_checked = 0

    def start_file(self, file: str) -> None:
        """Note that the lines fed from now on come from ``file``."""
        self._report.files.append(file)

    def feed(self, file: str, lineno: int, line: bytes) -> None:
        """Check one line (bytes, with its newline if it has one) at ``file``:``lineno``."""
        report = self._report
        report.lines += 1
        try:
            c = parse_line(line)
        except ChainFormatError as exc:
            self._problem(exc.kind, file, lineno, str(exc))
            return
        report.chained += 1
        if report.first_seq is None:
            report.first_seq = c.seq
        if c.start is not None:
            self._segment(file, lineno, c)
        elif self._max_seq is None:
            report.unchecked += 1  # the trusted first line: what it continues is not given
        else:
            self._ordered(file, lineno, c)
        self._accept(c)

    def _ordered(self, file: str, lineno: int, c: ChainedLine) -> None:
        assert self._max_seq is not None
        expected = self._max_seq + 1
        if c.seq == expected:
            self._check_link(file, lineno, c, self._recent.get(c.seq - 1, self._prev))
        elif c.seq > expected:
            span = f"seq {expected}" if c.seq == expected + 1 else f"seq {expected}..{c.seq - 1}"
            index = self._problem("missing", file, lineno, f"{span} absent before this line (seq {c.seq})",
                                  expected_seq=expected, found_seq=c.seq)
            if index is not None:  # beyond max_problems a late line is simply reported out of order
                gap_id = len(self._gap_stats)
                self._gap_stats[gap_id] = _GapStats(total=c.seq - expected, problem=index)
                self._gaps.append(_Gap(expected, c.seq - 1, gap_id))
                if len(self._gaps) > self.max_gaps:
                    del self._gaps[0]
        elif self._fill_gap(c.seq, file, lineno):
            before = self._recent.get(c.seq - 1)
            if before is not None:
                self._check_link(file, lineno, c, before)
        elif c.seq in self._recent:
            same = self._recent[c.seq] == c.hash
            self._problem("duplicate", file, lineno,
                          f"seq {c.seq} appears again" + ("" if same else " with another hash (a forged line, "
                                                                       "or two writers sharing one file)"),
                          expected_seq=expected, found_seq=c.seq, found_hash=c.hash)
        else:
            self._problem("reordered", file, lineno, f"seq {c.seq} comes after seq {self._max_seq}",
                          expected_seq=expected, found_seq=c.seq)

    def _segment(self, file: str, lineno: int, c: ChainedLine) -> None:
        assert c.start is not None and c.alg is not None
        self._report.segments.append(Segment(file=file, line=lineno, seq=c.seq, reason=c.start, alg=c.alg))
        if self._max_seq is not None and c.seq <= self._max_seq:
            # the writer numbers a new segment on from the last seq it knew of
            self._problem("reordered", file, lineno, f"a chain segment starts at seq {c.seq} after seq "
                          f"{self._max_seq}: files given out of order, or lines moved",
                          expected_seq=self._max_seq + 1, found_seq=c.seq)
        self._seg_key = self.key if c.alg == HMAC_SHA256 else None
        self._checkable = not (c.alg == HMAC_SHA256 and self.key is None)
        if not self._checkable:
            self._report.needs_key = True
        if c.alg == SHA256 and self.key is not None:
            self._problem("unkeyed", file, lineno,
                          "this segment declares edr.chain.alg sha256 while a key was given: anyone could have "
                          "written it", found_seq=c.seq)
        # the seqs of the segment before are not expected any more
        self._recent.clear()
        self._gaps.clear()
        self._check_link(file, lineno, c, GENESIS)

    def _check_link(self, file: str, lineno: int, c: ChainedLine, prev: str) -> None:
        if not self._checkable:
            self._report.unchecked += 1
            return
        expected = link_hash(prev, c.canonical, self._seg_key)
        first = self._links_checked == 0
        self._links_checked += 1
        if expected != c.hash:
            detail = ("the hash does not match: this line was changed" if c.start is not None or prev == GENESIS
                      else f"the hash does not match: this line was changed, or the line before it "
                           f"(seq {c.seq - 1})")
            if first:
                detail += _KEY_HINT if self.key is None else " (or the key is not the one the chain was written with)"
            self._problem("altered", file, lineno, detail, expected_seq=c.seq, found_seq=c.seq,
                          expected_hash=expected, found_hash=c.hash)

    def _fill_gap(self, seq: int, file: str, lineno: int) -> bool:
        """If ``seq`` was skipped earlier, take it out of its gap and count it as reordered."""
        for i, gap in enumerate(self._gaps):
            if gap.lo <= seq <= gap.hi:
                stats = self._gap_stats[gap.gap_id]
                stats.filled += 1
                if stats.first_fill is None:
                    stats.first_fill = (file, lineno)
                pieces = [g for g in (_Gap(gap.lo, seq - 1, gap.gap_id), _Gap(seq + 1, gap.hi, gap.gap_id))
                          if g.lo <= g.hi]
                self._gaps[i:i + 1] = pieces
                return True
        return False

    def _accept(self, c: ChainedLine) -> None:
        recent = self._recent
        recent[c.seq] = c.hash
        if len(recent) > self.memory:
            del recent[next(iter(recent))]
        if c.start is not None or self._max_seq is None or c.seq > self._max_seq:
            self._max_seq = c.seq
        self._prev = c.hash
        self._report.last_seq = c.seq
        self._report.last_hash = c.hash

    def _problem(self, kind: str, file: str, lineno: int, detail: str, **where: Any) -> int | None:
        report = self._report
        report.problem_count += 1
        if len(report.problems) >= self.max_problems:
            return None
        report.problems.append(Problem(kind=kind, file=file, line=lineno, detail=detail, **where))
        return len(report.problems) - 1

    def report(self) -> VerifyReport:
        """What was found so far; gaps whose lines came later are reported as ``reordered``."""
        report = attrs.evolve(self._report, problems=[attrs.evolve(p) for p in self._report.problems],
                              files=list(self._report.files), segments=list(self._report.segments))
        for stats in self._gap_stats.values():
            if stats.filled == 0:
                continue
            p = report.problems[stats.problem]
            assert p.expected_seq is not None and p.found_seq is not None and stats.first_fill is not None
            file, line = stats.first_fill
            span = (f"seq {p.expected_seq}" if stats.total == 1 else f"seq {p.expected_seq}..{p.found_seq - 1}")
            if stats.filled == stats.total:
                p.kind = "reordered"
                p.detail = f"seq {p.found_seq} comes before {span}, which comes later ({file}:{line}): lines moved"
            else:
                p.detail = (f"{stats.total - stats.filled} of {span} absent before this line (seq {p.found_seq}); "
                            f"the others come later ({file}:{line})")
        return report


def verify(files: Iterable[str], key: bytes | None = None, *, max_problems: int = 100) -> VerifyReport:
    """Verify the chain across ``files`` in the order given; raises OSError if a file cannot be read."""
    verifier = ChainVerifier(key, max_problems=max_problems)
    for path in files:
        verifier.start_file(path)
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                verifier.feed(path, lineno, line)
    return verifier.report()


def render_text(report: VerifyReport) -> str:
    """A few lines for a person: the verdict, the first problem with expected vs found, the segments."""
    n_files = len(report.files)
    scope = f"{report.chained:,} chained line(s) of {report.lines:,} in {n_files} file(s)"
    if report.first_seq is not None:
        scope += f", seq {report.first_seq}..{report.last_seq}"
    scope += ", HMAC-SHA256" if report.keyed else ", SHA-256"
    out: list[str] = []
    if report.problem_count:
        out.append(f"BROKEN: {report.problem_count} problem(s); {scope}")
        first = report.problems[0]
        out.append(f"first: {first.file}:{first.line}: {first.kind}: {first.detail}")
        if first.expected_seq is not None or first.found_seq is not None:
            out.append(f"  seq:  expected {_or_dash(first.expected_seq)}, found {_or_dash(first.found_seq)}")
        if first.expected_hash is not None or first.found_hash is not None:
            out.append(f"  hash: expected {_or_dash(first.expected_hash)}")
            out.append(f"        found    {_or_dash(first.found_hash)}")
        for p in report.problems[1:]:
            out.append(f"then:  {p.file}:{p.line}: {p.kind}: {p.detail}")
        if report.problem_count > len(report.problems):
            out.append(f"... and {report.problem_count - len(report.problems)} more")
    elif report.needs_key:
        out.append(f"UNVERIFIED: a segment is keyed (HMAC-SHA256): give --key-file; {scope}")
    else:
        out.append(f"OK: {scope}")
    for s in report.segments:
        out.append(f"segment: {s.file}:{s.line}: seq {s.seq} starts a chain ({s.alg}): {s.reason}")
    if report.unchecked and report.first_seq is not None and not report.needs_key:
        out.append(f"note: the first line (seq {report.first_seq}) continues lines not given; it is trusted as "
                   f"the starting point")
    return "\n".join(out) + "\n"


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def render_json(report: VerifyReport) -> str:
    """The report as one JSON document."""
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"


def run_verify(files: list[str], *, key_file: str | None = None, as_json: bool = False,
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The whole ``edr alerts verify`` command after argument parsing; returns the exit code."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if not files:
        err.write("edr alerts verify: no FILE given\n")
        return EXIT_USAGE
    key = None
    if key_file is not None:
        try:
            key = load_chain_key(key_file, private=False)
        except ChainKeyError as exc:
            err.write(f"edr alerts verify: key file {exc}\n")
            return EXIT_USAGE
    try:
        report = verify(files, key)
    except OSError as exc:
        err.write(f"edr alerts verify: cannot read {exc.filename}: {exc.strerror}\n")
        return EXIT_USAGE
    out.write(render_json(report) if as_json else render_text(report))
    return report.exit_code
