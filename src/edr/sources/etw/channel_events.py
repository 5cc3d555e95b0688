"""Microsoft-Windows-TaskScheduler and Microsoft-Windows-WMI-Activity.

These providers write the ``.../Operational`` channels SigmaHQ's
``service: taskscheduler`` and ``service: wmi`` rules are written for. Each
record becomes the event ``edr replay`` makes of the channel record
(category ``winlog``, the channel's service, the template's properties as
fields plus ``EventID``, ``Channel`` and ``Provider_Name``). WMI-Activity 5861
(a permanent event consumer bound to a filter) is also reported as Sysmon
reports such a binding: ``wmi_event`` with ``EventType`` WmiBindingEvent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from edr import event as ev
from edr.event import Event, F
from edr.sources.etw import providers
from edr.sources.etw.record import Header
from edr.sources.replay.winlog_channels import channel_service

if TYPE_CHECKING:
    from edr.sources.etw.normalize import EtwNormalizer

#: provider GUID -> (Sigma service of its channel, as replay routes it; provider name as the channel shows it)
SERVICES: Final[dict[str, tuple[str | None, str]]] = {
    guid: (channel_service(providers.CHANNELS[guid]), providers.provider_name(guid))
    for guid in (providers.TASK_SCHEDULER, providers.WMI_ACTIVITY)
}
WMI_BINDING: Final = 5861
#: pywintrace's own keys beside the properties
_NOT_PROPERTIES: Final = frozenset({"EventHeader", "Task Name", "Description", "EventExtendedData", "UserData"})


def handle(n: EtwNormalizer, h: Header, d: dict[str, Any]) -> list[Event] | None:
    """Channel-shaped ``winlog`` event (plus ``wmi_event`` for a WMI binding)."""
    service, provider_name = SERVICES[h.provider]
    fields: dict[str, Any] = {
        key: value for key, value in d.items()
        if key not in _NOT_PROPERTIES and isinstance(value, (str, int, float, bool))
    }
    fields.update(EventID=h.event_id, Channel=providers.CHANNELS[h.provider], Provider_Name=provider_name)
    out = [n.event(ev.WINLOG, fields, h, service)]
    if h.provider == providers.WMI_ACTIVITY and h.event_id == WMI_BINDING:
        wmi: dict[str, Any] = {F.EVENT_TYPE: "WmiBindingEvent", F.OPERATION: "Created"}
        for source, target in (("CONSUMER", "Consumer"), ("Namespace", "Namespace"),
                               ("PossibleCause", "Filter"), ("ESS", "ESS")):
            value = d.get(source)
            if isinstance(value, str) and value:
                wmi[target] = value
        n.subject(h.pid, h, d, wmi)
        out.append(n.event(ev.WMI_EVENT, wmi, h))
    return out
