"""Enrichment: process, user, DNS and container context added to events.

- :mod:`.process_cache` -- :class:`ProcessCache` (fork/exec/exit, bounded)
- :mod:`.seed` -- :func:`seed_cache` (the cache's start state: the processes the platform lists)
- :mod:`.users` -- :class:`UserCache` (uid -> name)
- :mod:`.dns_cache` -- :class:`DnsCache` (address -> queried name, TTL-aware)
- :mod:`.enricher` -- :class:`Enricher`, all of the above behind one call
- :mod:`.replay` -- :class:`ReplayEnricher`, the same over recorded events, one timeline per recording
"""
