"""Parse and compile many rule files in a pool of processes; the results in file order.

Parsing with pySigma is nearly all the time of a cold start (the full
SigmaHQ set: 3,754 files), and each file compiles on its own
(:class:`~edr.detect.sigma.ruleset.RuleFile`), so the files are shared out
among worker processes in contiguous runs. A worker reads each file once,
digests the very bytes it parses, compiles them as one process would
(:func:`~edr.detect.sigma.ruleset.compile_file`), and sends back the
file's cache entry (:func:`~edr.detect.sigma.codec.encode_file`): data
only, which this process decodes through the codec's checked wire forms
(as a start from the cache does) and which the rule cache stores as it is.

What a worker cannot settle alone comes back to this process: the text of a
file that holds correlations (they are compiled with the whole set, so this
process parses that text again for them), and the news that a file holds a
Sigma filter (a filter applies to the rules of every file: the caller then
compiles the whole set in one process).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import attrs
import msgspec

from edr.detect.sigma import codec
from edr.detect.sigma.loader import ParsedFiles, Rejection, parse_text, read_rule_text, sort_parsed
from edr.detect.sigma.ruleset import RuleFile, compile_file
from edr.runtime.process_pool import process_pool

log = logging.getLogger(__name__)

#: What a fork server imports once for all the workers it forks (when this process already runs
#: other threads, e.g. a replay's reader pool): this module and pySigma, which each worker
#: would otherwise import on its own.
PRELOAD = ("edr.detect.sigma.parallel", "edr.detect.sigma.compiler", "sigma.collection", "sigma.correlations",
           "sigma.filters", "sigma.rule", "yaml")

#: Runs of files per worker: small enough that a slow run (long files) does not keep one
#: worker busy while the others wait, large enough that each task is worth its round trip.
RUNS_PER_WORKER = 8


@attrs.define
class Compiled:
    """One rule file as a worker compiled it."""

    #: what it compiled to (condition trees deferred, as decoded from the cache)
    file: RuleFile
    #: SHA-256 (hex) of the bytes the worker read; "" when it could not read them
    digest: str
    #: ``file`` as the rule cache stores it
    encoded: msgspec.Raw
    #: pySigma's correlation rules of the file, parsed again here (in file order)
    correlations: list[Any] = attrs.field(factory=list)


#: What a worker sends per file: (path, digest, encoded entry, text if the file holds correlations, filters)
_Result = tuple[str, str, bytes, str | None, int]


def compile_in_pool(paths: Sequence[str], placeholders: dict[str, list[str]] | None, workers: int,
                    compiled: Callable[[int], None] | None = None) -> list[Compiled] | None:
    """Every file of ``paths`` parsed and compiled by ``workers`` processes, in the order of ``paths``.

    None when a file holds a Sigma filter (the files are then not
    independent), and when the pool fails (logged): the caller then
    compiles in one process. Never raises for a bad rule file: its problems are in its
    entry's rejections, as when one process compiles it. ``compiled(n)`` is
    called (in this thread) each time a worker has compiled ``n`` more files.
    """
    size = max(1, -(-len(paths) // (workers * RUNS_PER_WORKER)))
    runs = [list(paths[start:start + size]) for start in range(0, len(paths), size)]
    # pySigma is imported here once, before the workers start: forked, they inherit it
    from edr.detect.sigma.loader import pysigma

    pysigma()
    try:
        with process_pool(min(workers, len(runs)), preload=PRELOAD) as pool:
            futures = [pool.submit(compile_run, run, placeholders) for run in runs]
            if compiled is not None:
                for future in as_completed(futures):
                    compiled(len(future.result()))
            results = [result for future in futures for result in future.result()]
        if any(filters for *_rest, filters in results):
            return None
        return [_received(*result) for result in results]
    except (OSError, RuntimeError, BrokenProcessPool, codec.CodecError) as exc:
        # no processes here, a worker that died (a parser crash) or sent what the codec refuses:
        # the caller compiles the set in this process, as without a pool
        log.warning("Sigma rules: the pool of %d compiling processes failed (%s: %s); compiling in this process",
                    workers, type(exc).__name__, exc)
        return None


def _received(path: str, digest: str, encoded: bytes, text: str | None, _filters: int) -> Compiled:
    """What a worker sent for one file, decoded (checked) by the codec; its correlations parsed here."""
    raw = msgspec.Raw(encoded)
    entry = Compiled(codec.decode_file(raw, f"rule file {path} from a worker"), digest, raw)
    if text is not None:
        parsed = ParsedFiles([], [], [], [], [])
        sort_parsed(parse_text(path, text), parsed)
        entry.correlations = parsed.correlations
    return entry


def compile_run(paths: list[str], placeholders: dict[str, list[str]] | None) -> list[_Result]:
    """In a worker: each file of ``paths`` read, digested, parsed and compiled (see the module doc)."""
    return [_compile_one(path, placeholders) for path in paths]


def _compile_one(path: str, placeholders: dict[str, list[str]] | None) -> _Result:
    parsed = ParsedFiles([path], [], [], [], [])
    digest = ""
    text = None
    if not os.path.isfile(path):  # gone (or no longer a file) since it was listed
        parsed.rejections.append(Rejection(path, "path does not exist", "read"))
    else:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            digest = hashlib.sha256(data).hexdigest()
            text = read_rule_text(data)
        except (OSError, UnicodeDecodeError) as exc:
            parsed.rejections.append(Rejection(path, f"cannot read: {exc}", "read"))
        else:
            sort_parsed(parse_text(path, text), parsed)
    entry = compile_file(path, digest, parsed, placeholders)
    return (path, digest, codec.encode_file(entry), text if parsed.correlations else None, len(parsed.filters))
