"""/proc parsing on a planted tree, and container ids from cgroup paths (edr.platform.linux)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edr.platform.facts import ProcessSnapshot
from edr.platform.linux import procfs
from edr.platform.linux.containers import container_id_from_cgroup
from tests.enrich.test_context import ID, fake_proc


@pytest.mark.parametrize("path", [
    f"/system.slice/docker-{ID}.scope",
    f"/docker/{ID}",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope",
    f"/kubepods/besteffort/pod1/{ID}",
    f"/machine.slice/libpod-{ID}.scope/container",
    f"/kubepods.slice/kubepods-pod2.slice/crio-{ID}.scope",
])
def test_container_ids(path: str) -> None:
    assert container_id_from_cgroup(path) == ID


@pytest.mark.parametrize("path", ["/", "/user.slice/user-0.slice/session-1.scope", None,
                                  f"/machine.slice/libpod-conmon-{ID}.scope", "/docker/short"])
def test_not_containers(path: str | None) -> None:
    assert container_id_from_cgroup(path) is None


def test_a_planted_proc_is_read_field_by_field(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    assert sorted(procfs.running_pids(str(tmp_path))) == [2, 321, 999]
    assert procfs.boot_time(str(tmp_path)) == 1700000000.0
    assert procfs.start_ticks(321, str(tmp_path)) == 500  # field 22, after a comm holding ") ("
    assert procfs.executable(321, str(tmp_path)) == "/usr/bin/python3.11"
    assert procfs.running_processes(str(tmp_path)) == [ProcessSnapshot(
        pid=321, ppid=7, image="/usr/bin/python3.11", command_line="/usr/bin/python3 -m http.server", uid=1000,
        cwd="/srv", start_time=1700000000 + 500 / os.sysconf("SC_CLK_TCK"),
        cgroup_path=f"/system.slice/docker-{ID}.scope", container_id=ID)]


def test_a_deleted_executable_is_named_without_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "5").mkdir()
    os.symlink("/tmp/evil (deleted)", tmp_path / "5" / "exe")
    assert procfs.executable(5, str(tmp_path)) == "/tmp/evil"


def test_unreadable_or_garbled_entries_are_none(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu 1 2 3\nbtime soon\n")
    assert procfs.boot_time(str(tmp_path)) is None
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "stat").write_text("8 no parenthesis here\n")
    (tmp_path / "8" / "statm").write_text("12\n")
    assert procfs.start_ticks(8, str(tmp_path)) is None
    assert procfs.resident_bytes(8, str(tmp_path)) is None
    assert procfs.read_process(8, str(tmp_path)) is None
    assert procfs.running_pids(str(tmp_path / "absent")) == []
    assert procfs.running_processes(str(tmp_path / "absent")) == []
