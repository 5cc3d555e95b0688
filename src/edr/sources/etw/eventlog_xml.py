"""An event's XML as ``EvtRender(EvtRenderEventXml)`` gives it -> the record shape ``edr replay`` decodes (sans-IO).

The live Event Log source reads each record as XML text; the replay
normalizer (:func:`edr.sources.replay.winlog.winlog_record_to_event`) takes
the dict the ``evtx`` package makes of the same record. :func:`parse_event_xml`
produces that dict, so both paths hand SigmaHQ's ``service:`` rules the same
fields::

    <Event xmlns='...'><System><Provider Name='Microsoft-Windows-Security-Auditing' Guid='{...}'/>
      <EventID>4624</EventID>...<TimeCreated SystemTime='2026-01-01T10:00:00.1234567Z'/>...</System>
      <EventData><Data Name='TargetUserName'>alice</Data><Data Name='LogonType'>3</Data></EventData></Event>

    {"Event": {"#attributes": {"xmlns": "..."},
               "System": {"Provider": {"#attributes": {"Name": "...", "Guid": "{...}"}}, "EventID": "4624", ...,
                          "TimeCreated": {"#attributes": {"SystemTime": "2026-01-01T10:00:00.1234567Z"}}},
               "EventData": {"TargetUserName": "alice", "LogonType": "3"}}}

The rules are the ``evtx`` package's: an element with text only is its text;
with attributes, ``{"#attributes": {...}}`` plus ``"#text"`` when it has
text; with children, a dict of them by name. ``<Data Name='N'>v</Data>`` is
``"N": "v"``; unnamed ``<Data>`` elements (classic providers) gather under
``"Data": {"#text": [...]}``; other repeated names become a list. Two
things XML cannot say are rendered as Windows' XML says them: every value is
text (``"4624"``, where ``evtx`` knows the template's integer type: Sigma
compares the text either way), and an element whose value is NULL is empty
text, as an empty string is.

Hardened: the text is parsed by expat with every document type declaration
refused (so no entity is ever declared, let alone expanded, and nothing
external is fetched), no more than :data:`MAX_XML_CHARS` characters and
:data:`MAX_DEPTH` levels of elements. Windows writes a carriage return in
a value as the character itself, which an XML parser must turn into a line
feed; it is kept (as ``evtx`` keeps it) by escaping it before parsing. A
value holding a character XML 1.0 forbids (a C0 control such as the \x02
Windows puts in some Security events' ``PrivilegeList``, raw or as a
character reference) would make the record unparseable: such a record is
parsed again with those characters parked in a private-use range and put
back afterwards, so the value is what Windows wrote (:attr:`ParsedXml.repaired`).
A lone UTF-16 surrogate (broken UTF-16 in a provider's string), which no
writer downstream can encode, becomes U+FFFD. Anything else that is not
well-formed raises :class:`EventXmlError`.
"""

from __future__ import annotations

import re
from typing import Any, Final, NamedTuple
from xml.parsers import expat

#: Longest event XML accepted (characters). Windows caps an event's data at 64 KiB; its XML,
#: escaped, stays well below this.
MAX_XML_CHARS: Final = 4 << 20
#: Deepest element nesting accepted (a Windows event is 4 levels deep: Event/EventData/Data, or 5 with UserData).
MAX_DEPTH: Final = 32

#: The XML declaration some renderers (not EvtRender) put first; it must not be escaped below.
_DECLARATION: Final = re.compile(r"\A\s*<\?xml[^>]*\?>")
#: Characters XML 1.0 does not allow, raw or as a reference (tab, line feed and carriage return are allowed).
_FORBIDDEN_RAW: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CHAR_REF: Final = re.compile(r"&#(x[0-9A-Fa-f]+|[0-9]+);")
_REPLACEMENT: Final = "\ufffd"


class EventXmlError(ValueError):
    """Event XML that cannot become a record; the message says why (and where, for XML errors)."""


class ParsedXml(NamedTuple):
    """The record, and whether characters XML forbids had to be parked (or replaced) to parse it."""

    record: dict[str, Any]
    repaired: bool


class _DtdRefused(Exception):
    """A document type declaration: never in Windows' event XML, refused before anything in it is read."""


class _TooDeep(Exception):
    """Elements nested beyond :data:`MAX_DEPTH`."""


class _Element:
    """One open element while parsing."""

    __slots__ = ("attributes", "children", "name", "text", "unnamed")

    def __init__(self, name: str, attributes: dict[str, str]) -> None:
        self.name = name
        self.attributes = attributes
        self.children: dict[str, Any] | None = None
        self.text: list[str] = []
        self.unnamed: list[Any] | None = None

    def add(self, name: str, value: Any, attributes: dict[str, str]) -> None:
        """A closed child: ``<Data Name='N'>`` under N, unnamed ``<Data>`` gathered, repeats as lists."""
        if self.children is None:
            self.children = {}
        if name == "Data":
            key = attributes.get("Name")
            if key is None:
                text = value.get("#text", "") if isinstance(value, dict) else value
                if self.unnamed is None:
                    self.unnamed = [text]
                    self.children["Data"] = {"#text": text}
                else:
                    self.unnamed.append(text)
                    self.children["Data"] = {"#text": self.unnamed}
                return
            name = key
            value = value.get("#text", "") if isinstance(value, dict) else value
        if name in self.children:
            present = self.children[name]
            if isinstance(present, _Repeated):
                present.append(value)
            else:
                self.children[name] = _Repeated((present, value))
        else:
            self.children[name] = value

    def value(self) -> Any:
        """What this element becomes in the record."""
        text = "".join(self.text)
        children = self.children
        if children is not None:
            out: dict[str, Any] = {}
            if self.attributes:
                out["#attributes"] = self.attributes
            for key, child in children.items():
                out[key] = list(child) if isinstance(child, _Repeated) else child
            if text.strip():  # mixed content; whitespace between children is layout
                out["#text"] = text
            return out
        if self.attributes:
            out = {"#attributes": self.attributes}
            if text:
                out["#text"] = text
            return out
        return text


class _Repeated(list[Any]):
    """Values of a child name seen more than once (told apart from a value that is itself a list)."""


def _escape_carriage_returns(text: str) -> str:
    declaration = _DECLARATION.match(text)
    if declaration is None:
        return text.replace("\r", "&#13;")
    end = declaration.end()
    return text[:end] + text[end:].replace("\r", "&#13;")


def _without_lone_surrogates(text: str) -> str:
    # a string from UTF-16 that was not valid UTF-16: pairs are joined, lone halves become U+FFFD
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


#: Where the characters XML forbids are parked while the text is parsed: the last 256 code points of
#: plane 16 (private use), which XML allows. Control ``c`` is parked at ``_PARKING + c``; U+FFFE, U+FFFF at the end.
_PARKING: Final = 0x10FF00
_PARKED: Final = {code: _PARKING + code for code in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20))} | {
    0xFFFE: 0x10FFFE, 0xFFFF: 0x10FFFF}
_UNPARK: Final = {parked: chr(code) for code, parked in _PARKED.items()}
_PARKING_LOT: Final = re.compile("[\U0010ff00-\U0010ffff]")


def _allowed(code: int) -> bool:
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def _repair(text: str) -> tuple[str, bool]:
    """``text`` with each character XML 1.0 forbids (raw or referenced) parked, or replaced by U+FFFD.

    The second value says whether they were parked (and so must be put back
    after parsing): not when the text already holds characters of the
    parking range, which would then be taken for parked ones.
    """
    park = _PARKING_LOT.search(text) is None

    def raw(match: re.Match[str]) -> str:
        return chr(_PARKED[ord(match.group(0))]) if park else _REPLACEMENT

    def reference(match: re.Match[str]) -> str:
        number = match.group(1)
        code = int(number[1:], 16) if number[0] in "xX" else int(number)
        if _allowed(code):
            return match.group(0)
        return chr(_PARKED[code]) if park and code in _PARKED else _REPLACEMENT

    return _CHAR_REF.sub(reference, _FORBIDDEN_RAW.sub(raw, text)), park


def _unpark(value: Any) -> Any:
    """``value`` (a parsed record or part of one) with the parked characters put back."""
    if isinstance(value, str):
        return value.translate(_UNPARK) if _PARKING_LOT.search(value) else value
    if isinstance(value, dict):
        return {_unpark(key): _unpark(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unpark(item) for item in value]
    return value


def _parse(text: str) -> dict[str, Any]:
    stack: list[_Element] = []
    root: list[tuple[str, Any]] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise _TooDeep
        stack.append(_Element(name, attributes))

    def end(name: str) -> None:
        element = stack.pop()
        value = element.value()
        if stack:
            stack[-1].add(name, value, element.attributes)
        else:
            root.append((name, value))

    def characters(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    def refuse_dtd(*_args: Any) -> None:
        raise _DtdRefused

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.UnparsedEntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(text, True)
    except _DtdRefused:
        raise EventXmlError("has a document type declaration (refused: event XML never declares entities)") from None
    except _TooDeep:
        raise EventXmlError(f"elements nested deeper than {MAX_DEPTH} levels") from None
    except expat.ExpatError as exc:
        raise EventXmlError(f"not well-formed XML: {expat.ErrorString(exc.code)} "
                            f"at line {exc.lineno}, column {exc.offset}") from None
    except UnicodeEncodeError:
        raise _Unencodable from None
    if not root:
        raise EventXmlError("no element")
    name, value = root[0]
    if name != "Event":
        raise EventXmlError(f"the root element is <{name[:40]}>, not <Event>")
    if not isinstance(value, dict):
        raise EventXmlError("<Event> has no elements")
    return {"Event": value}


class _Unencodable(Exception):
    """A lone surrogate in the text: expat takes UTF-8, which cannot encode one."""


def parse_event_xml(text: str) -> ParsedXml:
    """The ``evtx``-shaped record of one event's XML (see the module docstring); raises :class:`EventXmlError`."""
    if not isinstance(text, str):
        raise EventXmlError(f"event XML is {type(text).__name__}, not text")
    if len(text) > MAX_XML_CHARS:
        raise EventXmlError(f"event XML of {len(text):,} characters (at most {MAX_XML_CHARS:,} are read)")
    escaped = _escape_carriage_returns(text)
    try:
        return ParsedXml(_parse(escaped), False)
    except _Unencodable:
        escaped = _without_lone_surrogates(escaped)
        error: EventXmlError | None = None
    except EventXmlError as exc:
        error = exc
    repaired, parked = _repair(escaped)
    if error is not None and repaired == escaped:
        raise error
    try:
        record = _parse(repaired)
    except EventXmlError as exc:
        raise (error or exc) from None  # the first error names the place in the text as it came
    except _Unencodable:  # pragma: no cover - the lone surrogates were replaced above
        raise EventXmlError("holds characters that cannot be encoded") from None
    return ParsedXml(_unpark(record) if parked else record, True)
