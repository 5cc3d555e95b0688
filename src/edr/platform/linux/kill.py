"""Race-free process termination on Linux: pidfd, identity check through it, then SIGKILL.

A bare ``kill(pid)`` may hit an unrelated process that reused the number
after the alerted one exited. Instead: open a pidfd (it refers to one
process, never to a later holder of the number), read the start time and
executable from /proc, then confirm through the pidfd that the process is
still alive -- which proves the /proc reads described the pidfd's process,
since its number cannot be reused while it lives -- and only then signal
the pidfd.

What identifies the process the alert named
-------------------------------------------

A PID names a process only while it lives; the kernel's start time of the
task (``task->start_boottime``, field 22 of /proc/<pid>/stat, clock ticks
since boot) tells one holder of a number from the next, because a reuse is a
new fork.  The eBPF decoder stamps ``ProcessStartTime`` with that clock and
unit: the time of the fork the sensor recorded, or /proc's value for a
process forked before the sensor started.  It is the *fork* time on
purpose: an exec keeps the task's start time, so a process that forks,
waits and only then execs the alerted program (``sh -c 'sleep 3; exec
evil'``) is still recognised -- the exec time would make it look like a
reused PID and let it run.

- **One tick of slack, one way.**  The sensor cannot read
  ``start_boottime`` without kernel struct offsets; it reads the same clock
  (``bpf_ktime_get_boot_ns``) in ``sched_process_fork``, microseconds after
  ``copy_process`` set ``start_boottime``.  Truncated to ticks, the stamp is
  therefore /proc's value or, when a tick boundary fell in between, the
  next one: ``0 <= stamp - actual <= START_TICKS_SLACK`` (1).  Anything else
  -- two ticks later, or any tick earlier -- is another process.  (Sources
  that read /proc themselves, like the memory sweep, stamp the exact value.)
- **What the slack lets through.**  A different process holding the same
  number and started in the same or the previous tick would pass the time
  check.  For that the alerted process must exit and the PID counter wrap
  around all free PIDs within ~20 ms, which a fork rate cannot do;
  choosing a PID (``ns_last_pid``, ``clone3`` ``set_tid``) needs
  CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the PID namespace the agent
  sees, and the executable must match as well.  The start time compared
  exactly would have the same weakness within one tick.
- **Exec after exec** keeps the start time, so the time check alone
  cannot tell ``A`` from ``A; exec B`` in the same process.  The executable
  check does: /proc/<pid>/exe names the image running now, and it must be
  the alert's ``Image``.  A process that has since exec'd another program is
  a mismatch (it no longer runs what was detected); one that exec'd the
  same program again is killed, rightly, since it runs the detected image.
  No exec counter is needed for this: the question is "same task, still
  running that image", and start time plus executable answer both halves.
- **Clock.**  /proc shows start times shifted by the reader's time
  namespace (its boottime offset); the BPF clock is the host's.  The agent
  runs in the initial time namespace, where both agree; run in another one,
  every tick comparison would fail: nothing is killed, never the wrong process.
- **Epoch and event-time evidence** (a float ``ProcessStartTime`` from older
  recordings or other sources, or none at all) is still accepted, with the
  looser checks below; the live Linux pipeline no longer produces it.
"""

from __future__ import annotations

import os
import select
import signal
from typing import Final

from edr.platform.kill import FAILED, GONE, MISMATCH, TERMINATED, KillResult
from edr.platform.linux import procfs

#: Ticks a recorded start time may exceed /proc's: the sensor stamps the fork just after the kernel did.
START_TICKS_SLACK: Final = 1
#: Slack when the only identity evidence is the event time (clock granularity, /proc/stat btime in s).
START_SLACK_SECS: Final = 2.0
#: Tolerance comparing an epoch start time with /proc's (btime has one-second resolution).
EPOCH_TOLERANCE_SECS: Final = 1.5
#: How long to wait for the kernel to report the killed process gone.
EXIT_WAIT_MS: Final = 2000


def verify_identity(pid: int, image: str, start_ticks: int | None, event_time: float | None,
                    start_epoch: float | None = None) -> str | None:
    """Why process ``pid`` is not the one alerted on, or None if it is (reads /proc; no pidfd)."""
    actual = procfs.start_ticks(pid)
    exe = procfs.executable(pid)
    if actual is None or exe is None:
        return "process is gone"
    btime = procfs.boot_time()
    started = btime + actual / procfs.clock_ticks() if btime is not None else None
    if start_ticks is not None:
        # the stamp may be one tick after /proc's, never before (see the module docstring)
        if not 0 <= start_ticks - actual <= START_TICKS_SLACK:
            return f"start time {actual} != {start_ticks} (pid reused)"
    elif start_epoch is not None:
        if started is None:
            return "cannot read boot time to check the start time"
        if abs(started - start_epoch) > EPOCH_TOLERANCE_SECS:
            return f"start time {started:.2f} != {start_epoch:.2f} (pid reused)"
    elif event_time is not None:
        if started is None:
            return "cannot read boot time to check the start time"
        if started > event_time + START_SLACK_SECS:
            return f"process started after the alerted event ({started:.2f} > {event_time:.2f}; pid reused)"
    else:
        return "no start time or event time to verify the process identity"
    if not procfs.same_executable(image, exe):
        return f"executable {exe!r} is not {image!r}"
    return None


def terminate(pid: int, image: str, start_ticks: int | None, event_time: float | None,
              start_epoch: float | None = None) -> KillResult:
    """SIGKILL ``pid`` if it is still the process alerted on (start time and executable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return KillResult(GONE, "no such process")
    except OSError as exc:
        return KillResult(FAILED, f"pidfd_open: {exc.strerror or exc}")
    try:
        try:
            reason = verify_identity(pid, image, start_ticks, event_time, start_epoch)
        except PermissionError as exc:
            return KillResult(FAILED, f"cannot confirm the process's identity ({exc.strerror or exc}: "
                                      "reading another user's /proc/PID/exe needs CAP_SYS_PTRACE)")
        try:
            signal.pidfd_send_signal(fd, 0)
        except ProcessLookupError:
            return KillResult(GONE, "exited during the identity check")
        if reason == "process is gone":
            return KillResult(GONE, "exited (zombie) before the kill")
        if reason is not None:
            return KillResult(MISMATCH, reason)
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            return KillResult(GONE, "exited before the kill")
        except OSError as exc:
            return KillResult(FAILED, f"pidfd_send_signal: {exc.strerror or exc}")
        # A pidfd polls readable once the process has exited.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        exited = bool(poller.poll(EXIT_WAIT_MS))
        return KillResult(TERMINATED, "" if exited else "SIGKILL sent; exit not yet observed")
    finally:
        os.close(fd)
