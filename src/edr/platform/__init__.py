"""The platform seam: what edr needs to know about, and do on, the operating system it runs on.

Ask :func:`current` (``edr.platform.current().name``, ``.terminate(...)``,
``.resource_usage()``...); see :class:`~edr.platform.facade.Platform` for
everything it answers. Private files (alerts, logs, caches, the instance
lock) are :mod:`edr.platform.private_files`, which is this platform's
implementation of one API.

- :mod:`.linux` -- /proc, the passwd database, cgroups, pidfd, flock, POSIX
  modes and ``O_NOFOLLOW``, systemd's sd_notify
- :mod:`.windows` -- Win32 process handles, TerminateProcess, ACLs through
  pywin32, msvcrt locks; import-safe everywhere (Windows modules are
  imported inside the functions that call them)
- :mod:`.protected` -- the processes the responder never kills (psutil, both)
- :mod:`.kill` -- :class:`~edr.platform.kill.KillResult`, what a termination did
- :mod:`.facts` -- the plain records the facade returns

``edr.platform`` imports nothing of edr outside itself, so every layer may
depend on it.
"""

from edr.platform.facade import LINUX, WINDOWS, Platform, ServiceNotifier, current, for_platform

__all__ = ["LINUX", "WINDOWS", "Platform", "ServiceNotifier", "current", "for_platform"]
