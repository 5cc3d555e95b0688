"""Build a compiled rule set from rule files: parse, compile, route, report.

A set is built per rule file first (:class:`RuleFile`: what one file compiles
to on its own, whatever the other files and the fed routes), then assembled
(:func:`assemble`): rules numbered in file order, correlations compiled
across files, the load report counted for the fed routes (route indexes are
built per route, on its first event). The rule cache (:mod:`edr.detect.sigma.cache`) stores the per-file
parts and the correlations as data (:mod:`edr.detect.sigma.codec`) and hands
back the files whose content is unchanged (``reuse``), so that editing one
rule file recompiles that file only.

Many files are parsed and compiled in a pool of processes
(:mod:`edr.detect.sigma.parallel`), each file on its own as here, and the
results are taken in file order: the set is the one a single process builds.

A file's content is known by its SHA-256 (:class:`Sources`); a file whose
status (device, inode, size, modification and change times) is the one
recorded with its digest is not read again to be digested (see
:data:`SETTLED_NS` for why that is safe).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

import attrs

from edr.detect.sigma.correlation import CompiledCorrelation, RefKey
from edr.detect.sigma.index import RouteIndex, SharedAutomata
from edr.detect.sigma.loader import ParsedFiles, Rejection, find_rule_files, parse_files
from edr.detect.sigma.logsources import Route, applies, is_fed, route_label
from edr.detect.sigma.report import LoadReport
from edr.detect.sigma.rules import CompiledRule, compile_rule
from edr.runtime.process_pool import default_workers

log = logging.getLogger(__name__)

#: What tells a rule file's content without reading it: (device, inode, size, mtime ns, ctime ns).
FileStat = tuple[int, int, int, int, int]

#: A status is recorded with a digest only when the file had not changed for this long (ns)
#: before the digest was taken. A file written again later gets a later change time (which
#: no user can set back: only the clock can go back), so it differs from the recorded one
#: however coarse the file system's timestamps are (2 s on FAT, a clock tick on ext4);
#: without the margin, a write in the same tick as the digest would go unnoticed.
SETTLED_NS: Final = 2_000_000_000

#: Below this many files to compile, one process does it: starting a pool costs more.
PARALLEL_MIN_FILES: Final = 64

#: ``progress=ON_TERMINAL``: a progress bar on standard error while rule files are compiled,
#: if it is a terminal and not a service's (:func:`edr.progress.terminal_progress`).
ON_TERMINAL: Final = "terminal"


class CompileProgress(Protocol):
    """Hears how many rule files are compiled (:class:`edr.progress.Progress` is one)."""

    def begin(self, phase: str, total: int | None = None, unit: str = "") -> None:
        """Compiling starts: ``total`` files (phase "compile", unit "files")."""
        ...

    def advance(self, amount: int = 1) -> None:
        """``amount`` more files are compiled."""
        ...

    def end(self) -> None:
        """Compiling is over (also when it failed)."""
        ...


def _progress(progress: CompileProgress | str | None) -> CompileProgress | None:
    """The progress to report to (resolved only when there are files to compile: tqdm is imported then)."""
    if progress != ON_TERMINAL:
        return progress if not isinstance(progress, str) else None
    from edr.progress import NullProgress, terminal_progress

    shown = terminal_progress()
    return None if isinstance(shown, NullProgress) else shown


def file_digest(path: str) -> str:
    """SHA-256 (hex) of a file's content, or "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


@attrs.define(frozen=True)
class Sources:
    """The rule files under the configured paths, each with the digest of its content."""

    #: rule files, as :func:`~edr.detect.sigma.loader.find_rule_files` names them, sorted
    files: tuple[str, ...]
    #: SHA-256 (hex) of each file's content when found, "" when unreadable (or not digested)
    digests: tuple[str, ...]
    #: configured paths that do not exist
    missing: tuple[Rejection, ...]
    #: each file's status when it was digested, if the file had been left alone for
    #: :data:`SETTLED_NS` by then (else None): what a later load may trust the digest by
    stats: tuple[FileStat | None, ...] = attrs.field(default=(), eq=False)

    @classmethod
    def find(cls, paths: list[str], *, digests: bool = True,
             known: Mapping[str, tuple[FileStat, str]] | None = None) -> Sources:
        """Find every rule file under ``paths`` and digest it (not without ``digests``).

        ``known`` maps a file to the status and digest recorded for it (by
        the rule cache): a file with that very status is not read again.
        """
        found, missing = find_rule_files(paths)
        if not digests:
            return cls(tuple(found), ("",) * len(found), tuple(missing), (None,) * len(found))
        return cls.digested(found, missing, known or {})

    @classmethod
    def digested(cls, files: list[str], missing: list[Rejection],
                 known: Mapping[str, tuple[FileStat, str]]) -> Sources:
        """``files`` with their digests (see :meth:`find`)."""
        settled = time.time_ns() - SETTLED_NS
        digests: list[str] = []
        stats: list[FileStat | None] = []
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                digests.append("")
                stats.append(None)
                continue
            status = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            recorded = known.get(path)
            # the status is taken before the content: a write after it changes the status seen next time
            digest = recorded[1] if recorded is not None and recorded[0] == status else file_digest(path)
            digests.append(digest)
            stats.append(status if digest and max(st.st_mtime_ns, st.st_ctime_ns) < settled else None)
        return cls(tuple(files), tuple(digests), tuple(missing), tuple(stats))


@attrs.define
class RuleFile:
    """What one rule file compiles to on its own: the unit the rule cache reuses.

    Independent of the other files and of the fed routes, except that Sigma
    filters apply across files: when any file holds one, the whole set is
    compiled as one unit (``path`` "", ``filters`` > 0), never reused file by file.
    """

    path: str
    #: SHA-256 (hex) of the content compiled; "" when unknown (unreadable)
    digest: str
    #: in file order; numbered when the set is assembled
    rules: list[CompiledRule]
    #: read, parse and filter rejections, in the loader's order
    rejections: list[Rejection]
    #: rules pySigma parsed that this engine could not compile
    failures: list[Rejection]
    #: correlation rules in the file (compiled with the whole set: they refer to any file)
    correlations: int = 0
    #: Sigma filters in the file
    filters: int = 0


@attrs.define
class RuleSet:
    """Compiled detection rules and correlations, and the route indexes built so far."""

    rules: list[CompiledRule]
    correlations: list[CompiledCorrelation]
    report: LoadReport
    fed: frozenset[Route]
    routes: dict[Route, RouteIndex] = attrs.field(factory=dict)
    #: the per-file parts ``rules`` was assembled from (what the rule cache stores)
    files: list[RuleFile] = attrs.field(factory=list)
    #: rule numbers per distinct logsource, in load order (derived, for building route indexes)
    _by_logsource: dict[Route, list[int]] = attrs.field(factory=dict, init=False, eq=False, repr=False)
    #: per rule, the number of its first clause in the whole set (derived, for building route indexes)
    _first_clause: list[int] = attrs.field(factory=list, init=False, eq=False, repr=False)
    #: the route indexes' per-field automata, shared where routes read a field with the same rules
    _automata: SharedAutomata = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def route_index(self, route: Route) -> RouteIndex:
        """The literal index of the rules that apply to ``route`` (built on first use).

        It reads the rules' clauses only: the condition tree of a rule from
        the rule cache (:meth:`CompiledRule.deferred`) is built when the rule
        is first a candidate (:func:`built`), not for every rule of the route
        (with SigmaHQ's set, 430 of the 2,287 rules of the routes the attack
        samples use ever are).
        """
        index = self.routes.get(route)
        if index is None:
            if not self._by_logsource:
                first = 0
                for rule in self.rules:
                    self._by_logsource.setdefault(rule.meta.logsource, []).append(rule.number)
                    self._first_clause.append(first)
                    first += len(rule.clauses or ())
            # a few hundred distinct logsources, not thousands of rules, are tested against the route
            numbers = sorted(number for logsource, group in self._by_logsource.items()
                             if applies(logsource, route) for number in group)
            rules = self.rules
            index = RouteIndex(((number, rules[number].clauses) for number in numbers),
                               first_clause=self._first_clause, automata=self._automata)
            self.routes[route] = index
        return index


def built(rule: CompiledRule) -> bool:
    """Build ``rule``'s condition tree now if it is deferred; False (logged) when that fails.

    The caller never evaluates a rule that failed (its tree is still unset).
    """
    try:
        rule.build()
    except Exception as exc:  # whatever a constructor raises on a stored value it refuses
        log.error("Sigma rule %r (%s) from the rule cache cannot be built, so it never matches: %s: %s",
                  rule.meta.title, rule.meta.path, type(exc).__name__, exc)
        return False
    return True


def _label(route: Route) -> str:
    return route_label(route)


def build_ruleset(paths: list[str], *, placeholders: dict[str, list[str]] | None,
                  fed: Iterable[Route], workers: int | None = None,
                  progress: CompileProgress | str | None = None) -> RuleSet:
    """Parse and compile every rule under ``paths``; never raises for a bad rule.

    ``workers`` processes compile the files when there are many (default:
    :func:`default_workers`; 1 compiles in this process). ``progress`` hears
    each file compiled (:data:`ON_TERMINAL`: a bar on a terminal).
    """
    # without a cache to key, the files need not be digested
    ruleset, _stable = compile_sources(Sources.find(paths, digests=False), placeholders=placeholders, fed=fed,
                                       workers=workers, progress=progress)
    return ruleset


def compile_sources(sources: Sources, *, placeholders: dict[str, list[str]] | None, fed: Iterable[Route],
                    reuse: Mapping[tuple[str, str], RuleFile] | None = None,
                    known: dict[tuple[str, str], Any] | None = None,
                    workers: int | None = None,
                    progress: CompileProgress | str | None = None) -> tuple[RuleSet, bool]:
    """Compile the rule files of ``sources``, taking unchanged ones from ``reuse``; never raises for a bad rule.

    ``reuse`` maps (path, content digest) to a file compiled earlier with the
    same placeholders and engine. ``workers`` is as for :func:`build_ruleset`;
    what they compile arrives encoded for the rule cache
    (:func:`~edr.detect.sigma.codec.encode_file`), and is added to ``known``
    by (path, digest) so that the cache stores it without encoding it again.
    ``progress`` is as for :func:`build_ruleset` (told nothing when every
    file is reused). Returns the rule set and whether every file parsed
    still has the content it had when ``sources`` digested it (else the set
    may mix two versions of a file and must not be cached).
    """
    started = time.perf_counter()
    reuse = reuse or {}
    reused = [reuse.get((path, digest)) if digest else None
              for path, digest in zip(sources.files, sources.digests, strict=True)]
    # a reused file with correlations is parsed again for them: they are compiled with the whole set
    wanted = [path for path, entry in zip(sources.files, reused, strict=True)
              if entry is None or entry.correlations]
    digests = dict(zip(sources.files, sources.digests, strict=True))
    workers = default_workers() if workers is None else workers
    shown = _progress(progress) if wanted else None
    if shown is not None:
        shown.begin("compile", len(wanted), "files")
    try:
        files, correlations, stable = _compile_wanted(sources, wanted, reused, digests, placeholders, known,
                                                      workers, shown)
    finally:
        if shown is not None:
            shown.end()
    compiled, failures = _compile_correlations(correlations, _number(files))
    ruleset = assemble(sources, files, compiled, failures, fed)
    ruleset.report.files_parsed = len(wanted)
    ruleset.report.seconds = time.perf_counter() - started
    return ruleset, stable


def _compile_wanted(sources: Sources, wanted: list[str], reused: list[RuleFile | None], digests: dict[str, str],
                    placeholders: dict[str, list[str]] | None, known: dict[tuple[str, str], Any] | None,
                    workers: int, progress: CompileProgress | None) -> tuple[list[RuleFile], list[Any], bool]:
    """The files of ``sources`` (``wanted`` compiled, the rest ``reused``), the correlations, and stability."""
    files: list[RuleFile] | None = None
    correlations: list[Any] = []  # pySigma's correlation rules, in file order
    stable = True
    advance = progress.advance if progress is not None else None
    if workers > 1 and len(wanted) >= PARALLEL_MIN_FILES:
        from edr.detect.sigma.parallel import compile_in_pool

        pooled = compile_in_pool(wanted, placeholders, workers, advance)
        if pooled is not None:  # None: a Sigma filter makes every file one unit, or the pool failed
            done = dict(zip(wanted, pooled, strict=True))
            files = [entry if entry is not None else done[path].file
                     for path, entry in zip(sources.files, reused, strict=True)]
            if known is not None:
                known.update(((c.file.path, c.file.digest), c.encoded) for c in pooled if c.file.digest)
            correlations = [corr for path in wanted for corr in done[path].correlations]
            # each worker digests the very bytes it compiled
            stable = all(done[path].digest == digests[path] for path in wanted if digests[path])
    if files is None:
        parsed_one = (lambda: advance(1)) if advance is not None else None
        if progress is not None and workers > 1 and len(wanted) >= PARALLEL_MIN_FILES:
            progress.begin("compile", len(wanted), "files")  # again: the pool handed the set back
        parsed = _parse(wanted, parsed_one)
        per_file = _per_file(parsed, wanted)
        if per_file is None:
            # A Sigma filter applies to rules of every file: compile everything together, as one unit
            if len(wanted) < len(sources.files):
                wanted = list(sources.files)
                if progress is not None:
                    progress.begin("compile", len(wanted), "files")
                parsed = _parse(wanted, parsed_one)
            files = [compile_file("", "", parsed, placeholders)]
        else:
            files = [entry if entry is not None else compile_file(path, digest, per_file[path], placeholders)
                     for path, digest, entry in zip(sources.files, sources.digests, reused, strict=True)]
        correlations = parsed.correlations
        stable = all(file_digest(path) == digests[path] for path in wanted if digests[path])
    return files, correlations, stable


def _parse(paths: list[str], parsed_one: Callable[[], None] | None) -> ParsedFiles:
    """``parse_files(paths)``, telling ``parsed_one`` of each file when there is one to tell."""
    return parse_files(paths) if parsed_one is None else parse_files(paths, parsed_one)


def _compile_correlations(parsed: list[Any], rules: list[CompiledRule],
                          ) -> tuple[list[CompiledCorrelation], list[Rejection]]:
    if not parsed:
        return [], []
    from edr.detect.sigma.correlation_compiler import compile_correlations

    return compile_correlations(parsed, rules)


def _per_file(parsed: ParsedFiles, paths: list[str]) -> dict[str, ParsedFiles] | None:
    """What ``parse_files(paths)`` found, split by file; None when filters make the files depend on each other.

    Also None, to be safe, for anything that names no file of ``paths`` (the
    loader gives every item its file, so this does not happen).
    """
    if parsed.filters:
        return None
    out = {path: ParsedFiles([], [], [], [], []) for path in paths}
    items = [*((str(r.source.path) if r.source else "", "rules", r) for r in parsed.rules),
             *((str(c.source.path) if c.source else "", "correlations", c) for c in parsed.correlations),
             *((r.path, "rejections", r) for r in parsed.rejections)]
    for path, kind, item in items:
        part = out.get(path)
        if part is None:
            return None
        getattr(part, kind).append(item)
    return out


def compile_file(path: str, digest: str, parsed: ParsedFiles,
                 placeholders: dict[str, list[str]] | None) -> RuleFile:
    """What the parsed content of one rule file (``digest`` its SHA-256) compiles to."""
    from edr.detect.sigma.compiler import CompileError

    rules: list[CompiledRule] = []
    failures: list[Rejection] = []
    for sigma_rule in parsed.rules:
        source = str(sigma_rule.source.path) if sigma_rule.source and sigma_rule.source.path else ""
        logsource = sigma_rule.logsource
        route: Route = (logsource.product, logsource.category, logsource.service)
        try:
            rules.append(compile_rule(len(rules), sigma_rule, placeholders))
        except (CompileError, ValueError, TypeError) as exc:
            failures.append(Rejection(source, str(exc), "compile", sigma_rule.title or "",
                                      str(sigma_rule.id or ""), _label(route)))
    return RuleFile(path, digest, rules, list(parsed.rejections), failures, len(parsed.correlations),
                    len(parsed.filters))



def _number(files: list[RuleFile]) -> list[CompiledRule]:
    """Every file's rules in file order, numbered by their place in that order."""
    rules: list[CompiledRule] = []
    for entry in files:
        for rule in entry.rules:
            rule.number = len(rules)
            rules.append(rule)
    return rules


def assemble(sources: Sources, files: list[RuleFile], correlations: list[CompiledCorrelation],
             correlation_failures: list[Rejection], fed: Iterable[Route]) -> RuleSet:
    """The rule set of compiled ``files`` and ``correlations``: numbered, reported for ``fed``.

    The report lists rejections in the loader's order: missing paths, then
    read, parse and filter failures, compile failures (each in file order),
    and correlation failures.
    """
    fed_set = frozenset(fed)
    rules = _number(files)
    report = LoadReport(files=len(sources.files))
    for rejection in sources.missing:
        report.reject(rejection)
    for entry in files:
        for rejection in entry.rejections:
            report.reject(rejection)
    reached: dict[Route, bool] = {}
    for entry in files:
        for rule in entry.rules:
            route = rule.meta.logsource
            if route not in reached:
                reached[route] = is_fed(route, fed_set)
            report.count(_label(route), "loaded" if reached[route] else "inert")
            for warning in rule.warnings:
                report.warnings.append({"path": rule.meta.path, "title": rule.meta.title,
                                        "id": rule.meta.rule_id, "warning": warning})
        for rejection in entry.failures:
            report.reject(rejection)
    for rejection in correlation_failures:
        report.reject(rejection)
    for _correlation in correlations:
        report.count("correlation", "loaded")
    report.correlations = len(correlations)
    _apply_generate(rules, correlations)
    # Route indexes are built on each route's first event (RuleSet.route_index), not here:
    # all 88 fed routes of the full SigmaHQ set take 0.1-0.2 s, where a Linux host's
    # events reach 8 of them and a replay of Windows logs a dozen.
    return RuleSet(rules=rules, correlations=correlations, report=report, fed=fed_set, files=files)


def _apply_generate(rules: list[CompiledRule], correlations: list[CompiledCorrelation]) -> None:
    """A rule used by correlations alerts on its own only if one of them says ``generate``."""
    referenced: dict[RefKey, bool] = {}
    for corr in correlations:
        for ref in corr.refs:
            referenced[ref] = referenced.get(ref, False) or corr.generate
    for rule in rules:
        generate = referenced.get(("r", rule.number))
        rule.emits = True if generate is None else generate
    for corr in correlations:
        generate = referenced.get(("c", corr.number))
        corr.emits = True if generate is None else generate
