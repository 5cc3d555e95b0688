"""Container ids from cgroup paths (docker, containerd/CRI, podman, cri-o)."""

from __future__ import annotations

import re
from typing import Final

# Every runtime names the container's cgroup after its 64-hex id, with a
# runtime-specific prefix under systemd (docker-<id>.scope, cri-containerd-<id>.scope,
# libpod-<id>.scope, crio-<id>.scope) or as a plain path segment with cgroupfs
# (/docker/<id>, /kubepods/.../<id>, /machine.slice/libpod-<id>).
_PATTERNS: Final = (
    re.compile(r"(?:docker|cri-containerd|crio|libpod|containerd)-([0-9a-f]{64})\.scope"),
    re.compile(r"/(?:docker|libpod|crio|containerd|lxc\.payload)[/-]([0-9a-f]{64})(?:/|$)"),
    re.compile(r"/kubepods[^ ]*/([0-9a-f]{64})(?:/|$)"),
)
# conmon (podman's monitor) lives next to, not inside, the container
_NOT_CONTAINER: Final = re.compile(r"libpod-conmon-[0-9a-f]{64}")


def container_id_from_cgroup(path: str | None) -> str | None:
    """The 64-hex container id in a cgroup path, or None for host processes."""
    if not path or _NOT_CONTAINER.search(path):
        return None
    for pattern in _PATTERNS:
        found = pattern.search(path)
        if found:
            return found.group(1)
    return None
