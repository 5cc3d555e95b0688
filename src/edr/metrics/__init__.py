"""What operators can see of a running agent: Prometheus metrics, telemetry-loss alerts, rule costs.

- :mod:`~edr.metrics.snapshot`: the agent's statistics at one moment, read from the supervisor (sans-IO);
- :mod:`~edr.metrics.families`: that snapshot as Prometheus metric families (sans-IO);
- :mod:`~edr.metrics.server`: the HTTP endpoint, served from a thread, reading a snapshot per scrape;
- :mod:`~edr.metrics.coverage`: when loss or drops deserve an ``EDR-TELEMETRY-LOSS`` alert (sans-IO),
  and :mod:`~edr.metrics.actor` the actor that raises them;
- :mod:`~edr.metrics.top`: ``edr rules top``, the costliest Sigma rules of a running agent.
"""
