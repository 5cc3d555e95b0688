"""Microsoft-Windows-Kernel-File: creates, writes, renames, deletes, set-information.

The provider names a file only when it is opened (``Create``, event 12:
``FileObject`` + ``FileName``) and in the file-name cache events (``NameCreate``
10 / ``NameDelete`` 11: ``FileKey`` + ``FileName``); writes, set-information and
closes carry only the ``FileObject``/``FileKey`` pointers, and renames only the
new name. So each open is remembered under its ``FileObject`` until its close
(14), each name under its ``FileKey`` until its ``NameDelete``, in bounded maps.

What becomes an event, as Sysmon would report it:

- ``file_event`` (Sysmon 11, FileCreate): a ``CreateNewFile`` (30); a ``Create``
  whose disposition creates or overwrites (supersede, create, overwrite,
  overwrite-if); an open-if ``Create`` at its first ``Write`` (16), the only
  sign the provider gives that such an open made or replaced content. One per
  open.
- ``file_change`` (Sysmon 2): ``SetInformation`` (17) of ``FileBasicInformation``
  (class 4), which is how creation times are set.
- ``file_rename``: ``RenamePath`` (27): ``SourceFilename`` from the open, the
  new ``FilePath`` as ``TargetFilename``.
- ``file_delete`` (Sysmon 23/26): ``DeletePath`` (26).

Directory opens (``FILE_DIRECTORY_FILE``) make no file_event. Paths are
rewritten from NT device form to drive letters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from edr import event as ev
from edr.event import Event, F
from edr.sources.etw.record import Header, as_int, as_str

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

NAME_CREATE: Final = 10
NAME_DELETE: Final = 11
CREATE: Final = 12
CLOSE: Final = 14
WRITE: Final = 16
SET_INFORMATION: Final = 17
DELETE_PATH: Final = 26
RENAME_PATH: Final = 27
CREATE_NEW_FILE: Final = 30

# CreateDisposition, the top byte of CreateOptions
FILE_SUPERSEDE: Final = 0
FILE_OPEN: Final = 1
FILE_CREATE: Final = 2
FILE_OPEN_IF: Final = 3
FILE_OVERWRITE: Final = 4
FILE_OVERWRITE_IF: Final = 5
CREATING_DISPOSITIONS: Final = frozenset({FILE_SUPERSEDE, FILE_CREATE, FILE_OVERWRITE, FILE_OVERWRITE_IF})
FILE_DIRECTORY_FILE: Final = 0x1
FILE_BASIC_INFORMATION: Final = 4


class OpenFile:
    """One open file object: its name, how it was opened, whether it was reported."""

    __slots__ = ("directory", "disposition", "name", "reported")

    def __init__(self, name: str, disposition: int, directory: bool) -> None:
        self.name = name
        self.disposition = disposition
        self.directory = directory
        self.reported = False


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """Kernel-File record -> file events (most records only update the pointer maps)."""
    eid = h.event_id
    if eid in (CREATE, CREATE_NEW_FILE):
        return _create(n, h, d, eid == CREATE_NEW_FILE)
    if eid == CLOSE:
        fo = as_int(d.get("FileObject"))
        if fo is not None:
            n.file_objects.pop(fo)
        return None
    if eid == WRITE:
        return _write(n, h, d)
    if eid == NAME_CREATE:
        key = as_int(d.get("FileKey"))
        if key is not None:
            n.file_keys.set(key, n.devices.to_dos(as_str(d.get("FileName"))))
        return None
    if eid == NAME_DELETE:
        key = as_int(d.get("FileKey"))
        if key is not None:
            n.file_keys.pop(key)
        return None
    if eid == RENAME_PATH:
        return _rename(n, h, d)
    if eid == DELETE_PATH:
        name = n.devices.to_dos(as_str(d.get("FilePath"))) or _name(n, d)
        if not name:
            n.counts["file_unnamed"] += 1
            return None
        return [_event(n, h, d, ev.FILE_DELETE, {F.TARGET_FILENAME: name})]
    if eid == SET_INFORMATION:
        if as_int(d.get("InfoClass")) != FILE_BASIC_INFORMATION:
            return None
        name = _name(n, d)
        if not name:
            n.counts["file_unnamed"] += 1
            return None
        return [_event(n, h, d, ev.FILE_CHANGE, {F.TARGET_FILENAME: name})]
    return None


def _name(n: EtwNormalizer, d: dict[str, Any]) -> str:
    """The name of the file a record is about: its open, else its FileKey's cached name."""
    fo = as_int(d.get("FileObject"))
    if fo is not None:
        entry = n.file_objects.get(fo)
        if entry is not None:
            return entry.name
    key = as_int(d.get("FileKey"))
    if key is not None:
        return n.file_keys.get(key) or ""
    return ""


def _event(n: EtwNormalizer, h: Header, d: dict[str, Any], category: str, fields: dict[str, Any]) -> Event:
    n.subject(h.pid, h, d, fields)
    return n.event(category, fields, h)


def _create(n: EtwNormalizer, h: Header, d: dict[str, Any], new_file: bool) -> list[Event] | None:
    fo = as_int(d.get("FileObject"))
    options = as_int(d.get("CreateOptions")) or 0
    name = n.devices.to_dos(as_str(d.get("FileName")))
    disposition = FILE_CREATE if new_file else (options >> 24) & 0xFF
    entry = n.file_objects.get(fo) if fo is not None else None
    if entry is None or entry.name != name:
        entry = OpenFile(name, disposition, bool(options & FILE_DIRECTORY_FILE) or name.endswith("\\"))
        if fo is not None:
            n.file_objects.set(fo, entry)
    if entry.reported or entry.directory or not name:
        return None
    if new_file or disposition in CREATING_DISPOSITIONS:
        entry.reported = True
        return [_event(n, h, d, ev.FILE_EVENT, {F.TARGET_FILENAME: name})]
    return None


def _write(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    fo = as_int(d.get("FileObject"))
    entry = n.file_objects.get(fo) if fo is not None else None
    if entry is None or entry.reported or entry.directory or entry.disposition != FILE_OPEN_IF:
        return None
    entry.reported = True
    return [_event(n, h, d, ev.FILE_EVENT, {F.TARGET_FILENAME: entry.name})]


def _rename(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    new = n.devices.to_dos(as_str(d.get("FilePath")))
    if not new:
        n.counts["file_unnamed"] += 1
        return None
    old = _name(n, d)
    fields: dict[str, Any] = {F.TARGET_FILENAME: new}
    if old:
        fields[F.SOURCE_FILENAME] = old
    else:
        n.counts["rename_source_unknown"] += 1
    fo = as_int(d.get("FileObject"))
    entry = n.file_objects.get(fo) if fo is not None else None
    if entry is not None:
        entry.name = new
    return [_event(n, h, d, ev.FILE_RENAME, fields)]
