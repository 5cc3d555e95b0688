"""Linux eBPF sensor: bcc tracepoint programs, their loader and the decoder to Events.

- :mod:`.sensor` -- :class:`EbpfSensor` (compile, attach, poll ring buffers)
- :mod:`.decode` -- :class:`Decoder` (raw records -> :class:`edr.event.Event`)
- :mod:`.records` -- record layouts shared with ``bpf/sensor.c``
- :mod:`.host` -- /proc look-ups the decoder needs (cwd, fds, sockets)
- :mod:`.dns_wire` -- DNS message parser
"""
