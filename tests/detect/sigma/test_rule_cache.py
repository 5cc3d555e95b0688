"""The compiled-rule cache: a data codec that round-trips every rule, a checked file, reuse per rule file."""

from __future__ import annotations

import ast
import logging
import os
import pickle
import struct
import textwrap
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from edr.detect.sigma import cache as rule_cache
from edr.detect.sigma import codec, load_sigma
from edr.detect.sigma import matchers as m
from edr.detect.sigma import nodes as n
from edr.detect.sigma.logsources import ALL_FED
from edr.detect.sigma.matchers import MatchContext
from edr.detect.sigma.rules import CompiledRule
from edr.detect.sigma.ruleset import RuleSet, Sources, assemble, build_ruleset, compile_sources
from tests.detect.sigma.conftest import fired, make_event, rule, shared_path
from tests.detect.sigma.structure import differences

REPO = Path(__file__).resolve().parents[3]


def write_rules(directory: Path, documents: dict[str, str]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in documents.items():
        (directory / name).write_text(textwrap.dedent(doc))
    return str(directory)


def round_trip(ruleset: RuleSet, paths: list[str]) -> RuleSet:
    """``ruleset`` encoded into cache file bytes and decoded again, as a cache hit does."""
    config = rule_cache.config_digest(paths, None)
    sources = Sources.find(paths)
    payload = codec.encode(codec.Payload.of(ruleset, config=config, key=rule_cache.set_key(config, sources)))
    data = rule_cache.pack(payload, rule_cache.engine_digest())
    files, correlations, failures = codec.decode(rule_cache.unpack(data, rule_cache.engine_digest())).build()
    return assemble(sources, files, correlations, failures, ruleset.fed)


def build_all_indexes(*rulesets: RuleSet) -> None:
    """Build every fed route's index, listed in one order (they are built in the order events come)."""
    for ruleset in rulesets:
        for route in ruleset.fed:
            ruleset.route_index(route)
        ruleset.routes = {route: ruleset.routes[route] for route in sorted(ruleset.routes, key=repr)}


# --- the codec ---------------------------------------------------------------------------------

#: One rule per kind of value test and condition node (each kind appears, see the test).
EVERY_KIND = {
    "strings.yml": rule("sel:\n  Image|endswith: '\\a.exe'\n  CommandLine|contains|cased: 'X'\n"
                        "  ParentImage|startswith: 'c:\\'\n  User: 'root'\n  Path: 'a*b*c'\n"
                        "condition: sel", title="strings"),
    "regex.yml": rule("sel:\n  CommandLine|re: 'foo[0-9]+bar'\nlong:\n  CommandLine|re: '.{1000,}'\n"
                      "condition: sel or long", title="regex"),
    "wild.yml": rule("sel:\n  CommandLine: 'ab?d'\n  Any: '*'\ncondition: sel", title="wild"),
    "values.yml": rule("sel:\n  EventID: 4624\n  Big: 18446744073709551616\n  Flag: true\n"
                       "  Empty: null\n  There|exists: true\n  DestinationIp|cidr: '10.0.0.0/8'\n"
                       "  Port|gt: 1024\n  Size|lte: 1.5\n  Image|fieldref|endswith: Parent\n  UtcTime|hour: 3\n"
                       "condition: sel", title="values"),
    "expand.yml": rule("sel:\n  CommandLine|windash|contains: ' -enc '\n  User|expand: '%missing%'\n"
                       "condition: sel", title="expand"),
    "logic.yml": rule("a:\n  A: '1'\nb:\n  B: '2'\nkw:\n  - 'evil'\ncondition: (a or kw) and not b", title="logic"),
    "base.yml": "title: Base\nname: base\nstatus: test\nlevel: low\nlogsource:\n  product: windows\n"
                "  category: process_creation\ndetection:\n  sel:\n    Kind: 'x'\n  condition: sel\n",
    "other.yml": "title: Other\nname: other\nstatus: test\nlevel: low\nlogsource:\n  product: windows\n"
                 "  category: process_creation\ndetection:\n  sel:\n    Kind: 'y'\n  condition: sel\n",
    "corr.yml": textwrap.dedent("""\
        title: Count
        status: test
        correlation:
            type: value_count
            rules: [base]
            group-by: [User]
            timespan: 5m
            condition:
                gte: 3
                field: Target
        ---
        title: Both
        status: test
        correlation:
            type: temporal
            rules: [base, other]
            group-by: [host]
            timespan: 1m
            aliases:
                host:
                    base: SourceHost
                    other: DestHost
            condition: base and not other
            generate: true
        ---
        title: Broken
        status: test
        correlation:
            type: event_count
            rules: [nowhere]
            timespan: 1m
            condition:
                gte: 2
        """),
    "bad.yml": "title: [unclosed\n",
    "uncompilable.yml": rule("sel:\n  A: 'x'\ncondition: sel and missing", title="uncompilable"),
}


def _kinds(node: n.Node, found: set[type]) -> None:
    found.add(type(node))
    for child in getattr(node, "children", ()):
        _kinds(child, found)
    if hasattr(node, "child"):
        _kinds(node.child, found)
    pending = list(getattr(node, "tests", ()))
    while pending:
        test = pending.pop()
        found.add(type(test))
        pending.extend(getattr(test, "tests", ()))


def test_every_kind_of_rule_round_trips_to_an_equal_set(tmp_path: Path) -> None:
    paths = [write_rules(tmp_path / "rules", EVERY_KIND)]
    source = build_ruleset(paths, placeholders=None, fed=ALL_FED)
    decoded = round_trip(source, paths)
    found: set[type] = set()
    for compiled in source.rules:
        _kinds(compiled.condition, found)
    assert set(codec.TESTS) | set(codec.NODES) <= found, "a kind of test or node is not exercised"
    assert len(source.correlations) == 2 and source.correlations[1].extended is not None
    assert {r.stage for r in source.report.rejections} == {"parse", "compile", "correlation"}
    assert source.report.warnings
    build_all_indexes(source, decoded)
    assert differences(source, decoded) == []


def test_integers_beyond_64_bits_travel_as_text_and_still_match(tmp_path: Path) -> None:
    # pySigma keeps 2**64 an int (msgpack holds at most 2**64 - 1)
    paths = [write_rules(tmp_path / "rules", {"big.yml": rule(
        "sel:\n  Big: 18446744073709551616\n  Size|lt: 18446744073709551616\ncondition: sel", title="big")})]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.cached
    numbers = [t.number for item in engine.rules[0].condition.child.children for t in item.tests]
    assert numbers == [2**64, 2**64] and all(type(x) is int for x in numbers)
    assert fired(engine, {"Big": "18446744073709551616", "Size": 5}) == ["big"]
    assert fired(engine, {"Big": "18446744073709551617", "Size": 5}) == []


def test_repository_rules_round_trip_through_the_cache(tmp_path: Path) -> None:
    paths = [str(REPO / "rules")]
    source = build_ruleset(paths, placeholders=None, fed=ALL_FED)
    assert source.report.loaded >= 3
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.cached
    build_all_indexes(source, engine.ruleset)
    assert differences(source, engine.ruleset) == []
    whoami = {"Image": "/usr/bin/whoami", "ParentImage": "/bin/bash", "CommandLine": "whoami"}
    shell = {"Image": "/tmp/x/sh", "CommandLine": "/tmp/x/sh -c id", "ParentImage": "/usr/bin/bash"}
    for fields in (whoami, shell):
        for ruleset in (source, engine.ruleset):
            ctx = MatchContext(fields)
            index = ruleset.route_index(("linux", "process_creation", None))
            results = [ruleset.rules[i].condition.ev(ctx) for i in index.rules]
            assert results == [source.rules[i].condition.ev(MatchContext(fields)) for i in index.rules]
    assert len(engine.match(make_event(whoami, product="linux", service=None))) == 1


def test_closed_tables_cover_every_test_and_node_class() -> None:
    def concrete(base: type) -> set[type]:
        out: set[type] = set()
        pending = list(base.__subclasses__())
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            if not cls.__name__.startswith("_"):
                out.add(cls)
        return out

    assert concrete(m.Test) == set(codec.TESTS)
    assert concrete(n.Node) == set(codec.NODES)


def test_a_class_without_wire_form_is_not_cached_but_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A|cidr: '10.0.0.0/8'\ncondition: sel",
                                                              title="net")})]
    monkeypatch.delitem(codec.TESTS, m.Cidr)
    cache = tmp_path / "cache"
    engine, _report = load_sigma(paths, cache_dir=str(cache))
    assert fired(engine, {"A": "10.1.2.3"}) == ["net"]
    assert "no wire form for value test Cidr" in caplog.text
    assert not list(cache.glob("*.rules"))


def test_decoding_checks_types_and_tags_and_names_the_place() -> None:
    good = codec.encode(codec.Payload("c", "k", (), (), ()))
    assert codec.decode(good).key == "k"
    with pytest.raises(codec.CodecError, match=r"\$\.files"):
        codec.decode(codec.encode({"config": "c", "key": "k", "files": "not a list", "correlations": [],
                                   "correlation_failures": []}))
    wire_rule = ["field", "A", [["os.system", "id"]], False]  # a tag no wire form has
    payload = codec.decode(codec.encode({
        "config": "c", "key": "k", "correlations": [], "correlation_failures": [],
        "files": [["p", "d", [[["i", "t", None, "low", [], "", "p", [None, None, None], [], ""],
                               wire_rule, None, [], False, []]], [], [], 0, 0]]}))
    with pytest.raises(codec.CodecError, match=r"rule file entry 0: Invalid value 'os\.system' - at `\$\[2\]"):
        payload.build()
    with pytest.raises(codec.CodecError):
        codec.decode(pickle.dumps(object()))


def test_no_module_of_the_package_imports_pickle() -> None:
    for source in (REPO / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[0] in ("pickle", "cPickle", "dill", "shelve", "marshal")
                           for name in names), source


def _titled(ruleset: RuleSet, title: str) -> CompiledRule:
    return next(r for r in ruleset.rules if r.meta.title == title)


def _str_group(ruleset: RuleSet) -> m.StrGroup:
    node = _titled(ruleset, "strings").condition
    while not isinstance(node, n.FieldItem):
        node = node.child if hasattr(node, "child") else node.children[0]  # type: ignore[attr-defined]
    test = node.tests[0]
    assert isinstance(test, m.StrGroup)
    return test


def test_structure_comparison_sees_a_change_anywhere(tmp_path: Path) -> None:
    # the equality the round-trip tests rely on must be able to fail
    paths = [write_rules(tmp_path / "rules", EVERY_KIND)]
    source = build_ruleset(paths, placeholders=None, fed=ALL_FED)
    mutations: list[Callable[[RuleSet], None]] = [
        lambda s: setattr(_str_group(s), "exact", _str_group(s).exact | {"other"}),
        lambda s: setattr(_titled(s, "strings").meta, "title", "other"),
        lambda s: _titled(s, "values").meta.ecs.update({"rule.author": "someone"}),
        lambda s: setattr(_titled(s, "strings"), "clauses", None),
        lambda s: setattr(_titled(s, "strings"), "emits", False),
        lambda s: setattr(s.correlations[1], "extended", ("ref", ("r", 0))),
        lambda s: setattr(s.correlations[1], "aliases", {}),
        lambda s: s.report.rejections.pop(),
        lambda s: setattr(s.route_index(("windows", "process_creation", "sysmon")), "always", (0,)),
    ]
    for mutate in mutations:
        changed = round_trip(source, paths)
        build_all_indexes(source, changed)
        assert differences(source, changed) == []
        mutate(changed)
        assert differences(source, changed) != []


# --- the file: checks, warnings, rebuilding ------------------------------------------------------

def _flip_payload_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _version(data: bytes) -> bytes:
    return data[:16] + struct.pack(">I", 1) + data[20:]


def _repacked(payload: bytes) -> Callable[[bytes], bytes]:
    """A sound header around ``payload``: only decoding can refuse it."""
    return lambda data: rule_cache.pack(payload, data[20:52])


def _bad_file_entry(data: bytes) -> bytes:
    """The same payload with a malformed first file entry, behind a sound header."""
    stored = codec.decode(data[rule_cache.HEADER.size:])
    payload = codec.encode({"config": stored.config, "key": stored.key, "files": [[1, 2]], "correlations": [],
                            "correlation_failures": []})
    return rule_cache.pack(payload, data[20:52])


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "payload byte flipped": (_flip_payload_byte, "SHA-256 does not match"),
    "format version 1": (_version, "format version 1, this agent reads version 2"),
    "truncated payload": (lambda d: d[:-100], "truncated"),
    "truncated header": (lambda d: d[:40], "truncated: 40 bytes"),
    "empty": (lambda d: b"", "truncated: 0 bytes"),
    "not a cache": (lambda d: b"\x80\x04" + d[2:], "not a Sigma rule cache"),
    "a pickle": (lambda d: pickle.dumps({"x": 1}), "truncated"),
    "not msgpack": (_repacked(b"\xc1\xc1\xc1"), "undecodable payload"),
    "wrong shape": (_repacked(codec.encode({"files": 3})), "undecodable payload"),
    "wrong shape in a file entry": (_bad_file_entry, "rule file entry 0: Expected `array` of at least length 7"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_is_ignored_with_a_warning_and_rebuilt(tmp_path: Path, damage: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="One")})]
    cache = tmp_path / "cache"
    load_sigma(paths, cache_dir=str(cache))
    (cache_file,) = cache.glob("*.rules")
    alter, reason = DAMAGE[damage]
    cache_file.write_bytes(alter(cache_file.read_bytes()))

    with caplog.at_level(logging.WARNING):
        engine, report = load_sigma(paths, cache_dir=str(cache))
    assert not report.cached and report.files_parsed == 1
    assert fired(engine, {"A": "x"}) == ["One"]
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"ignoring Sigma rule cache {cache_file}" in warning and reason in warning, warning
    _engine, report = load_sigma(paths, cache_dir=str(cache))  # rebuilt: the next start is a hit
    assert report.cached


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_cache_file_not_owned_by_root_is_ignored_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="One")})]
    cache = tmp_path / "cache"
    load_sigma(paths, cache_dir=str(cache))
    (cache_file,) = cache.glob("*.rules")
    os.chown(cache_file, 65534, 65534)
    with caplog.at_level(logging.WARNING):
        engine, report = load_sigma(paths, cache_dir=str(cache))
    assert not report.cached and fired(engine, {"A": "x"}) == ["One"]
    assert f"ignoring Sigma rule cache {cache_file}" in caplog.text and "owned by nobody" in caplog.text
    assert cache_file.stat().st_uid == 0
    assert load_sigma(paths, cache_dir=str(cache))[1].cached


def test_cache_of_another_engine_build_is_recompiled_without_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="One")})]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    monkeypatch.setattr(rule_cache, "engine_digest", lambda: b"\x01" * 32)
    with caplog.at_level(logging.INFO):
        _engine, report = load_sigma(paths, cache_dir=cache)
    assert not report.cached and report.files_parsed == 1
    assert "written by another build" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert load_sigma(paths, cache_dir=cache)[1].cached


def test_cache_directory_that_cannot_be_created_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="One")})]
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.WARNING):
        engine, _report = load_sigma(paths, cache_dir=str(tmp_path / "file" / "cache"))
    assert fired(engine, {"A": "x"}) == ["One"]
    assert "not writing Sigma rule cache" in caplog.text


def test_pickled_caches_of_earlier_versions_are_deleted_unread(tmp_path: Path) -> None:
    paths = [write_rules(tmp_path / "rules", {"r.yml": rule("sel:\n  A: 'x'\ncondition: sel", title="One")})]
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    (cache / "sigma-0123456789abcdef0123456789abcdef.pickle").write_bytes(pickle.dumps(_Opens(marker)))
    load_sigma(paths, cache_dir=str(cache))
    assert not marker.exists()
    assert [p.suffix for p in cache.iterdir()] == [".rules"]
    assert (cache / next(cache.iterdir()).name).stat().st_mode & 0o777 == 0o600


class _Opens:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


# --- reuse per rule file -----------------------------------------------------------------------

def _numbered(count: int) -> dict[str, str]:
    return {f"r{i}.yml": rule(f"sel:\n  A: 'v{i}'\ncondition: sel", title=f"R{i}",
                              rule_id=f"00000000-0000-4000-8000-{i:012d}")
            for i in range(count)}


def _assert_same_as_source(engine_ruleset: RuleSet, paths: list[str]) -> None:
    source = build_ruleset(paths, placeholders=None, fed=ALL_FED)
    build_all_indexes(source, engine_ruleset)
    assert differences(source, engine_ruleset) == []


def test_editing_one_rule_file_recompiles_that_file_only(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    paths = [write_rules(rules, _numbered(6))]
    cache = str(tmp_path / "cache")
    assert load_sigma(paths, cache_dir=cache)[1].files_parsed == 6

    (rules / "r3.yml").write_text(rule("sel:\n  A: 'changed'\ncondition: sel", title="R3 edited"))
    engine, report = load_sigma(paths, cache_dir=cache)
    assert (report.cached, report.files_parsed, report.loaded) == (False, 1, 6)
    assert fired(engine, {"A": "changed"}) == ["R3 edited"] and fired(engine, {"A": "v3"}) == []
    assert fired(engine, {"A": "v5"}) == ["R5"]
    _assert_same_as_source(engine.ruleset, paths)

    (rules / "r9.yml").write_text(rule("sel:\n  A: 'new'\ncondition: sel", title="R9"))
    engine, report = load_sigma(paths, cache_dir=cache)
    assert (report.files_parsed, report.loaded) == (1, 7)
    _assert_same_as_source(engine.ruleset, paths)

    (rules / "r0.yml").unlink()
    engine, report = load_sigma(paths, cache_dir=cache)
    assert (report.cached, report.files_parsed, report.loaded) == (False, 0, 6)
    assert fired(engine, {"A": "v0"}) == []
    _assert_same_as_source(engine.ruleset, paths)
    assert load_sigma(paths, cache_dir=cache)[1].cached


def test_reused_files_keep_their_rejections_and_warnings(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    docs = {**_numbered(2), "bad.yml": "title: [unclosed\n",
            "warn.yml": rule("sel:\n  User|expand: '%nobody_set_this%'\ncondition: sel", title="W")}
    paths = [write_rules(rules, docs)]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    (rules / "r1.yml").write_text(rule("sel:\n  A: 'other'\ncondition: sel", title="R1"))
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.files_parsed == 1 and report.rejected == 1 and len(report.warnings) == 1
    _assert_same_as_source(engine.ruleset, paths)


def test_correlations_are_compiled_again_when_a_rule_they_use_changes(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    corr = textwrap.dedent("""\
        title: Three Logins
        status: test
        correlation:
            type: event_count
            rules: [login]
            group-by: [User]
            timespan: 1m
            condition:
                gte: 3
        """)
    login = "title: Login\nname: login\nstatus: test\nlevel: low\nlogsource:\n  product: windows\n" \
            "  category: process_creation\ndetection:\n  sel:\n    Kind: '{kind}'\n  condition: sel\n"
    paths = [write_rules(rules, {"a_corr.yml": corr, "b_login.yml": login.format(kind="login"), **_numbered(3)})]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    (rules / "b_login.yml").write_text(login.format(kind="logon"))
    engine, report = load_sigma(paths, cache_dir=cache)
    # the edited file, and the correlation's file for its correlation (its rules are reused)
    assert report.files_parsed == 2 and report.correlations == 1
    _assert_same_as_source(engine.ruleset, paths)
    titles = [a.rule_name for t in range(3)
              for a in engine.match(make_event({"Kind": "logon", "User": "u"}, timestamp=t))]
    assert titles == ["Three Logins"]


def test_sigma_filters_make_the_set_one_unit(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
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
    paths = [write_rules(rules, {**_numbered(3), "zz_filter.yml": filt})]
    cache = str(tmp_path / "cache")
    load_sigma(paths, cache_dir=cache)
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.cached and fired(engine, {"A": "v1", "B": "benign"}) == []
    (rules / "r2.yml").write_text(rule("sel:\n  A: 'w2'\ncondition: sel", title="R2"))
    engine, report = load_sigma(paths, cache_dir=cache)
    assert report.files_parsed == 4  # a filter may apply to any file: all are parsed again
    assert fired(engine, {"A": "v1", "B": "benign"}) == [] and fired(engine, {"A": "v1"}) == ["R1"]
    assert fired(engine, {"A": "w2"}) == ["R2"]


def test_a_file_edited_while_it_is_compiled_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules"
    paths = [write_rules(rules, _numbered(2))]
    cache = tmp_path / "cache"
    import edr.detect.sigma.ruleset as ruleset_module

    parse = ruleset_module.parse_files

    def parse_then_edit(wanted: list[str]) -> object:
        parsed = parse(wanted)
        (rules / "r1.yml").write_text(rule("sel:\n  A: 'later'\ncondition: sel", title="R1"))
        return parsed

    monkeypatch.setattr(ruleset_module, "parse_files", parse_then_edit)
    engine, _report = load_sigma(paths, cache_dir=str(cache))
    assert fired(engine, {"A": "v1"}) == ["R1"]  # what was read
    assert not list(cache.glob("*.rules"))  # but not kept under a digest of other content
    monkeypatch.undo()
    engine, report = load_sigma(paths, cache_dir=str(cache))
    assert not report.cached and fired(engine, {"A": "later"}) == ["R1"]


def test_a_reused_file_is_stored_as_it_was_read_not_encoded_again(tmp_path: Path) -> None:
    paths = [write_rules(tmp_path / "rules", _numbered(2))]
    source, _stable = compile_sources(Sources.find(paths), placeholders=None, fed=ALL_FED)
    first = source.files[0]
    assert first.digest
    marker = msgspec.Raw(codec.encode(codec.Payload("x", "y", (), (), ())))  # any bytes: copied, not read
    payload = codec.Payload.of(source, config="c", key="k", known={(first.path, first.digest): marker})
    assert payload.files[0] is marker and payload.files[1] is not marker
    assert codec.Payload.of(source, config="c", key="k").files[0] != marker


# --- the full SigmaHQ set --------------------------------------------------------------------------

@pytest.mark.shared
@pytest.mark.slow
def test_sigmahq_round_trips_to_an_equal_set_with_equal_matches(tmp_path: Path) -> None:
    rules = str(shared_path("sigma"))
    samples = shared_path("evtx-attack-samples")
    from edr.sources.replay.winlog import iter_winlog_events

    source = build_ruleset([rules], placeholders=None, fed=ALL_FED)
    assert source.report.loaded > 2500
    decoded = round_trip(source, [rules])
    build_all_indexes(source, decoded)
    assert differences(source, decoded) == []

    # Per event: the index's candidates and which of them match, on both sets; on every 8th
    # event, every rule of the event's route (what the index leaves out included).
    events = evaluated = matched = 0
    for path in sorted(samples.rglob("*.evtx")):
        for event in iter_winlog_events(path):
            events += 1
            route = (event.product, event.category, event.service)
            a_index, b_index = source.route_index(route), decoded.route_index(route)
            a_ctx, b_ctx = MatchContext(event.fields), MatchContext(event.fields)
            candidates = a_index.candidates(a_ctx)
            assert candidates == b_index.candidates(b_ctx)
            numbers = a_index.rules if events % 8 == 0 else sorted(candidates)
            a_hits = [i for i in numbers if source.rules[i].condition.ev(a_ctx)]
            b_hits = [i for i in numbers if decoded.rules[i].condition.ev(b_ctx)]
            assert a_hits == b_hits, (path.name, route)
            evaluated += len(numbers)
            matched += len(a_hits)
    assert events > 8000 and evaluated > 100_000 and matched > 1000

