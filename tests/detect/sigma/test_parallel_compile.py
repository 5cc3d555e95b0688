"""Rule files compiled by a pool of processes: the very set one process compiles, cached and reused the same."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edr.detect.sigma import codec, load_sigma
from edr.detect.sigma import parallel as parallel_module
from edr.detect.sigma import ruleset as ruleset_module
from edr.detect.sigma.logsources import ALL_FED
from edr.detect.sigma.ruleset import RuleSet, Sources, build_ruleset, compile_sources
from tests.detect.sigma.conftest import fired, make_event, rule, shared_path
from tests.detect.sigma.structure import differences
from tests.detect.sigma.test_rule_cache import EVERY_KIND, build_all_indexes, write_rules


@pytest.fixture
def pooled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Any number of files goes to the pool; the list records how many files each pool compiled."""
    runs: list[int] = []
    real = parallel_module.compile_in_pool

    def counting(paths: list[str], placeholders: dict[str, list[str]] | None, workers: int,
                 compiled: object = None) -> object:
        runs.append(len(paths))
        return real(paths, placeholders, workers, compiled)  # type: ignore[arg-type]

    monkeypatch.setattr(ruleset_module, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(parallel_module, "compile_in_pool", counting)
    return runs


def assert_same(a: RuleSet, b: RuleSet) -> None:
    build_all_indexes(a, b)
    assert differences(a, b) == []


def test_a_pool_compiles_the_set_one_process_compiles(tmp_path: Path, pooled: list[int]) -> None:
    # every kind of test and node, rejections of each stage, warnings and correlations across files
    paths = [write_rules(tmp_path / "rules", EVERY_KIND)]
    serial = build_ruleset(paths, placeholders={"other": ["x"]}, fed=ALL_FED, workers=1)
    assert pooled == []
    parallel = build_ruleset(paths, placeholders={"other": ["x"]}, fed=ALL_FED, workers=3)
    assert pooled == [len(EVERY_KIND)]
    assert len(parallel.correlations) == 2 and parallel.report.rejected == serial.report.rejected >= 3
    assert [r.meta.title for r in parallel.rules] == [r.meta.title for r in serial.rules]
    assert_same(serial, parallel)


def test_a_pooled_set_is_cached_and_reused_like_any_other(tmp_path: Path, pooled: list[int]) -> None:
    rules = tmp_path / "rules"
    paths = [write_rules(rules, {**EVERY_KIND, **{f"n{i}.yml": rule(f"sel:\n  N: '{i}'\ncondition: sel",
                                                                      title=f"N{i}") for i in range(20)}})]
    cache = str(tmp_path / "cache")
    engine, report = load_sigma(paths, cache_dir=cache, workers=2)
    assert pooled == [len(EVERY_KIND) + 20] and not report.cached
    again, report = load_sigma(paths, cache_dir=cache, workers=2)
    assert report.cached and pooled == [len(EVERY_KIND) + 20]
    assert_same(engine.ruleset, again.ruleset)
    assert_same(build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=1), again.ruleset)
    assert fired(again, {"N": "7"}) == ["N7"]

    (rules / "n3.yml").write_text(rule("sel:\n  N: 'three'\ncondition: sel", title="N3"))
    edited, report = load_sigma(paths, cache_dir=cache, workers=2)
    # the edited file, and the correlations' file for its correlations
    assert report.files_parsed == 2 and pooled == [len(EVERY_KIND) + 20, 2]
    assert fired(edited, {"N": "three"}) == ["N3"] and fired(edited, {"N": "3"}) == []
    assert_same(build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=1), edited.ruleset)


def test_a_worker_digests_what_it_compiled(tmp_path: Path, pooled: list[int]) -> None:
    # a file that differs from the digest taken before compiling makes the set uncacheable
    paths = [write_rules(tmp_path / "rules", {f"r{i}.yml": rule(f"sel:\n  A: '{i}'\ncondition: sel", title=f"R{i}")
                                              for i in range(3)})]
    sources = Sources.find(paths)
    ruleset, stable = compile_sources(sources, placeholders=None, fed=ALL_FED, workers=2)
    assert stable and pooled == [3]
    assert [f.digest for f in ruleset.files] == list(sources.digests)
    stale = Sources(sources.files, (sources.digests[0], "0" * 64, sources.digests[2]), sources.missing)
    _ruleset, stable = compile_sources(stale, placeholders=None, fed=ALL_FED, workers=2)
    assert not stable


def test_a_sigma_filter_makes_the_pool_hand_the_set_back_to_one_process(tmp_path: Path, pooled: list[int]) -> None:
    filt = textwrap.dedent("""\
        title: Not for B
        logsource:
            product: windows
            category: process_creation
        filter:
            rules:
                - 00000000-0000-4000-8000-000000000001
            selection:
                B: 'benign'
            condition: not selection
        """)
    docs = {f"r{i}.yml": rule(f"sel:\n  A: 'v{i}'\ncondition: sel", title=f"R{i}",
                              rule_id=f"00000000-0000-4000-8000-{i:012d}") for i in range(3)}
    paths = [write_rules(tmp_path / "rules", {**docs, "zz_filter.yml": filt})]
    ruleset = build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=2)
    assert pooled == [4]
    assert [f.path for f in ruleset.files] == [""] and ruleset.files[0].filters == 1  # one unit
    # (pySigma names a filter's selection at random: two loads are not structurally equal)
    serial = build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=1)
    from edr.detect.sigma import SigmaEngine

    for fields, titles in (({"A": "v1", "B": "benign"}, []), ({"A": "v1"}, ["R1"]), ({"A": "v2"}, ["R2"])):
        assert fired(SigmaEngine(ruleset), fields) == fired(SigmaEngine(serial), fields) == titles


def test_unreadable_and_vanished_files_are_rejected_by_the_worker_as_by_one_process(
        tmp_path: Path, pooled: list[int]) -> None:
    rules = tmp_path / "rules"
    paths = [write_rules(rules, {"good.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="Good"),
                                 "latin1.yml": "title: caf\xe9\n"})]
    (rules / "latin1.yml").write_bytes("title: caf\xe9\n".encode("latin-1"))
    serial = build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=1)
    parallel = build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=2)
    assert [(r.stage, Path(r.path).name) for r in parallel.report.rejections] == [("read", "latin1.yml")]
    assert_same(serial, parallel)

    sources = Sources.find(paths)
    (rules / "good.yml").unlink()
    ruleset, stable = compile_sources(sources, placeholders=None, fed=ALL_FED, workers=2)
    assert not stable and ruleset.rules == []
    assert ("read", "path does not exist") in [(r.stage, r.reason) for r in ruleset.report.rejections]


def test_pooled_entries_are_stored_as_the_workers_encoded_them(tmp_path: Path, pooled: list[int]) -> None:
    paths = [write_rules(tmp_path / "rules", EVERY_KIND)]
    known: dict[tuple[str, str], object] = {}
    ruleset, _stable = compile_sources(Sources.find(paths), placeholders=None, fed=ALL_FED, known=known, workers=2)
    assert len(known) == len(EVERY_KIND)
    for entry in ruleset.files:
        raw = known[(entry.path, entry.digest)]
        assert bytes(raw) == codec.encode_file(entry)  # what this process would have encoded


@pytest.mark.shared
@pytest.mark.slow
def test_sigmahq_compiled_by_a_pool_is_the_set_one_process_compiles() -> None:
    rules = str(shared_path("sigma"))
    serial = build_ruleset([rules], placeholders=None, fed=ALL_FED, workers=1)
    parallel = build_ruleset([rules], placeholders=None, fed=ALL_FED, workers=2)
    assert parallel.report.loaded > 2500
    assert_same(serial, parallel)
    event = make_event({"Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami /priv",
                        "OriginalFileName": "whoami.exe", "ParentImage": "C:\\Windows\\System32\\cmd.exe"})
    from edr.detect.sigma import SigmaEngine

    titles = [a.rule_name for a in SigmaEngine(parallel).match(event)]
    assert titles and titles == [a.rule_name for a in SigmaEngine(serial).match(event)]


def test_a_pool_that_fails_leaves_the_compile_to_this_process(
        tmp_path: Path, pooled: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import os

    from edr.runtime import process_pool

    docs = {f"r{i}.yml": rule(f"sel:\n  A: 'v{i}'\ncondition: sel", title=f"R{i}") for i in range(6)}
    paths = [write_rules(tmp_path / "rules", docs)]
    serial = build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=1)

    real = parallel_module._compile_one

    def crashing(path: str, placeholders: dict[str, list[str]] | None) -> object:
        if path.endswith("r3.yml"):
            os._exit(70)  # as a parser that crashes its process would
        return real(path, placeholders)

    # forked workers inherit the patch (a fork server, which idle threads of this process would
    # otherwise make the pool use, would import the real one)
    monkeypatch.setattr(process_pool, "start_method", lambda: "fork")
    monkeypatch.setattr(parallel_module, "_compile_one", crashing)
    crashed = build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=2)
    assert pooled == [6]
    assert_same(serial, crashed)
    assert "the pool of 2 compiling processes failed (BrokenProcessPool" in caplog.text

    def no_processes(*args: object, **kwargs: object) -> object:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(parallel_module, "process_pool", no_processes)
    caplog.clear()
    assert_same(serial, build_ruleset(paths, placeholders=None, fed=ALL_FED, workers=2))
    assert "failed (BlockingIOError: [Errno 11] Resource temporarily unavailable)" in caplog.text
