"""ProcessCache: fork/exec/exit, delayed removal, bounds."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable

from edr.enrich.enricher import Enricher
from edr.enrich.process_cache import ProcessCache, ProcessInfo
from edr.enrich.users import UserCache
from edr.event import NETWORK_CONNECTION, PROCESS_CREATION, Event, F


def test_fork_copies_parent_and_exec_keeps_the_parent() -> None:
    c = ProcessCache()
    c.put(ProcessInfo(1, 0, "/usr/bin/bash", "bash -l", 0, "root", "/root"))
    child = c.fork(1, 2, ts=10.0)
    assert (child.ppid, child.image, child.command_line, child.cwd) == (1, "/usr/bin/bash", "bash -l", "/root")
    info = c.exec(2, image="/usr/bin/id", command_line="id -u", ts=10.1, uid=0, user="root")
    assert (info.ppid, info.image, info.cwd) == (1, "/usr/bin/id", "/root")
    assert c.get(1) is not None and c.get(1).image == "/usr/bin/bash"  # type: ignore[union-attr]


def test_exit_lingers_then_expires() -> None:
    c = ProcessCache(exit_linger=5.0)
    c.exec(3, image="/bin/x", command_line="x", ts=0.0)
    c.exit(3, ts=1.0)
    assert c.expire(5.9) == 0 and c.get(3) is not None
    assert c.expire(6.0) == 1 and c.get(3) is None


def test_reused_pid_survives_the_old_exit() -> None:
    c = ProcessCache(exit_linger=1.0)
    c.exec(4, image="/bin/old", command_line="old", ts=0.0)
    c.exit(4, ts=0.5)
    c.fork(1, 4, ts=0.6)  # the pid comes back as a new process
    c.exec(4, image="/bin/new", command_line="new", ts=0.7)
    c.expire(10.0)
    assert c.get(4) is not None and c.get(4).image == "/bin/new"  # type: ignore[union-attr]


def test_bounded_with_counted_evictions() -> None:
    c = ProcessCache(max_entries=3)
    for pid in range(1, 6):
        c.exec(pid, image=f"/bin/{pid}", command_line="", ts=float(pid))
    assert len(c) == 3 and c.evictions == 2
    assert c.get(1) is None and c.get(5) is not None
    assert c.statistics() == {"size": 3, "bytes": c.recount_bytes(), "evictions": 2, "byte_evictions": 0,
                              "exiting": 0}


# --- the byte budget (process.max_bytes) ---------------------------------------------------

def traced_growth(run: Callable[[], object]) -> int:
    """Bytes that ``run()`` allocated and that are still allocated after it (tracemalloc).

    Only allocations made under this file's frames count: a thread an earlier
    test left running allocates too, and is not what is measured here.
    """
    gc.collect()
    tracemalloc.start(16)  # deep enough to reach this file from any allocation the feed makes
    try:
        run()
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__, all_frames=True)])
        return sum(trace.size for trace in snapshot.traces)
    finally:
        tracemalloc.stop()


def exec_event(pid: int, ppid: int, ts: float, command_line: str) -> Event:
    """A process_creation event as the eBPF decoder makes it (argv joined, up to 4 KiB)."""
    return Event(category=PROCESS_CREATION, product="linux", timestamp=ts, fields={
        F.PROCESS_ID: pid, F.PARENT_PROCESS_ID: ppid, F.IMAGE: f"/tmp/flood/bin-{pid}",
        F.COMMAND_LINE: command_line, F.UID: 1000, F.CURRENT_DIRECTORY: f"/home/u/work-{pid}",
        F.CGROUP_PATH: f"/user.slice/user-1000.slice/session-{pid}.scope",
    })


def test_exec_flood_with_4k_command_lines_stays_within_max_bytes() -> None:
    budget = 2 << 20
    users = UserCache(lookup={1000: "alice"}.get)
    enricher = Enricher(users=users, processes=ProcessCache(max_entries=65536, max_bytes=budget))
    cache = enricher.processes
    n = 6_000  # 4 KiB command lines: about 27 MiB unbounded

    def flood() -> None:
        for i in range(n):
            pid = 100_000 + i
            enricher.process(exec_event(pid, pid - 1, float(i), f"{pid} " + "A" * 4090))
            if i % 500 == 0:
                assert cache.bytes <= budget

    real = traced_growth(flood)
    stats = cache.statistics()
    assert stats["bytes"] == cache.bytes == cache.recount_bytes() and cache.bytes <= budget
    assert stats["evictions"] == 0 and stats["byte_evictions"] == n - len(cache) > 5_000
    assert real <= budget, (real, budget)
    assert enricher.statistics()["process_cache_byte_evictions"] == stats["byte_evictions"]
    assert enricher.statistics()["process_cache_bytes"] == cache.bytes
    # the most recent processes are all there, and enrich their children and their other events
    newest = 100_000 + n - 1
    assert all(cache.get(pid) is not None for pid in range(newest - len(cache) + 1, newest + 1))
    assert cache.get(100_000) is None
    child = enricher.process(exec_event(900_000, newest, float(n), "child --x"))
    assert child.fields[F.PARENT_IMAGE] == f"/tmp/flood/bin-{newest}"
    assert child.fields[F.PARENT_COMMAND_LINE] == f"{newest} " + "A" * 4090
    assert child.fields[F.PARENT_USER] == "alice"
    net = enricher.process(Event(category=NETWORK_CONNECTION, product="linux", timestamp=float(n),
                                 fields={F.PROCESS_ID: newest - 5, F.DESTINATION_IP: "192.0.2.1"}))
    assert net.fields[F.IMAGE] == f"/tmp/flood/bin-{newest - 5}" and net.fields[F.USER] == "alice"
    assert cache.bytes <= budget


def test_fork_flood_of_a_long_command_line_is_bounded() -> None:
    budget = 1 << 20
    cache = ProcessCache(max_bytes=budget)
    cache.exec(10, image="/usr/bin/java", command_line="java -cp " + "x" * 4000, ts=0.0)
    for pid in range(11, 5_011):  # each child forks the next: all hold the same 4 KiB string
        cache.fork(pid - 1, pid, ts=float(pid))
    # a child shares its parent's strings but is charged for them: fewer kept, never over
    assert cache.bytes == cache.recount_bytes() <= budget
    assert 200 < len(cache) < 260 and cache.byte_evictions == 5_001 - len(cache)
    assert cache.get(5_010).command_line.startswith("java -cp ")  # type: ignore[union-attr]


def test_a_record_larger_than_the_budget_is_not_stored() -> None:
    cache = ProcessCache(max_bytes=64 << 10)
    cache.exec(1, image="/sbin/init", command_line="init", ts=0.0)
    cache.exec(2, image="/bin/sh", command_line="sh", ts=0.0)
    before = cache.bytes
    cache.exec(3, image="/tmp/big", command_line="B" * (64 << 10), ts=1.0)
    assert cache.get(3) is None and cache.byte_evictions == 1
    assert cache.get(1) is not None and cache.get(2) is not None and cache.bytes == before
    cache.exec(2, image="/tmp/big", command_line="B" * (64 << 10), ts=2.0)  # replaces a stored record
    assert cache.get(2) is None and cache.bytes == cache.recount_bytes() and cache.byte_evictions == 2


def test_running_total_matches_a_recount_through_every_operation() -> None:
    rng = random.Random(12)
    cache = ProcessCache(max_entries=25, max_bytes=24 << 10, exit_linger=2.0)
    odd_values: list[object] = [None, "", "é" * 40, "\U0001f600" * 9, ["list", "user"], {"a": 1}, 12345]
    for step in range(6_000):
        ts = step * 0.01
        pid = rng.randrange(1, 600)
        op = rng.random()
        if op < 0.4:
            length = rng.randrange(0, 4096) if rng.random() < 0.1 else rng.randrange(0, 40)
            cache.exec(pid, image=f"/bin/p{pid}", command_line="c" * length, ts=ts,
                       ppid=rng.randrange(1, 600), user=rng.choice(odd_values),  # type: ignore[arg-type]
                       cwd=rng.choice(odd_values), container_id=rng.choice(odd_values))  # type: ignore[arg-type]
        elif op < 0.7:
            cache.fork(rng.randrange(1, 600), pid, ts)
        elif op < 0.9:
            cache.exit(pid, ts)
        else:
            cache.expire(ts)
        assert cache.bytes == cache.recount_bytes() <= 24 << 10, step
    stats = cache.statistics()
    assert stats["byte_evictions"] > 0 and stats["evictions"] > 0


def test_enricher_actor_takes_both_bounds_from_the_configuration() -> None:
    from edr.config import Config, ProcessConfig
    from edr.wiring import builders
    from edr.wiring.context import AgentContext

    cfg = Config(process=ProcessConfig(max_entries=5000, max_bytes=1 << 20))
    actor = builders.enricher(AgentContext.create(cfg, "linux"), "enricher")
    cache = actor.enricher.processes
    assert (cache._max, cache._max_bytes) == (5000, 1 << 20)
    # seeded from the real /proc, within the budget, counted in the actor's statistics
    assert 0 < cache.bytes == cache.recount_bytes() <= 1 << 20
    assert actor.statistics()["process_cache_bytes"] == cache.bytes


def test_exec_record_is_exec_by_position() -> None:
    by_keyword, by_position = ProcessCache(), ProcessCache()
    for cache in (by_keyword, by_position):
        cache.exec(7, image="/bin/sh", command_line="sh", ts=0.0, ppid=1, cwd="/srv")
    by_keyword.exec(7, image="/usr/bin/id", command_line="id -u", ts=1.0, uid=0, user="root", cgroup_id=9,
                    cgroup_path="/system.slice", container_id="c0ffee")
    by_position.exec_record(7, 0, "/usr/bin/id", "id -u", 0, "root", None, 1.0, 9, "/system.slice", "c0ffee")
    # the parent and working directory are kept from the record replaced, either way
    assert by_keyword.get(7) == by_position.get(7) == ProcessInfo(
        7, 1, "/usr/bin/id", "id -u", 0, "root", "/srv", 1.0, 9, "/system.slice", "c0ffee",
        size=by_keyword.bytes)
    assert by_keyword.statistics() == by_position.statistics()


def test_get_follows_the_cache() -> None:
    cache = ProcessCache(max_entries=1, exit_linger=1.0)
    get = cache.get
    cache.exec(1, image="/bin/a", command_line="a", ts=0.0)
    assert get(1) is cache.get(1) is not None
    cache.exec(2, image="/bin/b", command_line="b", ts=0.0)  # evicts pid 1
    cache.exit(2, ts=0.0)
    assert get(1) is None and get(2) is not None
    cache.expire(5.0)
    assert get(2) is None and len(cache) == 0


def test_user_cache_cached_looks_nothing_up() -> None:
    looked_up: list[int] = []

    def lookup(uid: int) -> str | None:
        looked_up.append(uid)
        return {0: "root"}.get(uid)

    users = UserCache(lookup)
    assert users.cached(0) is None and looked_up == [] and users.misses == 0
    assert users.name(0) == "root" and users.cached(0) == "root" and users.misses == 1
    assert users.name(5) == "5" and users.cached(5) == "5" and looked_up == [0, 5]
