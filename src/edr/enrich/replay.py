"""The live enricher's correlations over recorded events (``edr replay``).

Live, the enricher names a connection's destination from the DNS answer
the host received before it (``DestinationHostname``) and gives a process
creation its parent's image, command line and user from the process cache.
A recording holds the same answers and process events, so replay runs the
same :class:`~edr.enrich.enricher.Enricher` over them, with three
differences, each because the recording, not this machine, is the truth:

- **No look-ups on this machine.** The cache starts empty (no seed from this
  machine's running processes), and a recorded ``Uid`` is not named through
  this machine's user database: a recording made on another host would get
  this host's names, and the same uid may be someone else here. A recorded
  ``User`` and the user of a recorded process creation still fill in events
  of that process.
- **One timeline per recording.** A recording is one host's events in time
  order; pids and addresses mean nothing across recordings (the attack
  samples are 277 files of a dozen hosts, recorded years apart, whose pids
  collide). So each recording file, and within it each recorded host
  (``Computer`` of a Windows event log, which a forwarded log mixes), has
  its own caches: an answer recorded in one file never names a connection of
  another. The price: a host's timeline split over several files (daily
  rotation) is correlated within each file only.
- **Bounded.** Replay reads files one after the other, so only the most
  recently used :data:`MAX_SCOPES` timelines are kept; each one's process
  cache has the ``[process]`` bounds of the live cache and its DNS cache the
  live bounds.

What a recording already holds wins, as live: every value is filled in only
where the event lacks it (``DestinationHostname`` that Sysmon resolved, a
Sysmon 1 record's own ``ParentImage``...).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final

from edr.enrich.enricher import Enricher
from edr.enrich.process_cache import ProcessCache
from edr.event import WINDOWS, Event

#: Timelines (recording file, recorded host) kept at once.
MAX_SCOPES: Final = 4
#: ``Event.origin`` key naming the recording an event was replayed from.
FILE_KEY: Final = "log.file.path"
#: Windows event log field naming the host that logged the record.
COMPUTER: Final = "Computer"


def scope_of(event: Event) -> Hashable:
    """The timeline ``event`` belongs to: its recording file and, for a Windows event log, its host."""
    origin = event.origin
    path = origin.get(FILE_KEY) if origin is not None else None
    host = event.fields.get(COMPUTER) if event.product == WINDOWS else None
    return (path, host if isinstance(host, str) else None)


class ReplayEnricher:
    """An :class:`Enricher` per recorded timeline (see the module docstring).

    Sans-IO and synchronous, like the live enricher: :meth:`process` never
    raises on a bad event and never reads anything of this machine.
    """

    def __init__(self, *, processes: Callable[[], ProcessCache] = ProcessCache,
                 max_scopes: int = MAX_SCOPES) -> None:
        """``processes`` makes each timeline's process cache (with the configured bounds)."""
        if max_scopes < 1:
            raise ValueError(f"max_scopes must be at least 1, not {max_scopes}")
        self._new_cache = processes
        self._max_scopes = max_scopes
        self._scopes: OrderedDict[Hashable, Enricher] = OrderedDict()
        self._current: tuple[Hashable, Enricher] | None = None
        #: the origin object of the last non-Windows event and its timeline's enricher: NDJSON replay
        #: gives every event of a file one origin object, so an identity test finds the timeline
        self._origin: dict[str, Any] | None = None
        self._origin_enricher: Enricher | None = None
        self.scopes_opened = 0
        self.scopes_dropped = 0
        #: counters of the timelines dropped, so that statistics stay totals
        self._dropped_events = 0
        self._dropped_errors = 0

    def process(self, event: Event) -> Event:
        """Enrich ``event`` in place from what its timeline recorded before it; return it."""
        origin = event.origin
        if origin is not None and origin is self._origin and event.product != WINDOWS:
            enricher = self._origin_enricher
            assert enricher is not None
            return enricher.process(event)
        enricher = self._enricher(scope_of(event))
        if event.product != WINDOWS:  # a Windows event's timeline depends on its Computer too
            self._origin, self._origin_enricher = origin, enricher
        return enricher.process(event)

    def _enricher(self, scope: Hashable) -> Enricher:
        current = self._current
        if current is not None and current[0] == scope:  # consecutive events of one file: no LRU work
            return current[1]
        scopes = self._scopes
        enricher = scopes.get(scope)
        if enricher is None:
            enricher = Enricher(processes=self._new_cache(), name_uids=False)
            scopes[scope] = enricher
            self.scopes_opened += 1
            while len(scopes) > self._max_scopes:
                _, dropped = scopes.popitem(last=False)
                if dropped is self._origin_enricher:
                    self._origin = self._origin_enricher = None
                stats = dropped.statistics()
                self._dropped_events += stats["events"]
                self._dropped_errors += stats["errors"]
                self.scopes_dropped += 1
        else:
            scopes.move_to_end(scope)
        self._current = (scope, enricher)
        return enricher

    def statistics(self) -> dict[str, Any]:
        """Events and errors over every timeline; timelines opened, dropped and held; the held caches' sizes."""
        live = [e.statistics() for e in self._scopes.values()]
        return {
            "events": self._dropped_events + sum(s["events"] for s in live),
            "errors": self._dropped_errors + sum(s["errors"] for s in live),
            "timelines": len(live),
            "timelines_opened": self.scopes_opened,
            "timelines_dropped": self.scopes_dropped,
            "process_cache_size": sum(s["process_cache_size"] for s in live),
            "process_cache_bytes": sum(s["process_cache_bytes"] for s in live),
            "dns_cache_size": sum(s["dns_cache_size"] for s in live),
        }
