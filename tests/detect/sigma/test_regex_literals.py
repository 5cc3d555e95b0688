"""regex_literals: substrings one of which every match contains (the literal index and the RE2 prefilter trust them)."""

from __future__ import annotations

import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from edr.detect.sigma.regex_literals import MAX_RUN_ALTERNATIVES, regex_literals

PATTERNS = ["-(W|R)\\s?(\\s|\"|')([0-9a-fA-F]{2}\\s?){2,20}(\\s|\"|')", "(?:abc|de)f", "a(b|cd)", "[Ww]get",
            "a(|b)c", "x(?:y|z)*w", "(ab|c)(d|ef)g", "q[^a]r", "(?i)Foo(bar)?baz", "(a|b|c|d)(e|f|g|h)(i|j)",
            "net (user|group) /add", "(cmd|powershell)\\.exe", "a|b", "(?:x|y[0-9])z"]
PIECES = st.sampled_from(["-W", "-R", "-w", " ", "'", "\"", "0a", "FF", "abc", "de", "f", "a", "b", "cd", "c",
                          "Wget", "wget", "x", "y", "z", "w", "q", "r", "Foo", "bar", "baz", "d", "ef", "g",
                          "net user /add", "group", "cmd.exe", "powershell.exe", "y1", "e", "h", "i", "j"])


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(PATTERNS), st.lists(PIECES, max_size=8).map("".join))
def test_every_match_contains_a_literal(pattern: str, value: str) -> None:
    literals = regex_literals(pattern)
    if literals is None or re2.search(pattern, value) is None:
        return
    assert any(text in value.lower() for text in literals), (pattern, value, literals)


def test_a_run_goes_on_through_a_group_of_fixed_strings() -> None:
    # Pnscan's rule: "-" alone is in nearly every command line, "-w" / "-r" in few
    assert regex_literals("-(W|R)\\s?(\\s|\"|')([0-9a-fA-F]{2}\\s?){2,20}(\\s|\"|')") == {"-w", "-r"}
    assert regex_literals("[Ww]get") == {"wget"}
    assert regex_literals("net (user|group) /add") == {"net user /add", "net group /add"}
    assert regex_literals("a(|b)c") == {"ac", "abc"}


def test_a_run_stops_growing_at_the_bound() -> None:
    # 2 * 2 * 2 * 2 * 2 alternatives would be 32: the run is cut, each part stays necessary
    found = regex_literals("(a|b)(c|d)(e|f)(g|h)(i|j)")
    assert found is not None and len(found) <= MAX_RUN_ALTERNATIVES
    assert all(len(text) >= 1 for text in found)
