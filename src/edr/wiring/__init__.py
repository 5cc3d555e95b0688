"""Wiring: how the configuration becomes a running graph of actors.

The one layer that knows every package. It builds what actors share once per
run (:class:`~edr.wiring.context.Shared`: detection engines, YARA rules, the
process cache), names the actor kinds graphs may use (:data:`~edr.wiring.kinds.KINDS`),
builds each actor from the configuration with explicit arguments
(:mod:`~edr.wiring.builders`), and finds each mode's graph
(:mod:`~edr.wiring.graphs`). Actors themselves import only the runtime and
their own cores, never this package, so no package imports one that imports it.
"""
