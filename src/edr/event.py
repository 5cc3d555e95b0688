"""The normalized event and the Sysmon field vocabulary.

Every source (eBPF, ETW, replay) turns what it sees into :class:`Event`.
``fields`` uses Sysmon / Sysmon for Linux field names because SigmaHQ rules
are written against them; detection engines read ``fields`` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, NamedTuple

import msgspec

# --- products ---------------------------------------------------------------
LINUX: Final = "linux"
WINDOWS: Final = "windows"

# --- categories (Sigma logsource categories) ---------------------------------
PROCESS_CREATION: Final = "process_creation"
PROCESS_TERMINATION: Final = "process_termination"
PROCESS_FORK: Final = "process_fork"  # internal: feeds the process cache
NETWORK_CONNECTION: Final = "network_connection"
FILE_EVENT: Final = "file_event"
FILE_DELETE: Final = "file_delete"
FILE_RENAME: Final = "file_rename"
FILE_CHANGE: Final = "file_change"
DNS_QUERY: Final = "dns_query"
IMAGE_LOAD: Final = "image_load"
DRIVER_LOAD: Final = "driver_load"
CREATE_REMOTE_THREAD: Final = "create_remote_thread"
RAW_ACCESS_THREAD: Final = "raw_access_thread"
PROCESS_ACCESS: Final = "process_access"
REGISTRY_ADD: Final = "registry_add"
REGISTRY_SET: Final = "registry_set"
REGISTRY_DELETE: Final = "registry_delete"
REGISTRY_RENAME: Final = "registry_rename"
REGISTRY_EVENT: Final = "registry_event"
CREATE_STREAM_HASH: Final = "create_stream_hash"
PIPE_CREATED: Final = "pipe_created"
WMI_EVENT: Final = "wmi_event"
PROCESS_TAMPERING: Final = "process_tampering"
PS_SCRIPT: Final = "ps_script"
PS_MODULE: Final = "ps_module"
PS_CLASSIC_START: Final = "ps_classic_start"
# Events of a Windows channel that has no Sigma category (Security, System...)
# carry this category and the channel's service in ``Event.service``.
WINLOG: Final = "winlog"

#: Every category an event can carry.
CATEGORIES: Final = frozenset({
    PROCESS_CREATION, PROCESS_TERMINATION, PROCESS_FORK, NETWORK_CONNECTION, FILE_EVENT, FILE_DELETE,
    FILE_RENAME, FILE_CHANGE, DNS_QUERY, IMAGE_LOAD, DRIVER_LOAD, CREATE_REMOTE_THREAD, RAW_ACCESS_THREAD,
    PROCESS_ACCESS, REGISTRY_ADD, REGISTRY_SET, REGISTRY_DELETE, REGISTRY_RENAME, REGISTRY_EVENT,
    CREATE_STREAM_HASH, PIPE_CREATED, WMI_EVENT, PROCESS_TAMPERING, PS_SCRIPT, PS_MODULE, PS_CLASSIC_START,
    WINLOG,
})

#: Categories of the priority lane: the process cache depends on them, so
#: user space never sheds them.
LIFECYCLE_CATEGORIES: Final = frozenset({PROCESS_CREATION, PROCESS_TERMINATION, PROCESS_FORK})


class F:
    """Sysmon field names, as SigmaHQ rules spell them."""

    # common
    UTC_TIME: Final = "UtcTime"
    PROCESS_GUID: Final = "ProcessGuid"
    PROCESS_ID: Final = "ProcessId"
    IMAGE: Final = "Image"
    USER: Final = "User"
    # process_creation
    COMMAND_LINE: Final = "CommandLine"
    CURRENT_DIRECTORY: Final = "CurrentDirectory"
    LOGON_ID: Final = "LogonId"
    INTEGRITY_LEVEL: Final = "IntegrityLevel"
    HASHES: Final = "Hashes"
    PARENT_PROCESS_GUID: Final = "ParentProcessGuid"
    PARENT_PROCESS_ID: Final = "ParentProcessId"
    PARENT_IMAGE: Final = "ParentImage"
    PARENT_COMMAND_LINE: Final = "ParentCommandLine"
    PARENT_USER: Final = "ParentUser"
    ORIGINAL_FILE_NAME: Final = "OriginalFileName"
    # network_connection
    PROTOCOL: Final = "Protocol"
    INITIATED: Final = "Initiated"
    SOURCE_IS_IPV6: Final = "SourceIsIpv6"
    SOURCE_IP: Final = "SourceIp"
    SOURCE_HOSTNAME: Final = "SourceHostname"
    SOURCE_PORT: Final = "SourcePort"
    DESTINATION_IS_IPV6: Final = "DestinationIsIpv6"
    DESTINATION_IP: Final = "DestinationIp"
    DESTINATION_HOSTNAME: Final = "DestinationHostname"
    DESTINATION_PORT: Final = "DestinationPort"
    # file events
    TARGET_FILENAME: Final = "TargetFilename"
    SOURCE_FILENAME: Final = "SourceFilename"
    CREATION_UTC_TIME: Final = "CreationUtcTime"
    # dns_query
    QUERY_NAME: Final = "QueryName"
    QUERY_STATUS: Final = "QueryStatus"
    QUERY_RESULTS: Final = "QueryResults"
    # image_load / driver_load
    IMAGE_LOADED: Final = "ImageLoaded"
    SIGNED: Final = "Signed"
    SIGNATURE: Final = "Signature"
    # registry
    TARGET_OBJECT: Final = "TargetObject"
    DETAILS: Final = "Details"
    EVENT_TYPE: Final = "EventType"
    # process_access / create_remote_thread
    SOURCE_IMAGE: Final = "SourceImage"
    TARGET_IMAGE: Final = "TargetImage"
    GRANTED_ACCESS: Final = "GrantedAccess"
    CALL_TRACE: Final = "CallTrace"
    # pipes
    PIPE_NAME: Final = "PipeName"
    # edr additions (not Sysmon): Linux context, kept under Sysmon-like names
    UID: Final = "Uid"
    GID: Final = "Gid"
    EUID: Final = "Euid"
    COMM: Final = "Comm"
    CGROUP_ID: Final = "CgroupId"
    CGROUP_PATH: Final = "CgroupPath"
    CONTAINER_ID: Final = "ContainerId"
    PROCESS_START_TIME: Final = "ProcessStartTime"
    ARGV_TRUNCATED: Final = "ArgvTruncated"
    OPERATION: Final = "Operation"
    QUERY_TYPE: Final = "QueryType"


#: The times an event may carry, in seconds since the epoch: 0001-01-01T00:00:00Z
#: to 9999-12-31T23:59:59Z, what a datetime (and so an alert's ``@timestamp``)
#: can represent. A recorded event outside them is rejected at decode.
MIN_TIMESTAMP: Final = -62_135_596_800.0
MAX_TIMESTAMP: Final = 253_402_300_799.0
#: How deeply a field value may nest JSON arrays and objects (a scalar is 0,
#: ``["a"]`` is 1). Sysmon's values are scalars or lists of them; a recorded
#: event with a deeper value is rejected at decode, so no engine or writer
#: meets one (JSON encoders and recursive code have limits of their own).
MAX_FIELD_DEPTH: Final = 16

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
if TYPE_CHECKING:
    _Category = str
    _Fields = dict[str, Any]
    _Timestamp = float
else:
    # For msgspec a Literal: decoding returns these very str objects, whose hash is
    # computed once, instead of a new string per event for every set and dict
    # lookup downstream to hash again. A category outside the list fails the
    # fast decode and takes event_from_record, which accepts any category.
    _Category = Literal[tuple(sorted(CATEGORIES))]
    # The fast decode takes what Sysmon's fields hold (scalars and lists of them:
    # depth 1 at most, checked in C); any other value takes event_from_record, which
    # checks MAX_FIELD_DEPTH and says why it refuses. Same for a time out of range.
    _Scalar = str | int | float | bool | None
    _Fields = dict[str, _Scalar | list[_Scalar]]
    _Timestamp = Annotated[float, msgspec.Meta(ge=MIN_TIMESTAMP, le=MAX_TIMESTAMP)]


class Event(msgspec.Struct, gc=False):
    """One normalized observation.

    ``fields`` maps Sysmon field names to values (str, int, bool, or a list of
    str; a recorded value may nest up to :data:`MAX_FIELD_DEPTH` levels);
    ``timestamp`` is the event's own time in seconds since the epoch
    (kernel time for live events, the recorded time for replay), which is what
    correlation windows use. ``seq`` is a per-source sequence number.

    ``service`` carries a Windows channel's Sigma service (``security``,
    ``system``, ``powershell``...) where that, not the category, routes rules.
    ``origin`` holds provenance for alerts (``log.file.path``, record number,
    ``winlog.*``) and is never matched against; ``line`` is the line of the
    NDJSON file an event was replayed from (0 otherwise), kept apart from
    ``origin`` so that one origin serves a whole file. ``count`` > 1 marks an event
    that stands for that many identical ones (network aggregation), so
    counting correlations count it that many times.

    A msgspec Struct rather than an attrs class: replay decodes each NDJSON
    line straight into an Event, validated in C, with no intermediate dict
    (:data:`RECORD_DECODER`), which is most of the cost of a replayed event.
    The JSON names are those of the NDJSON event format (``ts`` for
    ``timestamp``). ``gc=False``: an Event never refers back to itself, so the
    cycle collector need not track millions of them.
    """

    category: _Category
    product: _NonEmpty
    fields: _Fields
    timestamp: _Timestamp = msgspec.field(default=0.0, name="ts")
    seq: int = 0
    service: str | None = None
    origin: dict[str, Any] | None = None
    count: Annotated[int, msgspec.Meta(ge=1)] = 1
    line: int = 0

    def get(self, name: str, default: Any = None) -> Any:
        """Return field ``name`` or ``default``."""
        return self.fields.get(name, default)


#: Decodes one line of the NDJSON event format into an :class:`Event`,
#: validating types in C; raises ``msgspec.DecodeError`` (a ValueError) on
#: anything else, for which :func:`event_from_record` gives the readable reason.
RECORD_DECODER: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)


def event_to_record(event: Event) -> dict[str, Any]:
    """The NDJSON form of an event: what the event writer writes and replay reads."""
    record: dict[str, Any] = {
        "ts": event.timestamp,
        "seq": event.seq,
        "category": event.category,
        "product": event.product,
        "fields": event.fields,
    }
    if event.service is not None:
        record["service"] = event.service
    if event.count != 1:
        record["count"] = event.count
    return record


class RecordError(ValueError):
    """A recorded record (NDJSON line, Windows event) that cannot become an Event; the message says why."""


class RejectedRecord(NamedTuple):
    """Stands in a batch for a record its reader could not read, so that it is reported and counted like the rest.

    A replay reader yields it where a record was unreadable (an EVTX record the
    parser refuses, text of an evtx JSON dump that is no JSON object, a line
    too long to hold); the normalizer logs ``reason`` with the file and the
    record's place and counts it as rejected.
    """

    reason: str


def timestamp_in_range(ts: float) -> bool:
    """Whether ``ts`` lies within :data:`MIN_TIMESTAMP`..:data:`MAX_TIMESTAMP` (NaN does not)."""
    return MIN_TIMESTAMP <= ts <= MAX_TIMESTAMP


def nesting_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts more than ``limit`` levels deep (a scalar is 0).

    Iterative, so no depth of input can exhaust the stack; it stops at the
    first container beyond ``limit``.
    """
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is dict:
            children: Any = node.values()
        elif kind is list or kind is tuple:
            children = node
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children
                     if type(child) is dict or type(child) is list or type(child) is tuple)
    return False


def event_from_record(record: Any) -> Event:
    """Build an Event from one decoded NDJSON record, validating its shape.

    Replay's route for the lines :data:`RECORD_DECODER` refuses: it keeps
    what is acceptable but unusual (a category this version does not know)
    and gives a readable reason for the rest. A missing ``ts`` is 0, a
    missing ``seq`` 0, a missing ``count`` 1. A ``ts`` outside
    :data:`MIN_TIMESTAMP`..:data:`MAX_TIMESTAMP` and a field value nested
    deeper than :data:`MAX_FIELD_DEPTH` are refused: no alert could carry the
    one, and the other is no Sysmon value.
    """
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    category = record.get("category")
    product = record.get("product")
    fields = record.get("fields")
    if not isinstance(category, str) or not category:
        raise RecordError("missing or non-string 'category'")
    if not isinstance(product, str) or not product:
        raise RecordError("missing or non-string 'product'")
    if not isinstance(fields, dict):
        raise RecordError("missing or non-object 'fields'")
    ts = record.get("ts", 0.0)
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise RecordError("'ts' is not a number")
    if not timestamp_in_range(ts):
        shown = f" {ts!r}" if type(ts) is float else ""  # repr of a huge int may itself raise
        raise RecordError(f"'ts'{shown} is outside the representable times (years 1 to 9999)")
    count = record.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise RecordError("'count' is not a positive integer")
    service = record.get("service")
    if service is not None and not isinstance(service, str):
        raise RecordError("'service' is not a string")
    seq = record.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise RecordError("'seq' is not an integer")
    for name, value in fields.items():
        if (type(value) is dict or type(value) is list) and nesting_depth_exceeds(value, MAX_FIELD_DEPTH):
            raise RecordError(f"field {name!r:.80} is nested deeper than {MAX_FIELD_DEPTH} levels")
    return Event(category, product, fields, float(ts), seq, service, None, count)
