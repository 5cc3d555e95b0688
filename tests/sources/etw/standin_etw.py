"""Test support: a stand-in for pywintrace's ``etw`` module that replays records.

It keeps pywintrace's API as :mod:`edr.sources.etw.session` uses it
(``ETW(session_name=..., event_callback=..., providers=[ProviderInfo(...)],
ignore_exists_error=...)``, ``start``, ``stop``, ``query``, ``control_stop``,
``properties``, ``ProviderInfo``, ``GUID``, ``etw.ProviderParameters``) and
its threading: ``start`` runs a consumer thread (pywintrace's
``EventConsumer._run`` around ``ProcessTrace``) that calls the callback once
per record, for the records of the enabled providers only, then waits until
the session is stopped; ``stop`` joins it. Sessions live in a
:class:`SessionTable` standing for the machine's ETW session list, so a
session left running by an earlier (crashed) run is visible to the next one.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

ERROR_ALREADY_EXISTS = 183


class WindowsError_(OSError):
    """``ctypes.WinError``: an OSError carrying ``winerror``."""

    def __init__(self, winerror: int, text: str) -> None:
        super().__init__(text)
        self.winerror = winerror


class Props:
    """The EVENT_TRACE_PROPERTIES fields the sensor reads."""

    def __init__(self, buffers: int = 0, events_lost: int = 0, realtime_lost: int = 0) -> None:
        self.NumberOfBuffers = buffers
        self.FreeBuffers = buffers
        self.EventsLost = events_lost
        self.RealTimeBuffersLost = realtime_lost
        self.LogBuffersLost = 0


class SessionTable:
    """The machine's running sessions by name, and a log of what was done to them."""

    def __init__(self) -> None:
        self.running: dict[str, Any] = {}
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()


class ProviderInfo:
    """pywintrace's ProviderInfo (``etw/etw.py`` line 1021): name, GUID, level, keyword masks, params."""

    def __init__(self, name: str, guid: Any, level: int = 4, any_keywords: Any = None, all_keywords: Any = None,
                 params: Any = None) -> None:
        self.name = name
        self.guid = guid
        self.level = level
        self.any_bitmask = any_keywords or 0
        self.all_bitmask = all_keywords or 0
        self.params = params


class GUID:
    """pywintrace's GUID: built from ``"{...}"``, ``str()`` gives it back upper-cased."""

    def __init__(self, name: str) -> None:
        if not (name.startswith("{") and name.endswith("}")):
            raise ValueError(f"CLSIDFromString: {name!r} is not a braced GUID")
        self.text = name.upper()

    def __str__(self) -> str:
        return self.text


class ProviderParameters:
    """pywintrace's ProviderParameters (line 1084): ``.get()`` is what ProviderInfo takes."""

    def __init__(self, event_property: int, event_filters: list[Any]) -> None:
        self.event_property = event_property
        self.event_filters = event_filters

    def get(self) -> ProviderParameters:
        return self


def make_module(table: SessionTable, feed: Callable[[], Sequence[tuple[int, dict[str, Any]]]],
                *, fail_provider: str | None = None, start_gate: threading.Event | None = None,
                starting: threading.Event | None = None) -> types.ModuleType:
    """A module object named ``etw``; each started session replays ``feed()``.

    ``fail_provider`` (a provider name) makes enabling that provider fail after
    the session was created, as EnableTraceEx2 can. With ``start_gate``,
    ``start`` sets ``starting`` and then blocks until the gate is set (a slow
    StartTrace), so a test can stop the agent during startup.
    """

    class ETW:
        def __init__(self, session_name: str | None = None, ring_buf_size: int = 1024, max_str_len: int = 1024,
                     min_buffers: int = 0, max_buffers: int = 0, event_callback: Any = None,
                     task_name_filters: Any = None, properties: Any = None, providers: Any = None,
                     ignore_exists_error: bool = True, event_id_filters: Any = None, callback_data_flag: int = 0,
                     callback_wait_time: float = 0.0, trace_logfile: Any = None) -> None:
            self.session_name = session_name
            self.ring_buf_size = ring_buf_size
            self.min_buffers = min_buffers
            self.max_buffers = max_buffers
            self.event_callback = event_callback
            self.providers = providers or []
            self.ignore_exists_error = ignore_exists_error
            self.properties = Props()
            self.delivered = threading.Event()
            self.callbacks = 0
            self._end = threading.Event()
            self._thread: threading.Thread | None = None
            self.events_lost = 0

        def start(self) -> None:
            if start_gate is not None:
                if starting is not None:
                    starting.set()
                start_gate.wait()
            with table.lock:
                if self.session_name in table.running and not self.ignore_exists_error:
                    raise WindowsError_(ERROR_ALREADY_EXISTS, "Cannot create a file when that file already exists.")
                table.running[self.session_name] = self
                table.log.append(("start", self.session_name))
            if fail_provider is not None and any(p.name == fail_provider for p in self.providers):
                raise WindowsError_(5, f"Access is denied (enabling {fail_provider})")
            self._thread = threading.Thread(target=self._consume, name="etw-standin-consumer", daemon=True)
            self._thread.start()

        def _consume(self) -> None:
            enabled = {str(p.guid) for p in self.providers}
            for event_id, data in feed():
                if self._end.is_set():
                    break
                if data["EventHeader"]["ProviderId"] in enabled:
                    self.callbacks += 1
                    self.event_callback((event_id, data))
            self.delivered.set()
            self._end.wait()

        def stop(self) -> None:
            with table.lock:
                if table.running.get(self.session_name) is self:
                    del table.running[self.session_name]
                table.log.append(("stop", self.session_name))
            self._end.set()
            if self._thread is not None:
                self._thread.join()

        def query(self) -> Props:
            with table.lock:
                live = table.running.get(self.session_name)
            if live is None:
                return Props()
            return Props(buffers=live.min_buffers or 1, events_lost=live.events_lost)

        def control_stop(self, props: Any) -> None:
            with table.lock:
                live = table.running.pop(self.session_name, None)
                table.log.append(("control_stop", self.session_name))
            if live is not None:
                live._end.set()

    module = types.ModuleType("etw")
    module.ETW = ETW  # type: ignore[attr-defined]
    module.ProviderInfo = ProviderInfo  # type: ignore[attr-defined]
    module.GUID = GUID  # type: ignore[attr-defined]
    inner = types.ModuleType("etw.etw")
    inner.ProviderParameters = ProviderParameters  # type: ignore[attr-defined]
    module.etw = inner  # type: ignore[attr-defined]
    return module


def stale_session(table: SessionTable, name: str) -> Any:
    """A session of ``name`` left running, as by an agent that crashed."""
    module = make_module(table, list)
    crashed = module.ETW(session_name=name, min_buffers=8)  # type: ignore[attr-defined]
    with table.lock:
        table.running[name] = crashed
    return crashed
