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
    """One open file object: its name as the kernel gave it, how it was opened, whether it was reported.

    Most opens are of existing files and never named in an event, so the
    drive-letter form is made only when asked for (:meth:`dos`).
    """

    __slots__ = ("_dos", "directory", "disposition", "raw", "reported")

    def __init__(self, raw: str, disposition: int, directory: bool) -> None:
        self.raw = raw
        self.disposition = disposition
        self.directory = directory
        self.reported = False
        self._dos: str | None = None

    def dos(self, n: EtwNormalizer) -> str:
        """The name with its drive letter."""
        if self._dos is None:
            self._dos = n.devices.to_dos(self.raw)
        return self._dos

    def rename(self, dos: str) -> None:
        """The file now has this (drive-letter) name."""
        self.raw = self._dos = dos


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """Kernel-File record -> file events (most records only update the pointer maps)."""
    eid = h.event_id
    if eid in (CREATE, CREATE_NEW_FILE):
        return _create(n, h, d, eid == CREATE_NEW_FILE)
    if eid == CLOSE:
        # pointers are only ever map keys: used as delivered (all one form in a session)
        fo = d.get("FileObject")
        if fo is not None:
            n.file_objects.pop(fo)
        return None
    if eid == WRITE:
        return _write(n, h, d)
    if eid == NAME_CREATE:
        key = d.get("FileKey")
        if key is not None:
            n.file_keys.set(key, as_str(d.get("FileName")))
        return None
    if eid == NAME_DELETE:
        key = d.get("FileKey")
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
    """The drive-letter name of the file a record is about: its open, else its FileKey's cached name."""
    fo = d.get("FileObject")
    if fo is not None:
        entry = n.file_objects.get(fo)
        if entry is not None:
            return entry.dos(n)
    key = d.get("FileKey")
    if key is not None:
        return n.devices.to_dos(n.file_keys.get(key) or "")
    return ""


def _event(n: EtwNormalizer, h: Header, d: dict[str, Any], category: str, fields: dict[str, Any]) -> Event:
    n.subject(h.pid, h, d, fields)
    return n.event(category, fields, h)


def _create(n: EtwNormalizer, h: Header, d: dict[str, Any], new_file: bool) -> list[Event] | None:
    fo = d.get("FileObject")
    options = as_int(d.get("CreateOptions")) or 0
    raw = as_str(d.get("FileName"))
    disposition = FILE_CREATE if new_file else (options >> 24) & 0xFF
    entry = n.file_objects.get(fo) if fo is not None else None
    if entry is None or entry.raw != raw:
        entry = OpenFile(raw, disposition, bool(options & FILE_DIRECTORY_FILE) or raw.endswith("\\"))
        if fo is not None:
            n.file_objects.set(fo, entry)
    if entry.reported or entry.directory or not raw:
        return None
    if new_file or disposition in CREATING_DISPOSITIONS:
        entry.reported = True
        return [_event(n, h, d, ev.FILE_EVENT, {F.TARGET_FILENAME: entry.dos(n)})]
    return None


def _write(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    fo = d.get("FileObject")
    entry = n.file_objects.get(fo) if fo is not None else None
    if entry is None or entry.reported or entry.directory or entry.disposition != FILE_OPEN_IF:
        return None
    entry.reported = True
    return [_event(n, h, d, ev.FILE_EVENT, {F.TARGET_FILENAME: entry.dos(n)})]


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
    fo = d.get("FileObject")
    entry = n.file_objects.get(fo) if fo is not None else None
    if entry is not None:
        entry.rename(new)
    return [_event(n, h, d, ev.FILE_RENAME, fields)]
