"""The IOC engine: loading the four lists and matching events against them (sans-IO)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import re2

from edr.detect.alert import Alert
from edr.detect.ioc.domains import DomainSet, normalize_domain, validate_listed
from edr.detect.ioc.extract import dns_answers, domains_in, ips_in
from edr.detect.ioc.ipset import IpSet, parse_ip, parse_network
from edr.detect.ioc.lists import Indicator, IocLineError, bad_line, read_list
from edr.event import Event, F
from edr.text import utf8

if TYPE_CHECKING:
    from edr.config import IocConfig

HASH_LENGTHS: Final = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX: Final = frozenset("0123456789abcdef")

#: Sysmon field -> the ECS field an indicator matched on (``threat.enrichments.matched.field``).
ECS_FIELD: Final = {
    F.DESTINATION_IP: "destination.ip",
    F.SOURCE_IP: "source.ip",
    F.QUERY_NAME: "dns.question.name",
    F.QUERY_RESULTS: "dns.answers.data",
    F.DESTINATION_HOSTNAME: "destination.domain",
    F.IMAGE: "process.executable",
    F.PARENT_IMAGE: "process.parent.executable",
    F.TARGET_FILENAME: "file.path",
    F.IMAGE_LOADED: "dll.path",
    F.COMMAND_LINE: "process.command_line",
    F.HASHES: "process.hash",
}

# (indicator, observed value, Sysmon field it came from)
_Hit = tuple[Indicator, str, str]
_Check = Callable[[Any, str, list[_Hit]], None]
# a field to check, its check, and the memo of the values that check has seen (None: the check keeps none)
_Step = tuple[str, _Check, "dict[str, Any] | None"]

#: distinct values remembered per memo; the same images and command lines
#: recur all day, so most lookups of free text end in the memo
MEMO_SIZE: Final = 4096


def _remember(memo: dict[str, Any], key: str, value: Any) -> None:
    if len(memo) >= MEMO_SIZE:
        memo.clear()  # cheaper than LRU bookkeeping; refills from the recurring values
    memo[key] = value


class IocSet:
    """Atomic indicators (hashes, IPs/CIDRs, domains, path regexes) as a :class:`Detector`.

    ``match`` checks the fields that can carry an indicator; ``match_hashes``
    is for the scanner, which hashes executables. Each indicator raises at
    most one alert per event. ``errors`` lists skipped lines as
    ``file:line: reason``.
    """

    name = "ioc"

    def __init__(self, severity: str = "high") -> None:
        self.severity = severity
        self.hashes: dict[str, dict[str, Indicator]] = {"md5": {}, "sha1": {}, "sha256": {}}
        self.ips = IpSet()
        self.domains = DomainSet()
        self.path_patterns: list[Indicator] = []
        self._path_set: Any = None
        self.errors: list[IocLineError] = []
        self.events = 0
        self.matches = 0
        self._plan: tuple[tuple[str, _Check], ...] = ()
        #: the plan's fields; and per set of them an event may carry, the steps of the plan for those
        #: fields, in the plan's order (filled as met: at most one entry per subset of the plan)
        self._plan_fields: frozenset[str] = frozenset()
        self._steps: dict[frozenset[str], tuple[_Step, ...]] = {}
        self._text_memo: dict[str, tuple[tuple[Indicator, str], ...]] = {}
        self._path_memo: dict[str, tuple[Indicator, ...]] = {}

    # --- loading -------------------------------------------------------------

    def load_hashes(self, path: str) -> None:
        """Add MD5/SHA1/SHA256 values from ``path`` (the algorithm is told by the length)."""
        for item in read_list(path, self.errors):
            value = item.value.lower()
            algo = HASH_LENGTHS.get(len(value))
            if algo is None or not set(value) <= _HEX:
                bad_line(self.errors, item, "not an MD5, SHA1 or SHA256 hex digest")
                continue
            self.hashes[algo].setdefault(value, Indicator(algo, value, item.source, item.line, item.comment))
        self._build_plan()

    def load_ips(self, path: str) -> None:
        """Add addresses and CIDR ranges (IPv4 and IPv6) from ``path``."""
        for item in read_list(path, self.errors):
            try:
                net = parse_network(item.value)
            except ValueError as exc:
                bad_line(self.errors, item, f"not an IP address or CIDR range ({exc})")
                continue
            text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
            self.ips.add(net, Indicator("ip", text, item.source, item.line, item.comment))
        self._build_plan()

    def load_domains(self, path: str) -> None:
        """Add exact domains and ``*.``/``.`` suffixes from ``path``."""
        for item in read_list(path, self.errors):
            raw = item.value.lower()
            suffix = raw.startswith(("*.", "."))
            name = normalize_domain(raw[2:] if raw.startswith("*.") else raw.lstrip("."))
            reason = "empty name" if name is None else validate_listed(name)
            if name is None or reason is not None:
                bad_line(self.errors, item, f"not a domain name ({reason})")
                continue
            if suffix:
                self.domains.suffix.setdefault(
                    name, Indicator("domain", "." + name, item.source, item.line, item.comment))
            else:
                self.domains.exact.setdefault(name, Indicator("domain", name, item.source, item.line,
                                                              item.comment))
        self._build_plan()

    def load_path_regexes(self, path: str) -> None:
        """Add case-insensitive RE2 patterns from ``path``; one RE2 set matches them all at once."""
        options = re2.Options()
        options.case_sensitive = False
        options.log_errors = False
        for item in read_list(path, self.errors):
            try:
                re2.compile(item.value, options)
            except re2.error as exc:
                bad_line(self.errors, item, f"invalid RE2 regex ({exc})")
                continue
            self.path_patterns.append(Indicator("path_regex", item.value, item.source, item.line,
                                                item.comment))
        if self.path_patterns:
            regex_set = re2.Set.SearchSet(options)
            for ind in self.path_patterns:
                regex_set.Add(ind.value)
            regex_set.Compile()
            self._path_set = regex_set
        self._build_plan()

    def _build_plan(self) -> None:
        # Per field, the checks worth running given which lists are non-empty:
        # an event without any of these fields costs a few dict probes.
        plan: list[tuple[str, _Check]] = []
        if len(self.ips):
            plan += [(F.DESTINATION_IP, self._check_ip), (F.SOURCE_IP, self._check_ip)]
        if len(self.domains):
            plan += [(F.QUERY_NAME, self._check_domain), (F.DESTINATION_HOSTNAME, self._check_domain)]
        if len(self.ips) or len(self.domains):
            plan += [(F.QUERY_RESULTS, self._check_answers), (F.COMMAND_LINE, self._check_text)]
        if self._path_set is not None:
            plan += [(f, self._check_path) for f in (F.IMAGE, F.PARENT_IMAGE, F.TARGET_FILENAME,
                                                     F.IMAGE_LOADED)]
        if any(self.hashes.values()):
            plan.append((F.HASHES, self._check_hashes_field))
        self._plan = tuple(plan)
        self._plan_fields = frozenset(field for field, _ in plan)
        self._steps = {}
        self._text_memo.clear()
        self._path_memo.clear()

    # --- matching --------------------------------------------------------------

    def match(self, event: Event) -> list[Alert]:
        """One alert per indicator found in ``event``'s fields."""
        self.events += 1
        fields = event.fields
        hits: list[_Hit] = []
        for field, check in self._plan:
            value = fields.get(field)
            if value:
                check(value, field, hits)
        if not hits:
            return []
        alerts = self._alerts(hits, event)
        self.matches += len(alerts)
        return alerts

    def match_batch(self, events: Sequence[Event]) -> list[Alert]:
        """:meth:`match` of every event of ``events``, in one call: the same alerts, in event order.

        An event carries none of the plan's fields or a few (an exec: its
        command line, image and parent image), and those values recur (the
        same programs all day): so the fields to check are found with one set
        intersection instead of a probe per planned field, and a text or path
        already seen without a hit is passed over on its memo's word instead
        of a call to its check. The counters move once the whole batch is
        done: should a check raise, the detection actor matches the batch
        again event by event, and those calls count.
        """
        wanted = self._plan_fields
        known_steps = self._steps
        out: list[Alert] = []
        for event in events:
            fields = event.fields
            present = wanted.intersection(fields)
            if not present:
                continue
            steps = known_steps.get(present)
            if steps is None:
                steps = known_steps[present] = self._steps_for(present)
            hits: list[_Hit] = []
            for field, check, memo in steps:
                value = fields[field]
                if value:
                    if memo is not None and type(value) is str:
                        found = memo.get(value)
                        if found is not None and not found:
                            continue  # seen, without a hit: what the check would find again
                    check(value, field, hits)
            if hits:
                out += self._alerts(hits, event)
        self.events += len(events)
        self.matches += len(out)
        return out

    def _steps_for(self, present: frozenset[str]) -> tuple[_Step, ...]:
        memos: dict[Any, dict[str, Any]] = {self._check_text: self._text_memo, self._check_path: self._path_memo}
        return tuple((field, check, memos.get(check)) for field, check in self._plan if field in present)

    def match_hashes(self, hashes: Mapping[str, str], event: Event | None,
                     path: str | None = None) -> list[Alert]:
        """Alerts for listed digests among ``hashes`` (``{"md5": .., "sha1": .., "sha256": ..}``).

        Used by the scanner for the files it hashes; ``path`` is the file
        (``file.path`` in the alert), the matched field is ``file.hash.<algo>``.
        """
        hits: list[_Hit] = []
        for algo, digest in hashes.items():
            table = self.hashes.get(algo)
            if table:
                ind = table.get(digest.lower())
                if ind is not None:
                    hits.append((ind, digest.lower(), f"file.hash.{algo}"))
        if not hits:
            return []
        alerts = self._alerts(hits, event)
        self.matches += len(alerts)
        if path is not None:
            for alert in alerts:
                alert.ecs["file.path"] = path
                for algo, digest in hashes.items():
                    alert.ecs[f"file.hash.{algo}"] = digest.lower()
        return alerts

    @property
    def has_hashes(self) -> bool:
        """True when any hash indicator is listed (the scanner hashes only then, or for YARA hits)."""
        return any(self.hashes.values())

    def _check_ip(self, value: Any, field: str, hits: list[_Hit]) -> None:
        if isinstance(value, str):
            for ind in self.ips.lookup_text(value):
                hits.append((ind, value, field))

    def _check_domain(self, value: Any, field: str, hits: list[_Hit]) -> None:
        if isinstance(value, str):
            for ind in self.domains.lookup_text(value):
                hits.append((ind, value, field))

    def _check_answers(self, value: Any, field: str, hits: list[_Hit]) -> None:
        for answer in dns_answers(value):
            addr = parse_ip(answer)
            if addr is not None:
                for ind in self.ips.lookup(addr):
                    hits.append((ind, str(addr), field))
            elif len(self.domains):
                for ind in self.domains.lookup_text(answer):
                    hits.append((ind, answer, field))

    def _check_text(self, value: Any, field: str, hits: list[_Hit]) -> None:
        if not isinstance(value, str):
            return
        found = self._text_memo.get(value)
        if found is None:
            found = tuple(self._scan_text(value))
            _remember(self._text_memo, value, found)
        for ind, candidate in found:
            hits.append((ind, candidate, field))

    def _scan_text(self, value: str) -> list[tuple[Indicator, str]]:
        found: list[tuple[Indicator, str]] = []
        if len(self.ips):
            for candidate in ips_in(value):
                found.extend((ind, candidate) for ind in self.ips.lookup_text(candidate))
        if len(self.domains):
            for candidate in domains_in(value):
                found.extend((ind, candidate) for ind in self.domains.lookup_text(candidate))
        return found

    def _check_path(self, value: Any, field: str, hits: list[_Hit]) -> None:
        if not isinstance(value, str):
            return
        found = self._path_memo.get(value)
        if found is None:
            # as bytes: a path that is not UTF-8 (edr.text) would make RE2's str route raise
            found = tuple(self.path_patterns[i] for i in self._path_set.Match(utf8(value)) or ())
            _remember(self._path_memo, value, found)
        for ind in found:
            hits.append((ind, value, field))

    def _check_hashes_field(self, value: Any, field: str, hits: list[_Hit]) -> None:
        # Sysmon's "SHA256=AB..,MD5=CD.." (Windows events carry it; Linux does not).
        for part in str(value).split(","):
            algo, sep, digest = part.partition("=")
            table = self.hashes.get(algo.strip().lower()) if sep else None
            if table:
                ind = table.get(digest.strip().lower())
                if ind is not None:
                    hits.append((ind, ind.value, f"process.hash.{ind.type}"))

    def _alerts(self, hits: list[_Hit], event: Event | None) -> list[Alert]:
        seen: set[Indicator] = set()
        alerts = []
        for ind, observed, field in hits:
            if ind in seen:
                continue
            seen.add(ind)
            alerts.append(self._alert(ind, observed, field, event))
        return alerts

    def _alert(self, ind: Indicator, observed: str, field: str, event: Event | None) -> Alert:
        ecs: dict[str, Any] = {
            "threat.indicator.type": indicator_type(ind, observed),
            "threat.indicator.name": ind.value,
            "threat.indicator.provider": "edr",
            "threat.enrichments.matched.atomic": observed,
            "threat.enrichments.matched.field": ECS_FIELD.get(field, field),
            "threat.enrichments.matched.type": "indicator_match_rule",
            "edr.ioc.type": ind.type,
            "edr.ioc.source": f"{ind.source}:{ind.line}",
        }
        if ind.comment:
            ecs["threat.indicator.description"] = ind.comment
        if ind.type == "ip":
            ecs["threat.indicator.ip"] = observed
        elif ind.type == "domain":
            ecs["threat.indicator.url.domain"] = normalize_domain(observed) or observed
        elif ind.type == "path_regex":
            ecs["threat.indicator.file.path"] = observed
        else:
            ecs[f"threat.indicator.file.hash.{ind.type}"] = ind.value
        description = ind.comment or f"{ind.type} indicator listed in {ind.source}"
        if observed != ind.value:
            description += f" (observed {observed} in {ECS_FIELD.get(field, field)})"
        return Alert(rule_id=ind.rule_id, rule_name=ind.rule_id, severity=self.severity, engine="ioc",
                     event=event, tags=("ioc", f"ioc.{ind.type}"), description=description, ecs=ecs)

    # --- reporting -------------------------------------------------------------

    def fields_read(self, category: str) -> frozenset[str]:
        """The fields ``match`` reads (the same for every category)."""
        return frozenset(field for field, _ in self._plan)

    def counts(self) -> dict[str, int]:
        """Loaded indicators per kind."""
        return {
            "md5": len(self.hashes["md5"]), "sha1": len(self.hashes["sha1"]),
            "sha256": len(self.hashes["sha256"]), "ip": self.ips.addresses, "cidr": self.ips.networks,
            "domain_exact": len(self.domains.exact), "domain_suffix": len(self.domains.suffix),
            "path_regex": len(self.path_patterns),
        }

    def summary(self) -> str:
        """One line for the operational log."""
        parts = ", ".join(f"{n} {k}" for k, n in self.counts().items())
        return f"{parts}; {len(self.errors)} line(s) skipped"

    def statistics(self) -> dict[str, Any]:
        """Events checked, alerts raised, indicators loaded."""
        return {"events": self.events, "matches": self.matches, "loaded": self.counts(),
                "errors": len(self.errors)}


def indicator_type(ind: Indicator, observed: str) -> str:
    """The STIX-style ``threat.indicator.type`` ECS expects."""
    if ind.type == "ip":
        addr = parse_ip(observed)
        return "ipv6-addr" if isinstance(addr, ipaddress.IPv6Address) else "ipv4-addr"
    if ind.type == "domain":
        return "domain-name"
    return "file"


def load_iocs(cfg: IocConfig) -> IocSet:
    """Load the four lists named by ``[ioc]``; bad lines land in ``.errors``, never raise."""
    iocs = IocSet(severity=cfg.default_severity)
    iocs.load_hashes(cfg.hashes_path)
    iocs.load_ips(cfg.ips_path)
    iocs.load_domains(cfg.domains_path)
    iocs.load_path_regexes(cfg.paths_regex_path)
    return iocs
