"""One error base class: every problem with an input is an EdrError that says where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from edr.config import ConfigError, IocConfig, load_config
from edr.detect.ioc.engine import load_iocs
from edr.detect.sigma.logsources import ALL_FED
from edr.detect.sigma.ruleset import build_ruleset
from edr.detect.simple import load_rules
from edr.detect.yara_rules import compile_rules
from edr.errors import EdrError, Location
from edr.runtime.graph import GraphError, load_graph
from edr.wiring.kinds import KINDS


def test_location_renders_what_is_known() -> None:
    assert str(Location("a.toml", 3, "sigma.cache_dir")) == "a.toml:3: sigma.cache_dir"
    assert str(Location("a.toml")) == "a.toml" and str(Location(key="k")) == "k" and str(Location()) == ""
    err = EdrError("bad", Location("f", 2))
    assert str(err) == "f:2: bad" and (err.file, err.line, err.reason) == ("f", 2, "bad")


def test_config_errors_carry_file_line_and_key(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[sigma]\ncache_dir = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert isinstance(info.value, EdrError)
    assert (info.value.file, info.value.location.key) == (str(conf), "sigma.cache_dir")
    conf.write_text("[sigma]\n\ncache_dir = = 3\n")
    with pytest.raises(EdrError) as info:
        load_config(str(conf))
    assert (info.value.file, info.value.line) == (str(conf), 3)


def test_graph_errors_carry_file_line_and_item(tmp_path: Path) -> None:
    graph = tmp_path / "g.toml"
    graph.write_text('[actors.a]\nkind = "nope"\n')
    with pytest.raises(GraphError) as info:
        load_graph(graph, KINDS)
    assert isinstance(info.value, EdrError) and info.value.file == str(graph)
    assert info.value.location.key
    graph.write_text("[actors.a]\n\nkind = \n")
    with pytest.raises(EdrError) as info:
        load_graph(graph, KINDS)
    assert (info.value.file, info.value.line) == (str(graph), 3)


def test_rule_ioc_yara_and_sigma_problems_carry_their_place(tmp_path: Path) -> None:
    simple = tmp_path / "rules.toml"
    simple.write_text('[[rules]]\nid = "R1"\nname = "x"\ntype = "process"\nseverity = "loud"\n')
    [err] = load_rules(simple, builtin=False).errors
    assert isinstance(err, EdrError) and (err.file, err.location.key) == (str(simple), "rule R1")

    hashes = tmp_path / "hashes.txt"
    hashes.write_text("# list\n" + "a" * 32 + "\nnot-a-hash\n")
    [err] = load_iocs(IocConfig(hashes_path=str(hashes), ips_path="", domains_path="",
                                paths_regex_path="")).errors
    assert isinstance(err, EdrError) and (err.file, err.line) == (str(hashes), 3)

    yar = tmp_path / "yara" / "broken.yar"
    yar.parent.mkdir()
    yar.write_text("rule ok { condition: true }\n\nrule broken {\n  condition: nope(\n}\n")
    [err] = compile_rules(yar.parent).errors
    assert isinstance(err, EdrError) and err.file == str(yar) and err.line is not None and err.line >= 3

    sigma = tmp_path / "sigma" / "bad.yml"
    sigma.parent.mkdir()
    sigma.write_text("title: Broken\nid: 0e6b0f4e-8c1b-4d6a-9a7e-3f3b1b2f7a10\nlogsource:\n  category: "
                     "process_creation\n  product: linux\ndetection:\n  sel:\n    Image|nosuchmodifier: x\n"
                     "  condition: sel\n")
    ruleset = build_ruleset([str(sigma.parent)], placeholders=None, fed=ALL_FED)
    [rejection] = ruleset.report.rejections
    err = rejection.error()
    assert isinstance(err, EdrError) and err.file == str(sigma)
    assert err.location.key == "0e6b0f4e-8c1b-4d6a-9a7e-3f3b1b2f7a10"
    assert str(err).startswith(f"{sigma}: 0e6b0f4e-8c1b-4d6a-9a7e-3f3b1b2f7a10: parse: ")
