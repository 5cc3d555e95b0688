"""Helpers for the Sigma engine tests: rules from YAML text, events from dicts."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edr.detect.sigma import LoadReport, SigmaEngine, load_sigma
from edr.event import Event
from tests.detect.sigma.structure import differences

#: The repository's sibling ``shared`` directory (reference data, may be absent).
SHARED = (Path(__file__).resolve().parents[3] / ".." / "shared").resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} not available")
    return path


def make_event(fields: dict[str, Any], category: str = "process_creation",
               product: str = "windows", service: str | None = "sysmon",
               timestamp: float = 0.0, count: int = 1) -> Event:
    """An event routed like a Sysmon event of ``category``."""
    return Event(category=category, product=product, fields=fields, timestamp=timestamp,
                 service=service, count=count)


RuleLoader = Callable[..., tuple[SigmaEngine, LoadReport]]


@pytest.fixture(params=["source", "cache"])
def load_rules(request: pytest.FixtureRequest, tmp_path: Path) -> RuleLoader:
    """Write YAML documents to files under tmp_path and load them.

    Every test that uses it runs twice: on rules compiled from source, and on
    the same rules decoded from the rule cache (compiled, stored, loaded
    again: the engine a restart gets), which must be structurally equal.
    """
    counter = iter(range(10_000))

    def load(*documents: str, **kwargs: Any) -> tuple[SigmaEngine, LoadReport]:
        directory = tmp_path / f"set_{next(counter)}"  # each call loads only its own rules
        directory.mkdir()
        for i, doc in enumerate(documents):
            (directory / f"rule_{i}.yml").write_text(textwrap.dedent(doc))
        if request.param == "source":
            return load_sigma([str(directory)], **kwargs)
        cache_dir = str(tmp_path / f"cache_{directory.name}")
        compiled, first = load_sigma([str(directory)], cache_dir=cache_dir, **kwargs)
        engine, report = load_sigma([str(directory)], cache_dir=cache_dir, **kwargs)
        assert not first.cached and report.cached
        assert differences(compiled.ruleset, engine.ruleset) == []
        return engine, report

    return load


def rule(detection: str, *, title: str = "Test Rule", category: str = "process_creation",
         product: str = "windows", extra: str = "", rule_id: str | None = None) -> str:
    """A minimal rule document around an (indented) detection block."""
    body = textwrap.indent(textwrap.dedent(detection).strip(), "    ")
    id_line = f"id: {rule_id}\n" if rule_id else ""
    return (f"title: {title}\n{id_line}status: test\nlevel: high\n{extra}"
            f"logsource:\n    product: {product}\n    category: {category}\n"
            f"detection:\n{body}\n")


def fired(engine: SigmaEngine, fields: dict[str, Any], **kwargs: Any) -> list[str]:
    """Titles of the rules that fire on an event with ``fields``."""
    return [a.rule_name for a in engine.match(make_event(fields, **kwargs))]
