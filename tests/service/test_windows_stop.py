"""ServiceStop: a Windows stop request from the manager's thread, before, during and after a Trio run."""

from __future__ import annotations

import threading

import trio

from edr.service.windows_stop import ABORTING, ENDED, PENDING, STOPPING, ServiceStop


def test_a_stop_before_the_run_is_remembered_and_delivered_on_attach() -> None:
    stop = ServiceStop()
    assert not stop.requested
    assert stop.request() == PENDING
    assert stop.requested
    calls: list[str] = []
    stop.attach(lambda: calls.append("stop"), lambda: calls.append("abort"), lambda f: calls.append("scheduled"))
    assert calls == ["stop"]  # attach runs in the loop: called directly, not scheduled


def test_requests_while_attached_are_scheduled_stop_then_abort() -> None:
    stop = ServiceStop()
    scheduled: list[object] = []

    def on_stop() -> None: ...

    def on_abort() -> None: ...

    stop.attach(on_stop, on_abort, scheduled.append)
    assert scheduled == []
    assert stop.request() == STOPPING
    assert stop.request() == ABORTING
    assert stop.request() == ABORTING
    assert scheduled == [on_stop, on_abort, on_abort]


def test_after_detach_or_a_finished_run_requests_are_only_remembered() -> None:
    stop = ServiceStop()

    def finished(f: object) -> None:
        raise trio.RunFinishedError("the run is over")

    stop.attach(lambda: None, lambda: None, finished)
    assert stop.request() == ENDED  # never raises into the control handler
    stop.detach()
    assert stop.request() == ENDED
    after = ServiceStop()
    after.detach()  # a run that ended by itself (or never started the graph)
    assert after.request() == ENDED and after.requested


def test_a_request_from_another_thread_runs_stop_in_the_trio_thread() -> None:
    stop = ServiceStop()
    seen: list[tuple[str, int]] = []
    attached = threading.Event()

    async def main() -> None:
        stopped = trio.Event()

        def on_stop() -> None:
            seen.append(("stop", threading.get_ident()))
            stopped.set()

        stop.attach(on_stop, lambda: seen.append(("abort", threading.get_ident())),
                    trio.lowlevel.current_trio_token().run_sync_soon)
        attached.set()
        with trio.fail_after(10):
            await stopped.wait()
        stop.detach()

    loop = threading.Thread(target=trio.run, args=(main,))
    loop.start()
    assert attached.wait(10)
    outcomes: list[str] = []
    control = threading.Thread(target=lambda: outcomes.append(stop.request()))
    control.start()
    control.join(10)
    loop.join(10)
    assert outcomes == [STOPPING]
    assert seen == [("stop", loop.ident)]


def test_reload_requests_pending_while_starting_then_scheduled_then_ended() -> None:
    from edr.service.windows_stop import RELOADING

    reloads: list[str] = []
    scheduled: list[object] = []
    requests = ServiceStop()
    assert requests.request_reload() == PENDING  # while the rules load: kept for the start
    requests.attach(lambda: None, lambda: None, scheduled.append, lambda: reloads.append("reload"))
    assert reloads == ["reload"] and scheduled == []  # delivered at attach, in the loop
    assert requests.request_reload() == RELOADING and len(scheduled) == 1
    requests.detach()
    assert requests.request_reload() == ENDED
