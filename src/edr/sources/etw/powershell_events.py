"""Microsoft-Windows-PowerShell: 4103 (module logging) and 4104 (script block logging).

Both become the events ``edr replay`` makes of the same records in the
``Microsoft-Windows-PowerShell/Operational`` channel (category ``ps_module`` /
``ps_script``, service ``powershell``, the template's fields plus
``EventID``, ``Channel`` and ``Provider_Name``), so SigmaHQ's rules see the same
thing live and replayed.

A script block longer than one event's payload comes as several 4104 records
sharing a ``ScriptBlockId``, numbered ``MessageNumber`` 1..``MessageTotal``.
:class:`ScriptBlocks` holds the parts and emits one ``ps_script`` whose
``ScriptBlockText`` is the whole script once every part has come. A block
whose parts stop coming (lost events) is emitted with what arrived after
``timeout`` seconds, when more than ``capacity`` blocks are pending, or at the
end of the stream, with ``ScriptBlockIncomplete`` set; nothing received is
dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from edr.event import Event
from edr.sources.etw import providers
from edr.sources.etw.record import Header, as_int, as_str
from edr.sources.replay.winlog_channels import POWERSHELL_CATEGORIES, channel_service

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

MODULE_LOGGING: Final = 4103
SCRIPT_BLOCK: Final = 4104
#: the service and categories replay gives the Operational channel's records
SERVICE: Final = channel_service(providers.CHANNELS[providers.POWERSHELL])
MODULE_CATEGORY: Final = POWERSHELL_CATEGORIES[MODULE_LOGGING]
SCRIPT_CATEGORY: Final = POWERSHELL_CATEGORIES[SCRIPT_BLOCK]
PROVIDER_NAME: Final = "Microsoft-Windows-PowerShell"


def channel_fields(event_id: int, header_pid: int) -> dict[str, Any]:
    """The System-block fields a channel record of this provider carries."""
    return {"EventID": event_id, "Channel": providers.CHANNELS[providers.POWERSHELL],
            "Provider_Name": PROVIDER_NAME, "ProcessId": header_pid}


class _Pending:
    __slots__ = ("first_seen", "header", "parts", "path", "pid", "total")

    def __init__(self, header: Header, total: int, path: str) -> None:
        self.header = header
        self.total = total
        self.path = path
        self.parts: dict[int, str] = {}
        self.first_seen = header.timestamp
        self.pid = header.pid


class ScriptBlocks:
    """Script blocks waiting for their other parts, at most ``capacity`` of them."""

    def __init__(self, capacity: int, timeout: float) -> None:
        self.capacity = capacity
        self.timeout = timeout
        self._pending: dict[str, _Pending] = {}
        self.reassembled = 0
        self.incomplete = 0

    def add(self, n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event]:
        """One 4104 record; the events of the blocks it completes (or pushes out)."""
        text = as_str(d.get("ScriptBlockText"))
        number = as_int(d.get("MessageNumber")) or 1
        total = as_int(d.get("MessageTotal")) or 1
        block_id = as_str(d.get("ScriptBlockId"))
        if total <= 1 or not block_id:
            return [self._event(n, h, d, text, block_id, as_str(d.get("Path")), total, complete=True)]
        pending = self._pending.get(block_id)
        if pending is None:
            pending = self._pending[block_id] = _Pending(h, total, as_str(d.get("Path")))
        pending.parts[number] = text
        out: list[Event] = []
        if len(pending.parts) >= pending.total:
            del self._pending[block_id]
            self.reassembled += 1
            out.append(self._emit(n, block_id, pending, complete=True))
        while len(self._pending) > self.capacity:
            oldest = next(iter(self._pending))
            out.append(self._emit(n, oldest, self._pending.pop(oldest), complete=False))
        return out

    def flush(self, n: EtwNormalizer, now: float | None) -> list[Event]:
        """Blocks pending for more than ``timeout`` seconds before ``now`` (every block if None)."""
        out: list[Event] = []
        for block_id in list(self._pending):
            pending = self._pending[block_id]
            if now is None or now - pending.first_seen > self.timeout:
                del self._pending[block_id]
                out.append(self._emit(n, block_id, pending, complete=False))
        return out

    def _emit(self, n: EtwNormalizer, block_id: str, p: _Pending, complete: bool) -> Event:
        text = "".join(p.parts[i] for i in sorted(p.parts))
        if not complete:
            self.incomplete += 1
        return self._event(n, p.header, {}, text, block_id, p.path, p.total, complete)

    def _event(self, n: EtwNormalizer, h: Header, d: dict[str, Any], text: str, block_id: str, path: str,
               total: int, complete: bool) -> Event:
        fields = channel_fields(SCRIPT_BLOCK, h.pid)
        fields.update(MessageNumber=1, MessageTotal=total, ScriptBlockText=text, ScriptBlockId=block_id)
        if path:
            fields["Path"] = path
        if not complete:
            fields["ScriptBlockIncomplete"] = "true"
        return n.event(SCRIPT_CATEGORY, fields, h, SERVICE)

    def __len__(self) -> int:
        return len(self._pending)

    def statistics(self) -> dict[str, int]:
        """Blocks pending, reassembled from several parts, emitted incomplete."""
        return {"pending": len(self._pending), "reassembled": self.reassembled, "incomplete": self.incomplete}


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """PowerShell record -> ps_module / ps_script (other PowerShell events are ignored)."""
    if h.event_id == SCRIPT_BLOCK:
        return n.script_blocks.add(n, h, d)
    if h.event_id == MODULE_LOGGING:
        fields = channel_fields(MODULE_LOGGING, h.pid)
        for name in ("ContextInfo", "UserData", "Payload"):
            value = d.get(name)
            if isinstance(value, str):
                fields[name] = value
        return [n.event(MODULE_CATEGORY, fields, h, SERVICE)]
    return None
