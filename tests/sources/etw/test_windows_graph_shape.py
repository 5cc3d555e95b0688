"""actors/windows.toml: the Linux graph's lanes and policies, with the ETW source and normalizer, and the
Event Log channels' source and normalizer beside them."""

from __future__ import annotations

from edr.sources.etw.actor import EtwNormalizerActor, EtwSource
from edr.sources.etw.eventlog_actor import EventLogNormalizer, EventLogSource
from edr.wiring.graphs import mode_graph
from edr.wiring.kinds import KINDS

#: The Event Log path: blocking end to end, into the enricher beside the router's lanes.
EVENTLOG_EDGES = [("eventlog.out", "eventlog_normalizer.in"), ("eventlog_normalizer.out", "enricher.in")]


def test_windows_graph_has_the_linux_lanes_and_policies() -> None:
    linux, windows = mode_graph("linux"), mode_graph("windows")
    assert [(e.src, e.dst, e.capacity, e.policy) for e in windows.edges if (e.src, e.dst) not in EVENTLOG_EDGES] \
        == [(e.src, e.dst, e.capacity, e.policy) for e in linux.edges]
    kinds = {a.name: a.kind for a in windows.actors}
    assert kinds == {**{a.name: a.kind for a in linux.actors}, "source": "etw_source", "normalizer": "etw_normalizer",
                     "eventlog": "eventlog_source", "eventlog_normalizer": "eventlog_normalizer"}
    # process lifecycle never shed: the priority lane and everything before it block
    blocking = {e.name for e in windows.edges if e.policy.value == "block"}
    assert {"source.out->normalizer.in", "normalizer.out->router.in", "router.priority->enricher.in"} <= blocking


def test_event_log_records_are_never_shed_and_come_before_the_bulk_lane() -> None:
    """Channels keep their records: their path blocks, so a slow pipeline reads later instead of dropping."""
    windows = mode_graph("windows")
    path = [e for e in windows.edges if (e.src, e.dst) in EVENTLOG_EDGES]
    assert [(e.src, e.dst, e.policy.value) for e in path] == [(*pair, "block") for pair in EVENTLOG_EDGES]
    into_enricher = [e.src for e in windows.edges if e.dst == "enricher.in"]
    assert into_enricher == ["router.priority", "eventlog_normalizer.out", "router.bulk"]  # drained in this order


def test_the_registry_names_the_etw_actors() -> None:
    assert KINDS.resolve("etw_source").actor_class("etw_source") is EtwSource
    assert KINDS.resolve("etw_normalizer").actor_class("etw_normalizer") is EtwNormalizerActor
    assert EtwSource.is_source and EtwSource.outputs == ("out",)
    assert KINDS.resolve("eventlog_source").actor_class("eventlog_source") is EventLogSource
    assert KINDS.resolve("eventlog_normalizer").actor_class("eventlog_normalizer") is EventLogNormalizer
    assert EventLogSource.is_source and EventLogNormalizer.inputs == ("in",)


def test_the_etw_package_imports_without_linux_only_modules() -> None:
    """What a Windows run imports of the sensor loads with pwd, resource, fcntl and bcc unavailable."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import trio, orjson, psutil, pefile\n"  # loaded whole first, as tests/platform/as_windows.py does
            "for m in ('pwd', 'resource', 'fcntl', 'bcc'): sys.modules[m] = None\n"
            "sys.platform = 'win32'\n"
            "import edr.sources.etw.actor, edr.sources.etw.normalize, edr.sources.etw.eventlog_actor\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
