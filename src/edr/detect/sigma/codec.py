"""The compiled rule set as plain data: a closed, explicit codec (msgpack through msgspec).

Each class a compiled rule set is made of has a *wire form* here: a msgspec
``Struct`` whose fields are plain values (strings, numbers, booleans, lists,
maps, other wire forms), with an ``of`` that reads a live object and a
``build`` that makes a new one through the class's own constructor. Tests
and condition nodes carry a short tag (``"re"``, ``"and"``...) as their
first element; a tag selects one entry of the closed unions :data:`WireTest`
and :data:`WireNode`, nothing else. Nothing in the data names a Python class,
function or module, and decoding never imports or calls anything the data
chooses, so a payload can at worst describe other rules, never run code.

msgspec checks the payload against these declarations as it decodes it (in
C), and each rule file's entry when that entry is built: a wrong type or an
unknown tag raises :class:`CodecError` naming the place (``rule file entry
12: Invalid value 'x' - at `$[2][0][1]...```). What can be derived
is not stored: rule numbers and ``emits`` are set when a set is assembled
(:func:`edr.detect.sigma.ruleset.assemble`), route indexes are rebuilt, and
compiled regular expressions are compiled again by their tests' constructors.
A rule's condition tree is checked with the rest but built from its checked
wire form only when the rule's route is first used
(:meth:`~edr.detect.sigma.rules.CompiledRule.deferred`): building every tree
took most of a start from the cache, and most routes see no event.

The unit of reuse is the rule file (:class:`~edr.detect.sigma.ruleset.RuleFile`,
keyed by its path and the SHA-256 of its content); the set-level part is the
correlations, which refer to rules of any file. See :mod:`.cache` for the
file around the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Union

import msgspec

from edr.detect.sigma import matchers as m
from edr.detect.sigma import nodes as n
from edr.detect.sigma.correlation import CompiledCorrelation
from edr.detect.sigma.literals import Needs
from edr.detect.sigma.loader import Rejection
from edr.detect.sigma.logsources import Route
from edr.detect.sigma.rules import CompiledRule, RuleMeta
from edr.detect.sigma.ruleset import FileStat, RuleFile, RuleSet, Sources

#: msgpack holds integers of 64 bits; a rule's number literal may be longer.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class CodecError(ValueError):
    """A rule set that cannot be encoded, or a payload that is not a valid encoded rule set."""


def _wide(number: int | float) -> int | float | str:
    """A number as msgpack can hold it: an integer beyond 64 bits travels as its decimal text."""
    if isinstance(number, int) and not _INT_MIN <= number <= _INT_MAX:
        return str(number)
    return number


def _narrow(number: int | float | str) -> int | float:
    return int(number) if isinstance(number, str) else number


class _Wire(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Base of the wire forms: encoded as arrays (field names are not repeated per object).

    ``gc=False``: a wire form holds only plain values and other wire forms,
    never a cycle, so the collector need not track the ~100,000 of a full set.
    """


# --- value tests (edr.detect.sigma.matchers) -------------------------------------------------


class WStrGroup(_Wire, tag="str"):
    """:class:`~edr.detect.sigma.matchers.StrGroup`."""

    cased: bool
    exact: frozenset[str]
    starts: tuple[str, ...]
    ends: tuple[str, ...]
    contains: tuple[str, ...]
    globs: tuple[tuple[str | None, ...], ...]

    @classmethod
    def of(cls, t: m.StrGroup) -> WStrGroup:
        return cls(t.cased, t.exact, t.starts, t.ends, t.contains, t.globs)

    def build(self) -> m.StrGroup:
        return m.StrGroup(self.cased, exact=self.exact, starts=self.starts, ends=self.ends,
                          contains=self.contains, globs=self.globs)


class WRegex(_Wire, tag="re"):
    """:class:`~edr.detect.sigma.matchers.RegexSearch` (compiled again by its constructor)."""

    pattern: str

    @classmethod
    def of(cls, t: m.RegexSearch) -> WRegex:
        return cls(t.pattern)

    def build(self) -> m.RegexSearch:
        return m.RegexSearch(self.pattern)


class WLongRun(_Wire, tag="run"):
    """:class:`~edr.detect.sigma.matchers.LongRun`."""

    pattern: str
    length: int
    dotall: bool

    @classmethod
    def of(cls, t: m.LongRun) -> WLongRun:
        return cls(t.pattern, t.length, t.dotall)

    def build(self) -> m.LongRun:
        return m.LongRun(self.pattern, self.length, self.dotall)


class WWildcard(_Wire, tag="wild"):
    """:class:`~edr.detect.sigma.matchers.WildcardPattern`."""

    pattern: str
    cased: bool
    literals: tuple[str, ...]

    @classmethod
    def of(cls, t: m.WildcardPattern) -> WWildcard:
        return cls(t.pattern, t.cased, t.literals)

    def build(self) -> m.WildcardPattern:
        return m.WildcardPattern(self.pattern, self.cased, self.literals)


class WAnyValue(_Wire, tag="any"):
    """:class:`~edr.detect.sigma.matchers.AnyValue`."""

    @classmethod
    def of(cls, t: m.AnyValue) -> WAnyValue:
        return cls()

    def build(self) -> m.AnyValue:
        return m.AnyValue()


class WNever(_Wire, tag="never"):
    """:class:`~edr.detect.sigma.matchers.Never`."""

    reason: str

    @classmethod
    def of(cls, t: m.Never) -> WNever:
        return cls(t.reason)

    def build(self) -> m.Never:
        return m.Never(self.reason)


class WNumber(_Wire, tag="num"):
    """:class:`~edr.detect.sigma.matchers.Number`."""

    number: int | float | str

    @classmethod
    def of(cls, t: m.Number) -> WNumber:
        return cls(_wide(t.number))

    def build(self) -> m.Number:
        return m.Number(_narrow(self.number))


class WBool(_Wire, tag="bool"):
    """:class:`~edr.detect.sigma.matchers.Bool`."""

    value: bool

    @classmethod
    def of(cls, t: m.Bool) -> WBool:
        return cls(t.text == "true")

    def build(self) -> m.Bool:
        return m.Bool(self.value)


class WNull(_Wire, tag="null"):
    """:class:`~edr.detect.sigma.matchers.Null`."""

    @classmethod
    def of(cls, t: m.Null) -> WNull:
        return cls()

    def build(self) -> m.Null:
        return m.Null()


class WExists(_Wire, tag="exists"):
    """:class:`~edr.detect.sigma.matchers.Exists`."""

    exists: bool

    @classmethod
    def of(cls, t: m.Exists) -> WExists:
        return cls(t.exists)

    def build(self) -> m.Exists:
        return m.Exists(self.exists)


class WCidr(_Wire, tag="cidr"):
    """:class:`~edr.detect.sigma.matchers.Cidr` (the network is parsed again by its constructor)."""

    cidr: str

    @classmethod
    def of(cls, t: m.Cidr) -> WCidr:
        return cls(t.cidr)

    def build(self) -> m.Cidr:
        return m.Cidr(self.cidr)


class WCompare(_Wire, tag="cmp"):
    """:class:`~edr.detect.sigma.matchers.Compare`."""

    op: str
    number: int | float | str

    @classmethod
    def of(cls, t: m.Compare) -> WCompare:
        return cls(t.op, _wide(t.number))

    def build(self) -> m.Compare:
        return m.Compare(self.op, _narrow(self.number))


class WFieldRef(_Wire, tag="fieldref"):
    """:class:`~edr.detect.sigma.matchers.FieldRef`."""

    other: str
    starts_with: bool
    ends_with: bool

    @classmethod
    def of(cls, t: m.FieldRef) -> WFieldRef:
        return cls(t.other, t.starts_with, t.ends_with)

    def build(self) -> m.FieldRef:
        return m.FieldRef(self.other, self.starts_with, self.ends_with)


class WTimePart(_Wire, tag="time"):
    """:class:`~edr.detect.sigma.matchers.TimePart`."""

    part: str
    number: int | str

    @classmethod
    def of(cls, t: m.TimePart) -> WTimePart:
        return cls(t.part, _wide(t.number))  # type: ignore[arg-type]

    def build(self) -> m.TimePart:
        return m.TimePart(self.part, int(self.number))


class WAnyOf(_Wire, tag="anyof"):
    """:class:`~edr.detect.sigma.matchers.AnyOf`."""

    tests: tuple[WireTest, ...]

    @classmethod
    def of(cls, t: m.AnyOf) -> WAnyOf:
        return cls(tuple(map(_test, t.tests)))

    def build(self) -> m.AnyOf:
        return m.AnyOf(tuple([w.build() for w in self.tests]))


WireTest = Union[WStrGroup, WRegex, WLongRun, WWildcard, WAnyValue, WNever, WNumber, WBool,  # noqa: UP007
                 WNull, WExists, WCidr, WCompare, WFieldRef, WTimePart, WAnyOf]

#: The closed table of value tests: exact class -> its wire form.
TESTS: Final[dict[type[m.Test], Any]] = {
    m.StrGroup: WStrGroup, m.RegexSearch: WRegex, m.LongRun: WLongRun, m.WildcardPattern: WWildcard,
    m.AnyValue: WAnyValue, m.Never: WNever, m.Number: WNumber, m.Bool: WBool, m.Null: WNull,
    m.Exists: WExists, m.Cidr: WCidr, m.Compare: WCompare, m.FieldRef: WFieldRef,
    m.TimePart: WTimePart, m.AnyOf: WAnyOf,
}


def _test(test: m.Test) -> WireTest:
    wire = TESTS.get(type(test))
    if wire is None:
        raise CodecError(f"no wire form for value test {type(test).__name__}")
    return wire.of(test)  # type: ignore[no-any-return]


# --- condition nodes (edr.detect.sigma.nodes) ------------------------------------------------


class WField(_Wire, tag="field"):
    """:class:`~edr.detect.sigma.nodes.FieldItem`."""

    field: str
    tests: tuple[WireTest, ...]
    all_: bool

    @classmethod
    def of(cls, node: n.FieldItem) -> WField:
        return cls(node.field, tuple(map(_test, node.tests)), node.all_)

    def build(self) -> n.FieldItem:
        return n.FieldItem(self.field, tuple([w.build() for w in self.tests]), self.all_)


class WKeyword(_Wire, tag="kw"):
    """:class:`~edr.detect.sigma.nodes.KeywordItem`."""

    tests: tuple[WireTest, ...]
    all_: bool

    @classmethod
    def of(cls, node: n.KeywordItem) -> WKeyword:
        return cls(tuple(map(_test, node.tests)), node.all_)

    def build(self) -> n.KeywordItem:
        return n.KeywordItem(tuple([w.build() for w in self.tests]), self.all_)


class WAnd(_Wire, tag="and"):
    """:class:`~edr.detect.sigma.nodes.And`."""

    children: tuple[WireNode, ...]

    @classmethod
    def of(cls, node: n.And) -> WAnd:
        return cls(tuple(map(_node, node.children)))

    def build(self) -> n.And:
        return n.And(tuple([w.build() for w in self.children]))


class WOr(_Wire, tag="or"):
    """:class:`~edr.detect.sigma.nodes.Or`."""

    children: tuple[WireNode, ...]

    @classmethod
    def of(cls, node: n.Or) -> WOr:
        return cls(tuple(map(_node, node.children)))

    def build(self) -> n.Or:
        return n.Or(tuple([w.build() for w in self.children]))


class WNot(_Wire, tag="not"):
    """:class:`~edr.detect.sigma.nodes.Not`."""

    child: WireNode

    @classmethod
    def of(cls, node: n.Not) -> WNot:
        return cls(_node(node.child))

    def build(self) -> n.Not:
        return n.Not(self.child.build())


class WSelection(_Wire, tag="sel"):
    """:class:`~edr.detect.sigma.nodes.Selection`."""

    name: str
    child: WireNode

    @classmethod
    def of(cls, node: n.Selection) -> WSelection:
        return cls(node.name, _node(node.child))

    def build(self) -> n.Selection:
        return n.Selection(self.name, self.child.build())


WireNode = Union[WField, WKeyword, WAnd, WOr, WNot, WSelection]  # noqa: UP007

#: The closed table of condition nodes: exact class -> its wire form.
NODES: Final[dict[type[n.Node], Any]] = {
    n.FieldItem: WField, n.KeywordItem: WKeyword, n.And: WAnd, n.Or: WOr, n.Not: WNot,
    n.Selection: WSelection,
}


def _node(node: n.Node) -> WireNode:
    # A selection used twice in one condition is one object in the compiled tree and
    # two here: the same behaviour, and a tree cannot hold a cycle.
    wire = NODES.get(type(node))
    if wire is None:
        raise CodecError(f"no wire form for condition node {type(node).__name__}")
    return wire.of(node)  # type: ignore[no-any-return]


# --- rules, rejections, correlations ---------------------------------------------------------


class WMeta(_Wire):
    """:class:`~edr.detect.sigma.rules.RuleMeta`."""

    rule_id: str
    title: str
    name: str | None
    level: str
    tags: tuple[str, ...]
    description: str
    path: str
    logsource: tuple[str | None, str | None, str | None]
    #: ECS fields of the rule's alerts (strings, lists of strings) as pairs: their order is the alerts' order
    ecs: tuple[tuple[str, Any], ...]
    status: str

    @classmethod
    def of(cls, meta: RuleMeta) -> WMeta:
        return cls(meta.rule_id, meta.title, meta.name, meta.level, meta.tags, meta.description, meta.path,
                   meta.logsource, tuple(meta.ecs.items()), meta.status)

    def build(self) -> RuleMeta:
        logsource: Route = self.logsource
        return RuleMeta(rule_id=self.rule_id, title=self.title, name=self.name, level=self.level, tags=self.tags,
                        description=self.description, path=self.path, logsource=logsource, ecs=dict(self.ecs),
                        status=self.status)


class WRule(_Wire):
    """:class:`~edr.detect.sigma.rules.CompiledRule`, less its number and ``emits`` (set on assembly)."""

    meta: WMeta
    condition: WireNode
    clauses: tuple[Needs, ...] | None
    fields: frozenset[str]
    keywords: bool
    warnings: tuple[str, ...]

    @classmethod
    def of(cls, rule: CompiledRule) -> WRule:
        return cls(WMeta.of(rule.meta), _node(rule.condition), rule.clauses, rule.fields, rule.keywords,
                   rule.warnings)

    def build(self, number: int) -> CompiledRule:
        # the condition tree is built from its (checked) wire form when the rule is first used
        return CompiledRule.deferred(number=number, meta=self.meta.build(), condition=self.condition.build,
                                     clauses=self.clauses, fields=self.fields, keywords=self.keywords,
                                     warnings=self.warnings)


class WRejection(_Wire):
    """:class:`~edr.detect.sigma.loader.Rejection`."""

    path: str
    reason: str
    stage: str
    title: str
    rule_id: str
    logsource: str

    @classmethod
    def of(cls, r: Rejection) -> WRejection:
        return cls(r.path, r.reason, r.stage, r.title, r.rule_id, r.logsource)

    def build(self) -> Rejection:
        return Rejection(self.path, self.reason, self.stage, self.title, self.rule_id, self.logsource)


class WExtRef(_Wire, tag="ref"):
    """An extended correlation condition's rule reference: ``("ref", (kind, number))``."""

    kind: str
    number: int


class WExtNot(_Wire, tag="not"):
    """``("not", [operand])``."""

    operand: WireExtended


class WExtAnd(_Wire, tag="and"):
    """``("and", [operands...])``."""

    operands: tuple[WireExtended, ...]


class WExtOr(_Wire, tag="or"):
    """``("or", [operands...])``."""

    operands: tuple[WireExtended, ...]


WireExtended = Union[WExtRef, WExtNot, WExtAnd, WExtOr]  # noqa: UP007


def _extended_of(node: Any) -> WireExtended:
    """The wire form of an extended condition (nested tuples of :mod:`.correlation`)."""
    kind = node[0]
    if kind == "ref":
        return WExtRef(node[1][0], node[1][1])
    if kind == "not":
        return WExtNot(_extended_of(node[1][0]))
    if kind in ("and", "or"):
        operands = tuple(_extended_of(x) for x in node[1])
        return WExtAnd(operands) if kind == "and" else WExtOr(operands)
    raise CodecError(f"unknown extended correlation condition element {kind!r}")


def _extended_build(wire: WireExtended) -> Any:
    if isinstance(wire, WExtRef):
        return ("ref", (wire.kind, wire.number))
    if isinstance(wire, WExtNot):
        return ("not", [_extended_build(wire.operand)])
    return ("and" if isinstance(wire, WExtAnd) else "or", [_extended_build(x) for x in wire.operands])


class WCorrelation(_Wire):
    """:class:`~edr.detect.sigma.correlation.CompiledCorrelation`, less ``emits`` (set on assembly)."""

    number: int
    meta: WMeta
    kind: str
    refs: tuple[tuple[str, int], ...]
    ref_labels: tuple[str, ...]
    group_by: tuple[str, ...]
    #: (alias, [(reference kind, reference number, field name), ...]) in the rule's order
    aliases: tuple[tuple[str, tuple[tuple[str, int, str], ...]], ...]
    timespan: float
    op: str
    count: float
    fieldref: tuple[str, ...]
    percentile: float | None
    extended: WireExtended | None
    generate: bool

    @classmethod
    def of(cls, c: CompiledCorrelation) -> WCorrelation:
        aliases = tuple((alias, tuple((ref[0], ref[1], field) for ref, field in mapping.items()))
                        for alias, mapping in c.aliases.items())
        extended = None if c.extended is None else _extended_of(c.extended)
        return cls(c.number, WMeta.of(c.meta), c.kind, c.refs, c.ref_labels, c.group_by, aliases, c.timespan,
                   c.op, c.count, c.fieldref, c.percentile, extended, c.generate)

    def build(self) -> CompiledCorrelation:
        aliases = {alias: {(kind, number): field for kind, number, field in mapping}
                   for alias, mapping in self.aliases}
        return CompiledCorrelation(
            number=self.number, meta=self.meta.build(), kind=self.kind, refs=self.refs,
            ref_labels=self.ref_labels, group_by=self.group_by, aliases=aliases, timespan=self.timespan,
            op=self.op, count=self.count, fieldref=self.fieldref, percentile=self.percentile,
            extended=None if self.extended is None else _extended_build(self.extended),
            generate=self.generate)


class WFile(_Wire):
    """:class:`~edr.detect.sigma.ruleset.RuleFile`: what one rule file compiled to."""

    path: str
    digest: str
    rules: tuple[WRule, ...]
    rejections: tuple[WRejection, ...]
    failures: tuple[WRejection, ...]
    correlations: int
    filters: int

    @classmethod
    def of(cls, f: RuleFile) -> WFile:
        return cls(f.path, f.digest, tuple(map(WRule.of, f.rules)), tuple(map(WRejection.of, f.rejections)),
                   tuple(map(WRejection.of, f.failures)), f.correlations, f.filters)

    def build(self) -> RuleFile:
        # numbered within the file here; assembling the set numbers them in the set
        return RuleFile(self.path, self.digest, [w.build(i) for i, w in enumerate(self.rules)],
                        [w.build() for w in self.rejections], [w.build() for w in self.failures],
                        self.correlations, self.filters)


class WStat(_Wire):
    """A rule file's status when its digest was taken (see :class:`~edr.detect.sigma.ruleset.Sources`)."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    digest: str


def statuses_of(sources: Sources) -> tuple[WStat, ...]:
    """The wire forms of the statuses ``sources`` recorded (files without one are left out)."""
    return tuple(WStat(path, *status, digest)
                 for path, digest, status in zip(sources.files, sources.digests, sources.stats, strict=True)
                 if status is not None and digest)


class Payload(msgspec.Struct, frozen=True, gc=False):
    """Everything the cache stores for one rule configuration (a map: fields may be added)."""

    #: digest of the rule paths and placeholders the rules were compiled with
    config: str
    #: digest of ``config`` and every rule file's path and content (see :mod:`.cache`)
    key: str
    #: one encoded :class:`WFile` per rule file, in file order: each is decoded (and checked)
    #: on its own, and a file compiled again unchanged is copied into the next payload as it is
    files: tuple[msgspec.Raw, ...]
    correlations: tuple[WCorrelation, ...]
    #: correlations that did not compile (they refer to rules of any file)
    correlation_failures: tuple[WRejection, ...]
    #: the status each rule file had when digested, for the files whose status can
    #: vouch for their content (:data:`~edr.detect.sigma.ruleset.SETTLED_NS`)
    stats: tuple[WStat, ...] = ()

    @classmethod
    def of(cls, ruleset: RuleSet, *, config: str, key: str,
           known: Mapping[tuple[str, str], msgspec.Raw] | None = None, sources: Sources | None = None) -> Payload:
        """What the cache stores of ``ruleset`` (raises :class:`CodecError` for a class with no wire form).

        ``known`` holds encoded files by (path, content digest): what the same
        engine compiled from the same content, so it is not encoded again.
        ``sources`` gives the files' statuses.
        """
        known = known or {}
        files = []
        for entry in ruleset.files:
            raw = known.get((entry.path, entry.digest)) if entry.digest else None
            files.append(raw if raw is not None else msgspec.Raw(_encode(WFile.of(entry))))
        failures = [r for r in ruleset.report.rejections if r.stage == "correlation"]
        stats = () if sources is None else statuses_of(sources)
        return cls(config, key, tuple(files), tuple(map(WCorrelation.of, ruleset.correlations)),
                   tuple(map(WRejection.of, failures)), stats)

    def statuses(self) -> dict[str, tuple[FileStat, str]]:
        """Each recorded file's status and digest, as :meth:`Sources.find` takes them (``known``)."""
        return {s.path: ((s.device, s.inode, s.size, s.mtime_ns, s.ctime_ns), s.digest) for s in self.stats}

    def build(self) -> tuple[list[RuleFile], list[CompiledCorrelation], list[Rejection]]:
        """New rule files (in the order of ``files``), correlations and correlation failures.

        Each object is made by its class's constructor. Raises
        :class:`CodecError` for a file entry that does not fit its wire form,
        and when a constructor refuses a value (a pattern RE2 rejects, a
        malformed network): data no encoder of this version writes.
        """
        files = [decode_file(raw, f"rule file entry {number}") for number, raw in enumerate(self.files)]
        return (files, [_built(w) for w in self.correlations], [_built(w) for w in self.correlation_failures])


def decode_file(raw: bytes | msgspec.Raw, where: str) -> RuleFile:
    """The rule file encoded in ``raw`` (one entry of :attr:`Payload.files`); :class:`CodecError` names ``where``."""
    try:
        wire = _FILE_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"{where}: {exc}") from exc
    built: RuleFile = _built(wire)
    return built


def encode_file(entry: RuleFile) -> bytes:
    """The encoded form of one rule file, as :attr:`Payload.files` holds it."""
    return _encode(WFile.of(entry))


def _built(wire: WFile | WCorrelation | WRejection) -> Any:
    try:
        return wire.build()
    except Exception as exc:  # whatever a constructor raises on a value it refuses
        raise CodecError(f"a stored value is refused: {type(exc).__name__}: {exc}") from exc


_ENCODER: Final = msgspec.msgpack.Encoder(order="deterministic")
_DECODER: Final = msgspec.msgpack.Decoder(Payload)
_FILE_DECODER: Final = msgspec.msgpack.Decoder(WFile)


def _encode(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode the rule set: {exc}") from exc


def encode(payload: Payload) -> bytes:
    """The msgpack bytes of ``payload``; equal inputs give equal bytes (sets are written sorted)."""
    return _encode(payload)


def decode(data: bytes) -> Payload:
    """The payload in ``data``, checked against the wire forms (raises :class:`CodecError`)."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(str(exc)) from exc

