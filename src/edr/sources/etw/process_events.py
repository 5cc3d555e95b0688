"""Microsoft-Windows-Kernel-Process: process start/stop and image loads.

- Event 1 (ProcessStart, opcode 1): ``ProcessID``, ``ParentProcessID``,
  ``CreateTime``, ``ImageName`` (an NT device path), ``MandatoryLabel`` (the
  token's integrity SID). No command line, directory or user: those are read
  from the live process (:class:`~edr.sources.etw.host.ProcessFacts`), which
  a process that exits within milliseconds may no longer allow. ``LogonId``
  is known only for the service accounts, whose logon sessions are fixed.
- Event 2 (ProcessStop, opcode 2): ``ProcessID`` and the short image name.
- Event 5 (ImageLoad): ``ProcessID``, ``ImageName``. Windows 11 sends it with
  opcode 0; builds that still use the classic image-load type send opcode 10,
  which is also taken when the record carries an ``ImageName``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from edr import event as ev
from edr.event import Event, F
from edr.sources.etw.record import Header, as_int, as_str, extended_sid, filetime_to_epoch

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

PROCESS_START: Final = 1
PROCESS_STOP: Final = 2
IMAGE_LOAD: Final = 5
#: the classic (MOF) image-load event type older builds report as the opcode
IMAGE_LOAD_OPCODE: Final = 10
#: a live process whose creation time differs from the event's by more is another process (pid reused)
SAME_PROCESS_SECS: Final = 2.0

#: Integrity RIDs (S-1-16-<rid>) -> Sysmon's IntegrityLevel.
INTEGRITY_LEVELS: Final = {
    0: "Untrusted",
    4096: "Low",
    8192: "Medium",
    8448: "Medium",  # medium-plus: Sysmon reports Medium
    12288: "High",
    16384: "System",
    20480: "Protected",
}


#: The fixed logon sessions of the service accounts (their LUIDs never change), by SID and by
#: the English account name psutil reports; Sysmon's ``LogonId`` for any other logon is not in ETW.
WELL_KNOWN_LOGONS: Final = {
    "S-1-5-18": "0x3e7", "S-1-5-19": "0x3e5", "S-1-5-20": "0x3e4",
    "nt authority\\system": "0x3e7", "nt authority\\local service": "0x3e5",
    "nt authority\\network service": "0x3e4",
}


def integrity_level(label: Any) -> str | None:
    """Sysmon's ``IntegrityLevel`` from a mandatory-label SID (``S-1-16-12288``) or its account name."""
    text = as_str(label).strip()
    if not text:
        return None
    if text.upper().startswith("S-1-16-"):
        rid = as_int(text[7:])
        return INTEGRITY_LEVELS.get(rid, text) if rid is not None else None
    # a resolved name: "Mandatory Label\High Mandatory Level"
    name = text.rsplit("\\", 1)[-1]
    if name.endswith(" Mandatory Level"):
        word = name[: -len(" Mandatory Level")]
        return "Medium" if word == "Medium Plus" else word
    return None


def create_time(value: Any) -> float | None:
    """Epoch seconds of ``CreateTime``: a FILETIME integer, or TDH's ISO text for it."""
    ticks = as_int(value) if not isinstance(value, str) or value.strip().isdigit() else None
    if ticks is not None:
        return filetime_to_epoch(ticks)
    if isinstance(value, str):
        # TDH may wrap dates in left-to-right marks; fromisoformat wants at most 6 fraction digits
        text = "".join(ch for ch in value if ch not in "\u200e\u200f").strip().replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:
            digits = "".join(ch for ch in rest if ch.isdigit())
            rest = digits[:6] + rest[len(digits):]
            text = f"{head}.{rest}"
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    return None


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """Kernel-Process record -> process_creation / process_termination / image_load."""
    eid = h.event_id
    if eid == PROCESS_START:
        return _start(n, h, d)
    if eid == PROCESS_STOP:
        return _stop(n, h, d)
    if eid == IMAGE_LOAD or (h.opcode == IMAGE_LOAD_OPCODE and "ImageName" in d):
        return _image_load(n, h, d)
    n.counts["process_ignored"] += 1
    return None


def _start(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event]:
    pid = as_int(d.get("ProcessID"))
    if pid is None:
        pid = h.pid
    ppid = as_int(d.get("ParentProcessID")) or 0
    image = n.devices.to_dos(as_str(d.get("ImageName")))
    started = create_time(d.get("CreateTime"))
    fields: dict[str, Any] = {F.PROCESS_ID: pid, F.IMAGE: image}
    level = integrity_level(d.get("MandatoryLabel"))
    if level:
        fields[F.INTEGRITY_LEVEL] = level
    live = n.describe(pid)
    if live is not None and live.create_time is not None and started is not None \
            and abs(live.create_time - started) > SAME_PROCESS_SECS:
        live = None  # the pid already belongs to another process
        n.counts["describe_pid_reused"] += 1
    command_line = cwd = user = None
    if live is not None:
        command_line, cwd, user = live.command_line, live.current_directory, live.user
    else:
        n.counts["describe_missed"] += 1
    sid = extended_sid(d)
    if not user and sid:
        # the SID ETW attached is the creating thread's: the child's too unless it ran as someone else
        user = n.sids.name(sid)
    logon_id = WELL_KNOWN_LOGONS.get(user.lower()) if user else None
    if logon_id is None and sid:
        logon_id = WELL_KNOWN_LOGONS.get(sid)
    if command_line is not None:
        fields[F.COMMAND_LINE] = command_line
    if cwd:
        fields[F.CURRENT_DIRECTORY] = cwd
    if user:
        fields[F.USER] = user
    if logon_id:
        fields[F.LOGON_ID] = logon_id
    if ppid:
        fields[F.PARENT_PROCESS_ID] = ppid
        parent = n.process(ppid, h.timestamp)
        if parent is not None:
            if parent.image:
                fields[F.PARENT_IMAGE] = parent.image
            if parent.command_line:
                fields[F.PARENT_COMMAND_LINE] = parent.command_line
            if parent.user:
                fields[F.PARENT_USER] = parent.user
    info = n.pe_info(image)
    if info is not None:
        fields.update(info.fields())
    n.processes.exec(pid, image=image, command_line=command_line or "", ts=h.timestamp, ppid=ppid,
                     user=user, cwd=cwd)
    return [n.event(ev.PROCESS_CREATION, fields, h)]


def _stop(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event]:
    pid = as_int(d.get("ProcessID"))
    if pid is None:
        pid = h.pid
    info = n.processes.get(pid)
    fields: dict[str, Any] = {F.PROCESS_ID: pid}
    image = info.image if info is not None and info.image else as_str(d.get("ImageName"))
    if image:
        fields[F.IMAGE] = image
    if info is not None and info.user:
        fields[F.USER] = info.user
    n.processes.exit(pid, h.timestamp)
    return [n.event(ev.PROCESS_TERMINATION, fields, h)]


def _image_load(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event]:
    pid = as_int(d.get("ProcessID"))
    if pid is None:
        pid = h.pid
    loaded = n.devices.to_dos(as_str(d.get("ImageName")))
    info = n.processes.get(pid)
    if (info is None or not info.image) and loaded.lower().endswith(".exe"):
        # A process started before the session: its first .exe mapping is its own image.
        if info is None:
            n.processes.exec(pid, image=loaded, command_line="", ts=h.timestamp)
        else:
            info.image = loaded
        n.counts["images_learned"] += 1
    fields: dict[str, Any] = {F.IMAGE_LOADED: loaded}
    n.subject(pid, h, d, fields)
    return [n.event(ev.IMAGE_LOAD, fields, h)]
