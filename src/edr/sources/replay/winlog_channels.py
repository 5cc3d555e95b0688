"""Windows event log vocabulary: Sysmon event ids and channels -> Sigma logsources.

The tables follow SigmaHQ's own logsource mapping (``logsource-mapping-thor.yml``
in the SigmaHQ repository): Sysmon event ids become Sigma categories, other
channels become Sigma services. They are data, kept apart from the record
normalizer so that both the replay reader and the ETW source can use them.
"""

from __future__ import annotations

from typing import Final

from edr import event as ev

SYSMON_CHANNEL: Final = "Microsoft-Windows-Sysmon/Operational"
SYSMON_SERVICE: Final = "sysmon"

#: Sysmon event id -> Sigma category. 12/13/14 are refined by ``EventType``
#: (see :func:`sysmon_registry_category`); rules with ``category: registry_event``
#: are routed to all registry categories by the Sigma engine.
SYSMON_CATEGORIES: Final[dict[int, str]] = {
    1: ev.PROCESS_CREATION,
    2: ev.FILE_CHANGE,
    3: ev.NETWORK_CONNECTION,
    4: "sysmon_status",
    5: ev.PROCESS_TERMINATION,
    6: ev.DRIVER_LOAD,
    7: ev.IMAGE_LOAD,
    8: ev.CREATE_REMOTE_THREAD,
    9: ev.RAW_ACCESS_THREAD,
    10: ev.PROCESS_ACCESS,
    11: ev.FILE_EVENT,
    12: ev.REGISTRY_ADD,
    13: ev.REGISTRY_SET,
    14: ev.REGISTRY_RENAME,
    15: ev.CREATE_STREAM_HASH,
    16: "sysmon_status",
    17: ev.PIPE_CREATED,
    18: ev.PIPE_CREATED,
    19: ev.WMI_EVENT,
    20: ev.WMI_EVENT,
    21: ev.WMI_EVENT,
    22: ev.DNS_QUERY,
    23: ev.FILE_DELETE,
    24: "clipboard_change",
    25: ev.PROCESS_TAMPERING,
    26: ev.FILE_DELETE,
    27: "file_block_executable",
    28: "file_block_shredding",
    29: "file_executable_detected",
    255: "sysmon_error",
}


def sysmon_registry_category(event_id: int, event_type: str | None) -> str:
    """Category of a Sysmon registry event (12, 13, 14) as SigmaHQ splits them.

    Event 12 carries key creation and deletion alike; SigmaHQ's
    ``registry_delete`` rules expect the deletions, ``registry_add`` the rest.
    """
    if event_id == 12 and event_type is not None and event_type.lower().startswith("delete"):
        return ev.REGISTRY_DELETE
    return SYSMON_CATEGORIES[event_id]


#: PowerShell event id -> Sigma category (Operational 4103/4104, classic 400/600/800).
POWERSHELL_CATEGORIES: Final[dict[int, str]] = {
    4103: ev.PS_MODULE,
    4104: ev.PS_SCRIPT,
}
POWERSHELL_CLASSIC_CATEGORIES: Final[dict[int, str]] = {
    400: ev.PS_CLASSIC_START,
    600: "ps_classic_provider_start",
    800: "ps_classic_script",
}

#: Channel (lower case) -> Sigma service.
CHANNEL_SERVICES: Final[dict[str, str]] = {
    "application": "application",
    "security": "security",
    "system": "system",
    "microsoft-windows-ntlm/operational": "ntlm",
    "microsoft-windows-sysmon/operational": SYSMON_SERVICE,
    "microsoft-windows-powershell/operational": "powershell",
    "powershellcore/operational": "powershell",
    "windows powershell": "powershell-classic",
    "microsoft-windows-taskscheduler/operational": "taskscheduler",
    "microsoft-windows-wmi-activity/operational": "wmi",
    "microsoft-windows-dhcp-server/operational": "dhcp",
    "microsoft-windows-printservice/admin": "printservice-admin",
    "microsoft-windows-printservice/operational": "printservice-operational",
    "microsoft-windows-smbclient/security": "smbclient-security",
    "microsoft-windows-smbclient/connectivity": "smbclient-connectivity",
    "microsoft-windows-smbserver/connectivity": "smbserver-connectivity",
    "microsoft-windows-terminalservices-localsessionmanager/operational":
        "terminalservices-localsessionmanager",
    "microsoft-windows-codeintegrity/operational": "codeintegrity-operational",
    "microsoft-windows-applocker/msi and script": "applocker",
    "microsoft-windows-applocker/exe and dll": "applocker",
    "microsoft-windows-applocker/packaged app-deployment": "applocker",
    "microsoft-windows-applocker/packaged app-execution": "applocker",
    "msexchange management": "msexchange-management",
    "microsoft-windows-windows defender/operational": "windefend",
    "microsoft-windows-windows firewall with advanced security/firewall": "firewall-as",
    "microsoft-windows-bits-client/operational": "bits-client",
    "microsoft-windows-security-mitigations/kernel mode": "security-mitigations",
    "microsoft-windows-security-mitigations/user mode": "security-mitigations",
    "microsoft-windows-diagnosis-scripted/operational": "diagnosis-scripted",
    "microsoft-windows-shell-core/operational": "shell-core",
    "openssh/operational": "openssh",
    "microsoft-windows-ldap-client/debug": "ldap",
    "microsoft-windows-bitlocker/bitlocker management": "bitlocker",
    "microsoft-windows-vhdmp/operational": "vhdmp",
    "microsoft-windows-appxdeploymentserver/operational": "appxdeployment-server",
    "microsoft-windows-lsa/operational": "lsa-server",
    "microsoft-windows-appxpackaging/operational": "appxpackaging-om",
    "microsoft-windows-dns client events/operational": "dns-client",
    "microsoft-windows-appmodel-runtime/admin": "appmodel-runtime",
    "microsoft-windows-capi2/operational": "capi2",
    "microsoft-windows-certificateservicesclient-lifecycle-system/operational":
        "certificateservicesclient-lifecycle-system",
    "microsoft-windows-kernel-shimengine/operational": "kernel-shimengine",
    "microsoft-windows-kernel-shimengine/diagnostic": "kernel-shimengine",
    "microsoft-windows-application-experience/program-telemetry": "application-experience",
    "microsoft-windows-application-experience/program-compatibility-assistant":
        "application-experience",
    "microsoft-windows-ntfs/operational": "ntfs",
    "microsoft-windows-hyper-v-worker": "hyper-v-worker",
    "microsoft-windows-kernel-eventtracing": "kernel-event-tracing",
    "microsoft-windows-sense/operational": "sense",
    "microsoft-servicebus-client/admin": "servicebus-client",
    "microsoft-servicebus-client/operational": "servicebus-client",
    "microsoft-iis-configuration/operational": "iis-configuration",
    "dns server": "dns-server",
    "microsoft-windows-dns-server/analytical": "dns-server-analytic",
    "microsoft-windows-driverframeworks-usermode/operational": "driver-framework",
    "microsoft-windows-terminalservices-remoteconnectionmanager/operational":
        "terminalservices-remoteconnectionmanager",
    "microsoft-windows-remotedesktopservices-rdpcorets/operational": "rdpcorets",
}

#: Every Sigma service the Windows normalizer can emit.
WINDOWS_SERVICES: Final = frozenset(CHANNEL_SERVICES.values())

#: Every Sigma category the Windows normalizer can emit (Security audit events
#: add ``file_access``: see :mod:`edr.sources.replay.winlog_audit`).
WINDOWS_CATEGORIES: Final = frozenset(
    {*SYSMON_CATEGORIES.values(), ev.REGISTRY_DELETE, *POWERSHELL_CATEGORIES.values(),
     *POWERSHELL_CLASSIC_CATEGORIES.values(), ev.WINLOG, "file_access"}
)


def channel_service(channel: str) -> str | None:
    """Sigma service of a Windows channel name, None when SigmaHQ names none."""
    return CHANNEL_SERVICES.get(channel.lower())
