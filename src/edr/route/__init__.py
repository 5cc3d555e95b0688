"""Routing: the process-lifecycle priority lane, the bulk lane, connection aggregation.

- :mod:`.router` -- the router actor and its sans-IO split
- :mod:`.aggregation` -- :class:`ConnectionAggregator` (identical connections within a window)
"""
