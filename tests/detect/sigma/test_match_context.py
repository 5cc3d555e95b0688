"""MatchContext: the lower-cased forms Sigma compares, computed in one pass, equal value by value."""

from __future__ import annotations

from typing import Any

import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from edr.detect.sigma.matchers import LongRun, MatchContext, RegexSearch, _matcher, long_run, to_strings

# Letters whose lower case depends on context or changes length are the risky ones
# for lowering many values in one call: final sigma, dotted capital I, ligatures.
TRICKY = st.sampled_from(["Σ", "ΑΣ", "İ", "ß", "ﬃ", "\0", "A\0B", "", " ", "Ω", "ǅ"])
TEXT = st.one_of(st.text(max_size=12), TRICKY, st.lists(TRICKY, max_size=3).map("".join))
VALUE = st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
                  st.lists(TEXT, max_size=3))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["A", "B", "C", "D", "E"]), VALUE, max_size=5))
def test_all_low_equals_lowering_each_value(fields: dict[str, Any]) -> None:
    expected_per_field = {}
    expected_all: list[str] = []
    for name, value in fields.items():
        strings = to_strings(value)
        lows = None if not strings else tuple(s.lower() for s in strings)
        expected_per_field[name] = lows
        expected_all.extend(lows or ())
    ctx = MatchContext(fields)
    assert ctx.all_low() == tuple(expected_all)
    assert ctx.all_low_joined() == "\0".join(expected_all)
    for name in fields:
        assert ctx.lows()[name] == expected_per_field[name]
        assert ctx.low(name) == expected_per_field[name]
    fresh = MatchContext(fields)  # the per-field route gives the same, before or after
    assert all(fresh.low(name) == expected_per_field[name] for name in fields)
    assert fresh.all_low() == tuple(expected_all)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["A", "B", "C", "D", "E"]), VALUE, max_size=5))
def test_keyword_text_holds_every_lowered_value(fields: dict[str, Any]) -> None:
    # the keyword literal search runs on this text: a value it lacked would be a missed rule
    text = MatchContext(fields).keyword_text()
    for name, value in fields.items():
        for low in (s.lower() for s in to_strings(value) or ()):
            assert low in text, (name, value, text)


PATTERNS = ["foo.*bar", "a|bc", "cmd\\.exe /c (whoami|net user)", "(?i)foo", "X[0-9]+Y", "ΑΣ", "İx",
            "(?s)ab.c", "^start", "end$", "(?:Foo|BAR)baz", "[a-z]+"]
PIECES = st.sampled_from(["foo", "FOO", "bar", "a", "bc", "cmd.exe /c ", "whoami", "net user", "X1Y", "ΑΣ",
                          "ΑΣΒ", "İ", "İx", "x", "\u017f", "ab\nc", "start", "end", "Foobaz", "BARbaz", " ", "\0"])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATTERNS), st.lists(st.lists(PIECES, max_size=5).map("".join), min_size=1, max_size=3))
def test_regex_literal_prefilter_never_changes_a_result(pattern: str, values: list[str]) -> None:
    # the prefilter skips RE2 on values lacking every required literal: it must never skip a match
    test = RegexSearch(pattern)
    raws = tuple(values)
    lows = tuple(v.lower() for v in raws)
    expected = any(re2.search(pattern, v) is not None for v in raws)
    assert test.hit(raws, lows, MatchContext({})) == expected
    assert test.hit(raws, None, MatchContext({})) == expected


RUN_PATTERNS = st.builds(
    lambda flags, dot, low, upper: f"{flags}{dot}{{{low}{upper}}}",
    st.sampled_from(["", "(?s)", "(?i)", "(?m)", "(?is)", "(?ms)"]),
    st.sampled_from([".", "(.)", "(?:.)"]),
    st.integers(min_value=0, max_value=6),
    st.sampled_from(["", ",", ",6", ",9"]),
)
RUN_TEXT = st.lists(st.sampled_from(["a", "b", "\n", "\r", "Σ", "\u2028", " ", "\0", "\x85"]), max_size=14).map("".join)


@settings(max_examples=600, deadline=None)
@given(RUN_PATTERNS, st.lists(RUN_TEXT, min_size=1, max_size=3))
def test_long_run_equals_re2_search(pattern: str, values: list[str]) -> None:
    # ".{N,}" is decided by a length test instead of RE2: it must agree with RE2 everywhere,
    # newlines and the other line separators (which RE2's dot does match) included
    test = long_run(pattern)
    assert isinstance(test, LongRun), pattern
    expected = any(re2.search(pattern, v) is not None for v in values)
    assert test.hit(tuple(values), None, MatchContext({})) == expected


def test_long_run_shape_only() -> None:
    for pattern in ("^.{3,}", ".{3,}$", "a.{3}", ".{3}a", "[^/]{100,}$", ".+", "x{3}", ".{4,2}"):
        assert long_run(pattern) is None, pattern
    run = long_run(".{1000,}")
    assert run is not None and run.length == 1000 and not run.dotall
    # beyond RE2's repetition limit of 1000: still exact, and the rule loads
    assert long_run("(?s).{5000}") is not None


class _PublicOnly:
    """A compiled pattern seen only through google-re2's public API."""

    def __init__(self, pattern: str) -> None:
        self.rx = re2.compile(pattern)

    def search(self, value: str) -> object:
        return self.rx.search(value)

    def fullmatch(self, value: str) -> object:
        return self.rx.fullmatch(value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATTERNS), st.lists(PIECES, max_size=5).map("".join))
def test_direct_re2_call_equals_public_api(pattern: str, value: str) -> None:
    # the yes/no matcher calls RE2 below the wrapper; it and the fallback must agree with search/fullmatch
    compiled = re2.compile(pattern)
    for anchor, public in (("UNANCHORED", compiled.search), ("ANCHOR_BOTH", compiled.fullmatch)):
        expected = public(value) is not None
        assert _matcher(compiled, anchor)(value) == expected
        assert _matcher(_PublicOnly(pattern), anchor)(value) == expected
