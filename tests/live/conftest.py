"""The live agent tests share one kernel with a path check: no file event with a relative or empty path.

The agents these tests start decode with the same :class:`~edr.sources.ebpf.decode.Decoder`;
a capture in this process records the same kernel events for the whole run (the one
tests/sources/ebpf uses, when both run) and fails the session if any file event's path was
relative or empty.  Without root or bcc there is no capture and nothing is checked here:
the tests themselves skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ebpf_unavailable


@pytest.fixture(scope="session", autouse=True)
def _kernel_file_paths_are_absolute() -> Iterator[None]:
    if ebpf_unavailable() is not None:
        yield
        return
    from tests.sources.ebpf.live import acquire_capture, bad_paths_since, release_capture

    capture = acquire_capture()
    try:
        yield
        bad = bad_paths_since(capture, 0)
        assert not bad, f"{len(bad)} file events with a relative or empty path: {bad[:20]}"
    finally:
        release_capture()
