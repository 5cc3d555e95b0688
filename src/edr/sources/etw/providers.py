"""The ETW providers the Windows sensor enables: names, GUIDs, keywords, event ids.

Data only. GUIDs are written the way :mod:`edr.sources.etw.record` normalizes
pywintrace's ``EventHeader['ProviderId']`` (lower case, no braces); keyword
masks are those of each provider's manifest (``wevtutil gp <name> /ge``).
"""

from __future__ import annotations

from typing import Final

import attrs

KERNEL_PROCESS: Final = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"
KERNEL_FILE: Final = "edd08927-9cc4-4e65-b970-c2560fb5c289"
KERNEL_NETWORK: Final = "7dd42a49-5329-4832-8dfd-43d979153a88"
KERNEL_REGISTRY: Final = "70eb4f03-c1de-4f73-a051-33d13d5413bd"
DNS_CLIENT: Final = "1c95126e-7eea-49a9-a3fe-a378b03ddb4d"
POWERSHELL: Final = "a0c1853b-5c40-4b15-8766-3cf1c58f985a"
TASK_SCHEDULER: Final = "de7b24ea-73c8-4a09-985d-5bdadcfa9017"
WMI_ACTIVITY: Final = "1418ef04-b0b4-4623-bf7e-d74ab47bbdaa"

#: ``TRACE_LEVEL_VERBOSE``: PowerShell logs ordinary script blocks (4104) at verbose.
LEVEL_VERBOSE: Final = 5


@attrs.frozen
class ProviderSpec:
    """One provider of the session: what pywintrace's ``ProviderInfo`` is built from.

    ``keywords`` is the any-keyword mask (0 = every event of the provider).
    ``sid`` asks ETW to attach the SID of the thread that raised each event
    (``EVENT_ENABLE_PROPERTY_SID``), which pywintrace renders as
    ``EventExtendedData['SID']``: the user of events whose properties name none.
    """

    name: str
    guid: str
    keywords: int
    sid: bool = True
    level: int = LEVEL_VERBOSE

    @property
    def braced_guid(self) -> str:
        """``{GUID}``, the form ``etw.GUID`` (CLSIDFromString) parses."""
        return "{" + self.guid.upper() + "}"


#: Every provider the sensor knows, by manifest name.
PROVIDERS: Final[dict[str, ProviderSpec]] = {
    p.name: p
    for p in (
        # WINEVENT_KEYWORD_PROCESS (0x10) | WINEVENT_KEYWORD_IMAGE (0x40)
        ProviderSpec("Microsoft-Windows-Kernel-Process", KERNEL_PROCESS, 0x10 | 0x40),
        # FILENAME 0x10, FILEIO 0x20, CREATE 0x80, WRITE 0x200, DELETE_PATH 0x400,
        # RENAME_SETLINK_PATH 0x800, CREATE_NEW_FILE 0x1000 (READ 0x100 and OP_END 0x40 left out: volume)
        ProviderSpec("Microsoft-Windows-Kernel-File", KERNEL_FILE,
                     0x10 | 0x20 | 0x80 | 0x200 | 0x400 | 0x800 | 0x1000),
        # KERNEL_NETWORK_KEYWORD_IPV4 0x10 | IPV6 0x20
        ProviderSpec("Microsoft-Windows-Kernel-Network", KERNEL_NETWORK, 0x10 | 0x20, sid=False),
        # SetValueKey 0x100, DeleteValueKey 0x200, CreateKey 0x1000, OpenKey 0x2000, DeleteKey 0x4000
        ProviderSpec("Microsoft-Windows-Kernel-Registry", KERNEL_REGISTRY, 0x100 | 0x200 | 0x1000 | 0x2000 | 0x4000),
        ProviderSpec("Microsoft-Windows-DNS-Client", DNS_CLIENT, 0),
        # Runspace 0x1 (4104) | Cmdlets 0x20 (4103)
        ProviderSpec("Microsoft-Windows-PowerShell", POWERSHELL, 0x1 | 0x20),
        ProviderSpec("Microsoft-Windows-TaskScheduler", TASK_SCHEDULER, 0),
        ProviderSpec("Microsoft-Windows-WMI-Activity", WMI_ACTIVITY, 0),
    )
}

#: provider GUID -> manifest name (for statistics and messages).
NAMES: Final[dict[str, str]] = {p.guid: p.name for p in PROVIDERS.values()}

#: The Event Log channel each non-kernel provider writes; its records are
#: rendered the way ``edr replay`` renders that channel, so SigmaHQ's
#: ``service:`` rules see the same fields live.
CHANNELS: Final[dict[str, str]] = {
    POWERSHELL: "Microsoft-Windows-PowerShell/Operational",
    TASK_SCHEDULER: "Microsoft-Windows-TaskScheduler/Operational",
    WMI_ACTIVITY: "Microsoft-Windows-WMI-Activity/Operational",
    DNS_CLIENT: "Microsoft-Windows-DNS Client Events/Operational",
}


def provider_name(guid: str) -> str:
    """The manifest name of ``guid``, or the GUID itself for a provider this module does not list."""
    return NAMES.get(guid, guid)
