"""ProcessCache: fork/exec/exit, delayed removal, bounds."""

from __future__ import annotations

from edr.enrich.process_cache import ProcessCache, ProcessInfo


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
    assert c.statistics() == {"size": 3, "evictions": 2, "exiting": 0}
