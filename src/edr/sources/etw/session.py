"""One real-time ETW session through pywintrace's ``etw`` module.

The module is passed in (``importlib.import_module("etw")`` on Windows, a
stand-in in tests), so nothing here imports pywintrace or touches Win32.
What is used of it: ``etw.ETW`` (``start``, ``stop``, ``query``,
``control_stop``, ``properties``), ``etw.ProviderInfo``, ``etw.GUID`` and,
when present, ``etw.etw.ProviderParameters`` to ask for each event's SID.

Lifecycle: a session of the same name left running by a crashed agent
would keep its buffers and its providers and make ``StartTrace`` fail with
ERROR_ALREADY_EXISTS, so :meth:`EtwSession.start` stops it first. A start
that fails half-way (a provider that cannot be enabled) stops what it
started before raising. :meth:`EtwSession.stop` is idempotent and joins
pywintrace's consumer thread: after it returns no callback runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from edr.sources.ebpf.errors import SensorUnavailable
from edr.sources.etw.providers import ProviderSpec

log = logging.getLogger("edr.etw")

#: ENABLE_TRACE_PARAMETERS.EnableProperty: attach the SID of the thread raising each event
EVENT_ENABLE_PROPERTY_SID: Final = 0x1


class EtwUnavailable(SensorUnavailable):
    """The ETW session cannot start here; the message says why and what to do."""


class EtwSession:
    """A named real-time session with the given providers, calling ``callback`` per event."""

    def __init__(self, etw: Any, *, name: str, providers: Sequence[ProviderSpec],
                 callback: Callable[[Any], None], buffer_kb: int = 256, min_buffers: int = 64,
                 max_buffers: int = 256) -> None:
        self.etw = etw
        self.name = name
        self.providers = list(providers)
        self.callback = callback
        self.buffer_kb = buffer_kb
        self.min_buffers = min_buffers
        self.max_buffers = max_buffers
        self._session: Any = None
        self.stale_stopped = False
        self._last_stats: dict[str, int] = {}

    def _provider_infos(self) -> list[Any]:
        etw = self.etw
        params_cls = getattr(getattr(etw, "etw", None), "ProviderParameters", None)
        infos = []
        for spec in self.providers:
            params = None
            if spec.sid and params_cls is not None:
                params = params_cls(EVENT_ENABLE_PROPERTY_SID, []).get()
            infos.append(etw.ProviderInfo(spec.name, etw.GUID(spec.braced_guid), spec.level,
                                          any_keywords=spec.keywords, all_keywords=0, params=params))
        return infos

    def stop_stale(self) -> bool:
        """Stop a session of this name left by an earlier run; whether there was one."""
        probe = self.etw.ETW(session_name=self.name)
        try:
            existing = int(getattr(probe.query(), "NumberOfBuffers", 0) or 0) > 0
        except Exception:
            existing = False
        if existing:
            log.warning("etw: stopping the stale session %r left by an earlier run", self.name)
            probe.control_stop(probe.properties)
        self.stale_stopped = existing
        return existing

    def start(self) -> None:
        """Stop a stale session of this name, then start ours (blocking; raises :class:`EtwUnavailable`)."""
        self.stop_stale()
        session = self.etw.ETW(
            session_name=self.name, ring_buf_size=self.buffer_kb, min_buffers=self.min_buffers,
            max_buffers=self.max_buffers, event_callback=self.callback, providers=self._provider_infos(),
            ignore_exists_error=False,
        )
        try:
            session.start()
        except Exception as exc:
            # StartTrace may have succeeded before a provider failed: leave nothing running
            try:
                session.stop()
            except Exception:
                try:
                    session.control_stop(session.properties)
                except Exception:
                    log.debug("etw: cleanup after a failed start also failed", exc_info=True)
            raise EtwUnavailable(
                f"cannot start the ETW session {self.name!r}: {exc} "
                "(edr run on Windows needs an elevated prompt or the LocalSystem service account)") from exc
        self._session = session
        log.info("etw: session %r started with %d providers", self.name, len(self.providers))

    def stop(self) -> None:
        """Stop the session and join pywintrace's consumer thread (idempotent, blocking)."""
        session, self._session = self._session, None
        if session is None:
            return
        self._last_stats = self._query(session)
        try:
            session.stop()
        except Exception:
            log.exception("etw: stopping session %r failed; forcing it", self.name)
            try:
                session.control_stop(session.properties)
            except Exception:
                log.exception("etw: session %r could not be stopped", self.name)
        log.info("etw: session %r stopped", self.name)

    @property
    def running(self) -> bool:
        """Whether the session is started and not stopped."""
        return self._session is not None

    @staticmethod
    def _query(session: Any) -> dict[str, int]:
        try:
            props = session.query()
        except Exception:
            return {}
        return {
            "events_lost": int(getattr(props, "EventsLost", 0) or 0),
            "realtime_buffers_lost": int(getattr(props, "RealTimeBuffersLost", 0) or 0),
            "log_buffers_lost": int(getattr(props, "LogBuffersLost", 0) or 0),
            "buffers": int(getattr(props, "NumberOfBuffers", 0) or 0),
            "free_buffers": int(getattr(props, "FreeBuffers", 0) or 0),
        }

    def statistics(self) -> dict[str, int]:
        """ETW's own loss counters (``EventsLost``, ``RealTimeBuffersLost``...), the last known after stop."""
        if self._session is not None:
            stats = self._query(self._session)
            if stats:
                self._last_stats = stats
        return dict(self._last_stats)
