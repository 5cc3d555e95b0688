"""actors/windows.toml: the Linux graph's lanes and policies, with the ETW source and normalizer."""

from __future__ import annotations

from edr.sources.etw.actor import EtwNormalizerActor, EtwSource
from edr.wiring.graphs import mode_graph
from edr.wiring.kinds import KINDS


def test_windows_graph_has_the_linux_lanes_and_policies() -> None:
    linux, windows = mode_graph("linux"), mode_graph("windows")
    assert [(e.src, e.dst, e.capacity, e.policy) for e in windows.edges] == \
        [(e.src, e.dst, e.capacity, e.policy) for e in linux.edges]
    kinds = {a.name: a.kind for a in windows.actors}
    assert kinds == {**{a.name: a.kind for a in linux.actors}, "source": "etw_source", "normalizer": "etw_normalizer"}
    # process lifecycle never shed: the priority lane and everything before it block
    blocking = {e.name for e in windows.edges if e.policy.value == "block"}
    assert {"source.out->normalizer.in", "normalizer.out->router.in", "router.priority->enricher.in"} <= blocking


def test_the_registry_names_the_etw_actors() -> None:
    assert KINDS.resolve("etw_source").actor_class("etw_source") is EtwSource
    assert KINDS.resolve("etw_normalizer").actor_class("etw_normalizer") is EtwNormalizerActor
    assert EtwSource.is_source and EtwSource.outputs == ("out",)


def test_the_etw_package_imports_without_linux_only_modules() -> None:
    """What a Windows run imports of the sensor loads with pwd, resource, fcntl and bcc unavailable."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('pwd', 'resource', 'fcntl', 'bcc'): sys.modules[m] = None\n"
            "import edr.sources.etw.actor, edr.sources.etw.normalize\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
