"""The responder never kills the agent's own supervisors: real processes, the real terminator.

The "agent" is :mod:`tests.response.protected_agent` in a process tree of its
own, so that a failure kills a disposable process, never the test runner:

    pytest -> grand (a child subreaper) -> parent -> agent -> child (an ordinary program)
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from edr.platform.linux import procfs
from edr.platform.protected import ANCESTOR, PARENT, describe, gather_protected
from tests.scan.marked import marked_binary

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd and /proc")

REPO = Path(__file__).resolve().parents[2]

# Orphans below a child subreaper are reparented to it, not to PID 1: a parent
# the test can watch. It reaps until it has no children left.
GRAND = textwrap.dedent("""
    import ctypes, os, subprocess, sys
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    subprocess.Popen(sys.argv[1:])
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
""")
PARENT_CODE = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat (None if gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()[0].decode()


def ppid_of(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[1])


def alive(pid: int, start: int | None) -> bool:
    """``pid`` still runs and is the same process (same start time), not a zombie."""
    return state(pid) not in (None, "Z") and procfs.start_ticks(pid) == start


class Tree:
    """grand -> parent -> agent -> child, with the agent's JSON lines read in a thread."""

    def __init__(self, tmp_path: Path) -> None:
        image = marked_binary(tmp_path / "bin", "ordinary-child", marker=False)
        self.log_path = tmp_path / "agent.log"
        with open(self.log_path, "w") as log:
            self.grand = subprocess.Popen(
                [sys.executable, "-c", GRAND, sys.executable, "-c", PARENT_CODE,
                 sys.executable, "-m", "tests.response.protected_agent", str(image)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.read()
        self.agent, self.parent, self.child = ready["pid"], ready["ppid"], ready["child"]
        self.starts = {pid: procfs.start_ticks(pid) for pid in (self.grand.pid, self.parent, self.agent)}

    def _read(self) -> None:
        assert self.grand.stdout is not None
        for line in self.grand.stdout:
            self.lines.put(line)

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"no answer from the agent; its log:\n{self.log()}") from None

    def ask(self, pid: int) -> dict[str, Any]:
        """Send an alert at ``pid`` (its real image and start time: a kill would pass the identity check)."""
        try:
            image = procfs.executable(pid)
        except PermissionError:  # init of another user namespace (this VM's PID 1)
            image = None
        if image is None and pid == 1:
            image = "/sbin/init"  # init's executable may be unreadable (a container's, another namespace's)
        request = {"pid": pid, "image": image, "start": procfs.start_ticks(pid)}
        assert request["image"] and request["start"] is not None, request
        assert self.grand.stdin is not None
        self.grand.stdin.write(json.dumps(request) + "\n")
        self.grand.stdin.flush()
        return self.read()

    def log(self) -> str:
        return self.log_path.read_text()

    def close(self) -> None:
        try:
            if self.grand.stdin is not None:
                self.grand.stdin.close()  # the agent ends on end of input, then its parents
            self.grand.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                for proc in psutil.Process(self.grand.pid).children(recursive=True):
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
            self.grand.kill()
            self.grand.wait()


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = Tree(tmp_path)
    yield t
    t.close()


def test_supervisors_are_skipped_as_protected_and_an_ordinary_child_is_killed(tree: Tree) -> None:
    grand, parent, agent = tree.grand.pid, tree.parent, tree.agent
    assert ppid_of(agent) == parent and ppid_of(parent) == grand
    for pid in (parent, grand, agent, 1):
        answer = tree.ask(pid)
        assert answer["outcome"] == "skipped: protected pid", (pid, answer, tree.log())
    assert all(alive(pid, tree.starts[pid]) for pid in (grand, parent, agent))
    protected = answer["protected"]
    assert protected[str(agent)] == ["agent"] and protected[str(parent)] == [PARENT]
    assert protected[str(grand)] == [ANCESTOR] and "init" in protected["1"]
    # descendants of the agent are not protected: its own child is killed like any process
    answer = tree.ask(tree.child)
    assert (answer["outcome"], answer["child_status"]) == ("terminated", -signal.SIGKILL)
    log = tree.log()
    [started] = [line for line in log.splitlines() if "Active response protected processes:" in line]
    for pid, role in ((agent, "agent"), (parent, PARENT), (grand, ANCESTOR), (1, "init")):
        assert f" {pid} " in f" {started.split(': ', 2)[-1]} " and role in started, (pid, started)
    assert f"Active response skipped: protected pid pid={parent} " in log and "role=parent" in log
    assert f"Active response skipped: protected pid pid={grand} " in log and "role=ancestor" in log


def test_the_set_follows_the_agent_when_its_parent_dies(tree: Tree) -> None:
    grand, parent, agent = tree.grand.pid, tree.parent, tree.agent
    os.kill(parent, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while ppid_of(agent) != grand:
        assert time.monotonic() < deadline, "the agent was not reparented to the subreaper"
        time.sleep(0.01)
    answer = tree.ask(grand)  # the new parent
    assert answer["outcome"] == "skipped: protected pid" and answer["ppid"] == grand
    assert answer["protected"][str(grand)] == [PARENT] and str(parent) not in answer["protected"]
    assert alive(grand, tree.starts[grand])
    [changed] = [line for line in tree.log().splitlines() if "protected processes changed" in line]
    assert f"{grand} parent" in changed and f" {parent} " not in changed


def spawn_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[bytes] | None:
    """A process with exactly ``pid`` (root: /proc/sys/kernel/ns_last_pid), or None after many tries."""
    for _ in range(300):
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(pid - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to choose a PID")
def test_a_dead_parents_pid_taken_by_a_new_process_is_not_protected(tree: Tree, tmp_path: Path) -> None:
    grand, parent, agent = tree.grand.pid, tree.parent, tree.agent
    os.kill(parent, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while state(parent) is not None:  # killed and reaped by the subreaper: the PID is free
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ppid_of(agent) == grand
    impostor = spawn_with_pid(parent, [str(marked_binary(tmp_path / "imp", "impostor", marker=False)), "60"])
    if impostor is None:
        pytest.skip(f"could not get PID {parent} back: the host forks too much")
    try:
        answer = tree.ask(impostor.pid)
        assert answer["outcome"] == "terminated", (answer, tree.log())
        assert impostor.wait(timeout=10) == -signal.SIGKILL
    finally:
        impostor.kill()
        impostor.wait()


def test_gathering_in_this_process_names_the_whole_chain() -> None:
    chain = [p.pid for p in psutil.Process().parents()]
    protected = gather_protected({})
    pids = [p.pid for p in protected]
    assert pids[0] == os.getpid() and protected[0].roles == ("agent",)
    assert pids[1] == os.getppid() and protected[1].roles[0] == PARENT
    assert set(chain) <= set(pids) and 1 in pids
    assert "init" in next(p for p in protected if p.pid == 1).roles
    assert describe(protected).startswith(f"{os.getpid()} agent (")


def test_manager_pid_is_protected_only_when_it_is_a_live_older_process(tmp_path: Path) -> None:
    older = subprocess.Popen(["sleep", "30"])  # started before the gathering, not before this process
    try:
        assert procfs.start_ticks(older.pid) is not None
        newer = {p.pid: p.roles for p in gather_protected({"MANAGERPID": str(older.pid)})}
        assert older.pid not in newer  # younger than the agent: a reused or foreign PID, not our manager
        grand = psutil.Process().parents()[0].pid
        mine = {p.pid: p.roles for p in gather_protected({"MANAGERPID": str(grand)})}
        assert "service-manager" in mine[grand]
        for bogus in ("", "x", "-3", str(2**70), "999999999"):
            roles = {p.pid: p.roles for p in gather_protected({"MANAGERPID": bogus})}
            assert all("service-manager" not in r for r in roles.values()), bogus
    finally:
        older.kill()
        older.wait()


def test_policy_takes_the_injected_set_and_names_the_role() -> None:
    from edr.detect.alert import Alert
    from edr.event import Event
    from edr.response.allowlist import ImageAllowlist
    from edr.response.decision import DRY_RUN, SKIP, ResponsePolicy, target_of

    def at(pid: int) -> Any:
        event = Event("process_creation", "linux", {"ProcessId": pid, "Image": "/tmp/x"}, 100.0)
        return target_of(Alert(rule_id="r", rule_name="R", severity="critical", engine="sigma", event=event))

    policy = ResponsePolicy(enabled=True, prevention=False, min_severity="critical",
                            allowlist=ImageAllowlist([], [], windows=False), protected_pids=frozenset({999}))
    assert policy.decide(at(999)).action == SKIP
    policy.protect({4321: "parent", 77: "ancestor+service-manager"})
    decision = policy.decide(at(4321))
    assert (decision.action, decision.reason) == (SKIP, "protected pid")
    assert decision.message == 'Active response skipped: protected pid pid=4321 image="/tmp/x" role=parent'
    assert policy.decide(at(77)).message.endswith("role=ancestor+service-manager")
    assert policy.decide(at(999)).action == DRY_RUN  # replaced, not added to: a stale pid is free again
    assert policy.decide(at(3)).message == 'Active response skipped: protected pid pid=3 image="/tmp/x"'
