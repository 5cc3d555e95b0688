"""User names from uids, cached."""

from __future__ import annotations

from collections.abc import Callable

from edr.platform import current


class UserCache:
    """uid -> user name through the platform's account database, cached (unknown uids as their number).

    ``lookup`` (default: :meth:`~edr.platform.facade.Platform.user_name`,
    the passwd database on Linux) is injectable for tests.  A bounded cache:
    when full it is cleared, as uids are few and a refill is cheap.
    """

    def __init__(self, lookup: Callable[[int], str | None] | None = None, max_entries: int = 4096) -> None:
        self._lookup = lookup if lookup is not None else current().user_name
        self._names: dict[int, str] = {}
        #: ``cached(uid)``: the name of ``uid`` if it is cached, else None (no look-up, no miss counted).
        #: The dict's own ``get``, bound once, for callers that ask per event: a hit costs a third of
        #: a call to :meth:`name`, which they call on a miss
        self.cached: Callable[[int], str | None] = self._names.get
        self._max = max_entries
        self.misses = 0

    def name(self, uid: int) -> str:
        """The user name of ``uid`` (its decimal form if the passwd database has none)."""
        hit = self._names.get(uid)
        if hit is not None:
            return hit
        self.misses += 1
        try:
            found = self._lookup(uid)
        except Exception:  # an NSS backend failing must not stop the pipeline
            found = None
        name = found if found else str(uid)
        if len(self._names) >= self._max:
            self._names.clear()
        self._names[uid] = name
        return name

    def __len__(self) -> int:
        return len(self._names)
