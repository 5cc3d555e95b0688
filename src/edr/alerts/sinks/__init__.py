"""Alert delivery off the host: syslog and webhook sinks, each with a disk spool.

The local ECS alert file stays the default and the source of truth; a sink
is a copy of the alert stream for a SIEM. Each sink is an actor of the graph
(:mod:`edr.alerts.sinks.actor`), fed from the alert edges, and each of its
destinations has its own queue on disk (:mod:`edr.alerts.sinks.spool`), so a
receiver that is down, slow or refusing costs neither the pipeline nor the
other destinations anything, and loses nothing until its spool is full.
"""
