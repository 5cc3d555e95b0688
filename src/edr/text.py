"""Text that is not valid Unicode, as live events carry it.

A Linux path or argv is bytes; the sensor decodes them with
``surrogateescape``, so a byte that is not UTF-8 (``\\xff`` in a file name)
becomes a lone surrogate (``\\udcff``). Python's ``str`` methods accept such
text, but C libraries that take UTF-8 (RE2, ahocorasick_rs) and JSON encoders
(orjson) refuse it. Every place that hands event text to one of them goes
through here, so that such a name can neither hide an event from detection
nor stop a writer.
"""

from __future__ import annotations

#: every surrogate code point -> U+FFFD REPLACEMENT CHARACTER
_TO_REPLACEMENT = dict.fromkeys(range(0xD800, 0xE000), "\ufffd")


def replaced(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the same object if it has none).

    For matching: a byte that was not UTF-8 stays one character, which a
    regular expression's ``.`` matches and no literal of a rule contains.
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.translate(_TO_REPLACEMENT)
    return text


def utf8(text: str) -> bytes:
    """``text`` as UTF-8 bytes, never raising: lone surrogates become U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.translate(_TO_REPLACEMENT).encode()


def printable(text: str) -> str:
    """``text`` if it is valid Unicode, else with its lone surrogates spelt out.

    For writing: a surrogate escape shows the byte it stands for (``\\xff``),
    so an analyst sees the real name; when other lone surrogates are present
    every one shows as ``\\udcff``. Valid text comes back as the same object.
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode()
    return text
