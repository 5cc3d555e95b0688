"""Which fields each live sensor fills, per event category: the data ``edr doctor`` judges rules by.

A Sigma rule reads fields (:attr:`~edr.detect.sigma.rules.CompiledRule.fields`);
whether it can fire on a host depends on whether that host's sensor ever
fills them. These tables say, per category, every field the sensor (with
its decoder and the enricher after it) may put into an event; "may",
because many are conditional (a parent the process cache knows, a process
still alive when its working directory is read). A field absent from a
table is one the sensor *never* fills there.

They were written from the code that fills the fields and are checked
against it: ``tests/doctor/test_sensor_fields.py`` runs the real eBPF
programs (and the decoder on recorded kernel records for what this machine
cannot produce live, such as a container's id) and the ETW normalizer on
the recorded ETW sessions and on the ETW records built from Sysmon's attack
samples, and fails when a decoder fills a field a table lacks, or a table
lists a field no decoder fills. Change a decoder, change the table.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from edr import event as ev
from edr.event import F

FieldSet = frozenset[str]

# --- Linux: the eBPF sensor (edr.sources.ebpf.decode) and the enricher (edr.enrich.enricher) -------------

#: What the enricher adds to every event of a process it knows (image, user, parent, container).
_LINUX_PROCESS_CONTEXT: Final = frozenset({F.IMAGE, F.USER, F.PARENT_PROCESS_ID, F.CONTAINER_ID})
_LINUX_COMMON: Final = frozenset({F.PROCESS_ID, F.UID, F.COMM}) | _LINUX_PROCESS_CONTEXT

#: Category -> every field the Linux eBPF sensor (decoder, then enricher) may fill, the exit status
#: aside (:func:`linux_ebpf_fields` adds it).
_LINUX_EBPF_TABLE: Final[dict[str, FieldSet]] = {
    ev.PROCESS_CREATION: _LINUX_COMMON | {
        F.COMMAND_LINE, F.GID, F.CGROUP_ID, F.CGROUP_PATH, F.ARGV_TRUNCATED, F.PROCESS_START_TIME,
        F.CURRENT_DIRECTORY, F.EUID, F.PARENT_IMAGE, F.PARENT_COMMAND_LINE, F.PARENT_USER,
    },
    ev.PROCESS_TERMINATION: _LINUX_COMMON | {F.GID, F.CGROUP_ID, F.COMMAND_LINE},
    ev.NETWORK_CONNECTION: _LINUX_COMMON | {
        F.CGROUP_ID, F.INITIATED, F.PROTOCOL, F.SOURCE_IP, F.SOURCE_PORT, F.SOURCE_IS_IPV6,
        F.DESTINATION_IP, F.DESTINATION_PORT, F.DESTINATION_IS_IPV6, F.DESTINATION_HOSTNAME,
    },
    ev.FILE_EVENT: _LINUX_COMMON | {F.CGROUP_ID, F.TARGET_FILENAME, F.SOURCE_FILENAME, F.OPERATION},
    ev.FILE_DELETE: _LINUX_COMMON | {F.CGROUP_ID, F.TARGET_FILENAME, F.OPERATION},
    ev.FILE_RENAME: _LINUX_COMMON | {F.CGROUP_ID, F.TARGET_FILENAME, F.SOURCE_FILENAME, F.OPERATION},
    ev.FILE_CHANGE: _LINUX_COMMON | {F.CGROUP_ID, F.TARGET_FILENAME, F.OPERATION},
    ev.DNS_QUERY: _LINUX_COMMON | {
        F.QUERY_NAME, F.QUERY_TYPE, F.QUERY_STATUS, F.QUERY_RESULTS, F.DESTINATION_IP, F.DESTINATION_PORT,
    },
}


@functools.cache
def linux_ebpf_fields() -> Mapping[str, FieldSet]:
    """Category -> every field the Linux eBPF sensor (decoder, then enricher) may fill.

    ``process_termination``'s exit status is not a Sysmon field, so the
    decoder names it itself (``decode.EXIT_CODE``, ``decode.EXIT_SIGNAL``);
    those names are read from the decoder (none from one that does not report
    exit statuses). On first call, not at import: the decoder is Linux-only
    and this module is imported on Windows too.
    """
    from edr.sources.ebpf import decode

    exit_status = frozenset(name for name in (getattr(decode, "EXIT_CODE", None),
                                              getattr(decode, "EXIT_SIGNAL", None)) if name)
    table = dict(_LINUX_EBPF_TABLE)
    table[ev.PROCESS_TERMINATION] = table[ev.PROCESS_TERMINATION] | exit_status
    return MappingProxyType(table)


#: ``sensor.families`` -> the categories that family's events carry (``process_fork`` only feeds the
#: process cache: no rule is written for it).
LINUX_FAMILY_CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "process": (ev.PROCESS_CREATION, ev.PROCESS_TERMINATION),
    "network": (ev.NETWORK_CONNECTION,),
    "file": (ev.FILE_EVENT, ev.FILE_DELETE, ev.FILE_RENAME, ev.FILE_CHANGE),
    "dns": (ev.DNS_QUERY,),
}

# --- Windows: the ETW sensor (edr.sources.etw.*) ----------------------------------------------------------

#: What :meth:`~edr.sources.etw.normalize.EtwNormalizer.subject` adds: the process an event is about.
_ETW_SUBJECT: Final = frozenset({F.PROCESS_ID, F.IMAGE, F.USER})
#: What a PowerShell Operational channel record carries besides its template (edr.sources.etw.powershell_events).
_ETW_CHANNEL: Final = frozenset({"EventID", "Channel", "Provider_Name", F.PROCESS_ID})

#: The image's hashes and version resource (edr.sources.etw.pe_info): in ``process_creation`` only
#: when the image could be read in time (``etw.pe_wait_ms``; never without pefile).
ETW_PE_FIELDS: Final = frozenset({F.HASHES, F.ORIGINAL_FILE_NAME, "Description", "Product", "Company", "FileVersion"})

#: ``None``: the event's fields are its channel template's properties, whatever they are (no field is
#: known to be missing).
OPEN: Final = None

#: (category, service) -> every field the ETW sensor may fill (``None``: open, see :data:`OPEN`).
#: ``process_creation`` lists the fields it has without PE info; :data:`ETW_PE_FIELDS` come on top.
WINDOWS_ETW_FIELDS: Final[dict[tuple[str, str | None], FieldSet | None]] = {
    (ev.PROCESS_CREATION, None): frozenset({
        F.PROCESS_ID, F.IMAGE, F.INTEGRITY_LEVEL, F.COMMAND_LINE, F.CURRENT_DIRECTORY, F.USER, F.LOGON_ID,
        F.PARENT_PROCESS_ID, F.PARENT_IMAGE, F.PARENT_COMMAND_LINE, F.PARENT_USER,
    }),
    (ev.PROCESS_TERMINATION, None): _ETW_SUBJECT,
    (ev.IMAGE_LOAD, None): _ETW_SUBJECT | {F.IMAGE_LOADED},
    (ev.FILE_EVENT, None): _ETW_SUBJECT | {F.TARGET_FILENAME},
    (ev.FILE_DELETE, None): _ETW_SUBJECT | {F.TARGET_FILENAME},
    (ev.FILE_CHANGE, None): _ETW_SUBJECT | {F.TARGET_FILENAME},
    (ev.FILE_RENAME, None): _ETW_SUBJECT | {F.TARGET_FILENAME, F.SOURCE_FILENAME},
    (ev.NETWORK_CONNECTION, None): _ETW_SUBJECT | {
        F.PROTOCOL, F.INITIATED, F.SOURCE_IP, F.SOURCE_IS_IPV6, F.SOURCE_PORT, F.SOURCE_HOSTNAME,
        F.DESTINATION_IP, F.DESTINATION_IS_IPV6, F.DESTINATION_PORT, F.DESTINATION_HOSTNAME,
    },
    (ev.REGISTRY_ADD, None): _ETW_SUBJECT | {F.EVENT_TYPE, F.TARGET_OBJECT},
    (ev.REGISTRY_SET, None): _ETW_SUBJECT | {F.EVENT_TYPE, F.TARGET_OBJECT, F.DETAILS},
    (ev.REGISTRY_DELETE, None): _ETW_SUBJECT | {F.EVENT_TYPE, F.TARGET_OBJECT},
    (ev.DNS_QUERY, None): _ETW_SUBJECT | {F.QUERY_NAME, F.QUERY_STATUS, F.QUERY_RESULTS, F.QUERY_TYPE},
    (ev.PS_SCRIPT, "powershell"): _ETW_CHANNEL | {
        "MessageNumber", "MessageTotal", "ScriptBlockText", "ScriptBlockId", "Path", "ScriptBlockIncomplete",
    },
    (ev.PS_MODULE, "powershell"): _ETW_CHANNEL | {"ContextInfo", "UserData", "Payload"},
    (ev.WINLOG, "taskscheduler"): OPEN,
    (ev.WINLOG, "wmi"): OPEN,
    (ev.WMI_EVENT, None): _ETW_SUBJECT | {F.EVENT_TYPE, F.OPERATION, "Consumer", "Namespace", "Filter", "ESS"},
}

#: ETW provider (manifest name, as ``etw.providers`` lists them) -> the routes its records become.
ETW_PROVIDER_ROUTES: Final[dict[str, tuple[tuple[str, str | None], ...]]] = {
    "Microsoft-Windows-Kernel-Process": ((ev.PROCESS_CREATION, None), (ev.PROCESS_TERMINATION, None),
                                         (ev.IMAGE_LOAD, None)),
    "Microsoft-Windows-Kernel-File": ((ev.FILE_EVENT, None), (ev.FILE_DELETE, None), (ev.FILE_CHANGE, None),
                                      (ev.FILE_RENAME, None)),
    "Microsoft-Windows-Kernel-Network": ((ev.NETWORK_CONNECTION, None),),
    "Microsoft-Windows-Kernel-Registry": ((ev.REGISTRY_ADD, None), (ev.REGISTRY_SET, None),
                                          (ev.REGISTRY_DELETE, None)),
    "Microsoft-Windows-DNS-Client": ((ev.DNS_QUERY, None),),
    "Microsoft-Windows-PowerShell": ((ev.PS_SCRIPT, "powershell"), (ev.PS_MODULE, "powershell")),
    "Microsoft-Windows-TaskScheduler": ((ev.WINLOG, "taskscheduler"),),
    "Microsoft-Windows-WMI-Activity": ((ev.WINLOG, "wmi"), (ev.WMI_EVENT, None)),
}
