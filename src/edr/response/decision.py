"""What to do about an alert (sans-IO): severity gate, target extraction, safety checks, log text.

Modes, as the seed's "Active Response" describes them: disabled (nothing is
queued), dry-run (log ``would terminate``), prevention (terminate after the
platform layer re-checks the process identity).

Severity after mapping: YARA alerts are always ``critical``; Sigma alerts
carry their rule's level, IOC alerts ``ioc.default_severity`` and simple
rules their own severity, all already in ``Alert.severity``.
``response.min_severity`` applies to the mapped severity.
"""

from __future__ import annotations

import os
from typing import Any, Final

import attrs

from edr.detect.alert import WRITTEN_FILE, Alert
from edr.event import F
from edr.response.allowlist import ImageAllowlist
from edr.severity import severity_rank

#: PIDs 0..4 are the kernel / idle / System / init-like processes on both platforms.
MAX_SYSTEM_PID: Final = 4

SKIP: Final = "skip"
DRY_RUN: Final = "dry_run"
KILL: Final = "kill"


def effective_severity(alert: Alert) -> str:
    """The severity response decisions use: YARA is always critical, others their own."""
    return "critical" if alert.engine == "yara" else alert.severity.lower()


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip(), 0)  # Windows events may say "0x1a2b"
    except ValueError:
        return None


@attrs.frozen
class ResponseTarget:
    """The process an alert points at, and how to make sure it is still that process.

    The event's ``ProcessStartTime`` is read by type: an integer is
    ``start_ticks``, the kernel's start time of the process (Linux: clock
    ticks since boot in the unit of field 22 of /proc/<pid>/stat, taken at
    the fork, so it holds across a late exec, and allowed to be one tick
    after /proc's value, see :mod:`edr.platform.linux.kill`; Windows:
    FILETIME, 100 ns since 1601, compared exactly); a float (or decimal
    string) is ``start_epoch``, seconds since the epoch, compared within a
    second (boot time is only known to the second). ``event_time`` is the
    event's own time, the fallback check when neither is present: the
    process must have started by then.
    """

    pid: int | None
    image: str | None
    start_ticks: int | None
    event_time: float | None
    rule_id: str
    rule_name: str
    engine: str
    severity: str
    start_epoch: float | None = None
    written_file: str | None = None


def _start_time(value: Any) -> tuple[int | None, float | None]:
    """(ticks, epoch seconds) from a ``ProcessStartTime`` value: int = ticks, float = epoch."""
    if value is None or isinstance(value, bool):
        return None, None
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        return None, value
    text = str(value).strip()
    if "." in text:
        try:
            return None, float(text)
        except ValueError:
            return None, None
    return _as_int(text), None


def target_of(alert: Alert) -> ResponseTarget:
    """Pid, image and identity evidence of the process ``alert``'s event names."""
    event = alert.event
    fields = event.fields if event is not None else {}
    image = fields.get(F.IMAGE)
    ticks, epoch = _start_time(fields.get(F.PROCESS_START_TIME))
    return ResponseTarget(
        pid=_as_int(fields.get(F.PROCESS_ID)),
        image=image if isinstance(image, str) and image else None,
        start_ticks=ticks, start_epoch=epoch,
        event_time=event.timestamp if event is not None and event.timestamp > 0 else None,
        rule_id=alert.rule_id, rule_name=alert.rule_name, engine=alert.engine,
        severity=effective_severity(alert),
        written_file=str(alert.ecs.get("file.path", "")) if alert.ecs.get("edr.scan.object") == WRITTEN_FILE
        else None,
    )


def quote(text: str | None) -> str:
    """``"text"`` with control characters escaped (an image name must not forge log lines)."""
    if text is None:
        return '""'
    return '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'


@attrs.frozen
class Decision:
    """``action`` (skip, dry_run, kill), the reason for a skip, and the log message."""

    action: str
    reason: str
    message: str


class ResponsePolicy:
    """The configured response: mode, severity floor, allowlists, protected pids.

    The protected processes are injected, never looked up here: ``protected_pids``
    at construction (default: this process), then :meth:`protect` whenever the
    caller has gathered them again (the responder does before each decision,
    see :mod:`edr.platform.protected`). PIDs 0..``MAX_SYSTEM_PID`` are always
    protected.
    """

    def __init__(self, *, enabled: bool, prevention: bool, min_severity: str, allowlist: ImageAllowlist,
                 protected_pids: frozenset[int] | None = None) -> None:
        self.enabled = enabled
        self.prevention = prevention
        self.min_severity = min_severity
        self.min_rank = severity_rank(min_severity)
        self.allowlist = allowlist
        self.protected_pids = protected_pids if protected_pids is not None else frozenset({os.getpid()})
        #: pid -> why it is protected ("parent", "ancestor+init"...), for the skip message
        self.protected_roles: dict[int, str] = {}

    def protect(self, roles: dict[int, str]) -> None:
        """Replace the protected set: exactly the pids of ``roles`` (pid -> why), named in skip messages."""
        self.protected_roles = dict(roles)
        self.protected_pids = frozenset(self.protected_roles)

    def admits(self, alert: Alert) -> bool:
        """Whether ``alert`` is worth queueing: response enabled and severity at least the floor."""
        return self.enabled and severity_rank(effective_severity(alert)) >= self.min_rank

    def decide(self, target: ResponseTarget) -> Decision:
        """The safety checks, in the seed's order, then dry-run or kill."""
        pid, image = target.pid, target.image
        where = f"pid={pid} image={quote(image)}"
        if pid is None:
            return Decision(SKIP, "missing pid",
                            f"Active response skipped: missing pid rule={quote(target.rule_name)}")
        if pid <= MAX_SYSTEM_PID or pid in self.protected_pids:
            role = self.protected_roles.get(pid)
            return Decision(SKIP, "protected pid",
                            f"Active response skipped: protected pid {where}" + (f" role={role}" if role else ""))
        if image is None:
            return Decision(SKIP, "missing image",
                            f"Active response skipped: missing image {where} rule={quote(target.rule_name)}")
        if self.allowlist.match(image):
            return Decision(SKIP, "allowlisted",
                            f"Active response skipped: allowlisted {where}")
        if target.written_file is not None:
            # The file matched, not the process: its writer may be a package
            # manager or a copy.  Killing happens when the file itself runs
            # (its exec is scanned and alerts on that process).
            return Decision(SKIP, "written file",
                            f"Active response skipped: written file {where} file={quote(target.written_file)}")
        if not self.prevention:
            return Decision(DRY_RUN, "", would_terminate(target))
        return Decision(KILL, "", "")


def would_terminate(target: ResponseTarget, *, breaker_open: bool = False) -> str:
    """The dry-run line for ``target``; ``breaker_open``: logged instead of a kill because the response
    circuit breaker is open (see :mod:`edr.response.budget`)."""
    return (f"Active response would terminate process pid={target.pid} image={quote(target.image)} dry_run=true"
            + (f" breaker=open rule={quote(target.rule_name)}" if breaker_open else ""))
