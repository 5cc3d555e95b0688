"""RouteIndex: the candidate rules of an event, and the per-field memory of recurring values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edr.detect.sigma.index import MEMO_VALUE_CHARS, MEMO_VALUES, RouteIndex
from edr.detect.sigma.matchers import MatchContext, to_strings


def _index() -> RouteIndex:
    return RouteIndex([
        (0, (frozenset({("Image", "sub", "/evil")}),)),
        (1, (frozenset({("CommandLine", "eq", "whoami")}),)),
        (2, (frozenset({("DestinationPort", "eq", "4444")}),)),
        (3, (frozenset({("Image", "sub", "/tool")}), frozenset({("CommandLine", "sub", "-x")}))),
    ])


def candidates(index: RouteIndex, fields: dict[str, object]) -> set[int]:
    return index.candidates(MatchContext(fields))


def test_a_remembered_value_gives_the_same_candidates_and_stays_with_its_field() -> None:
    index = _index()
    for _ in range(3):  # first computed, then remembered: the same answer
        assert candidates(index, {"Image": "/usr/bin/EVIL", "CommandLine": "WhoAmI"}) == {0, 1}
        assert candidates(index, {"CommandLine": "/usr/bin/EVIL"}) == set()  # Image's literal, not CommandLine's
        assert candidates(index, {"Image": "whoami"}) == set()
        assert candidates(index, {"DestinationPort": 4444}) == {2}
        assert candidates(index, {"DestinationPort": "4444"}) == {2}
        assert candidates(index, {"DestinationPort": True}) == set()  # "true", not 1
        assert candidates(index, {"Image": "/opt/tool", "CommandLine": "run -X"}) == {3}
        assert candidates(index, {"Image": "/opt/tool", "CommandLine": "run"}) == set()
    assert index.field_memo["Image"]["/usr/bin/EVIL"] == (0,)


def test_the_memory_is_bounded() -> None:
    index = _index()
    for n in range(MEMO_VALUES + 10):
        assert candidates(index, {"Image": f"/bin/x{n}"}) == set()
        assert len(index.field_memo["Image"]) <= MEMO_VALUES
    long_value = "/evil" + "a" * MEMO_VALUE_CHARS
    assert candidates(index, {"Image": long_value}) == {0}
    assert long_value not in index.field_memo["Image"]  # long values are not kept, still matched


def _keyword_index(*words: str) -> RouteIndex:
    return RouteIndex([(n, (frozenset({("*", "sub", word)}),)) for n, word in enumerate(words)])


def test_keywords_are_found_in_every_kind_of_value_remembered_or_not() -> None:
    index = _keyword_index("wget ", "true", "4444", "1.5", "\u03c3")
    assert index.keywords_in_ints
    for _ in range(2):  # computed, then remembered
        assert candidates(index, {"CommandLine": "sh -c 'WGET http://x'", "Pid": 4, "Flag": False}) == {0}
        assert candidates(index, {"Pid": 44445, "Flag": True}) == {1, 2}
        assert candidates(index, {"Ratio": 1.5, "Names": ["a", "ΣX"], "Gone": None}) == {3, 4}
        assert candidates(index, {"Path": "/tmp/\udcff\udcfewget \udcff"}) == {0}  # bytes that are not UTF-8
        assert candidates(index, {"A": "wge", "B": "t x"}) == set()  # never across two values
    assert index.keyword_memo[44445] == (2,)


def test_ints_are_skipped_when_no_keyword_can_be_in_one() -> None:
    index = _keyword_index("wget", "-9x")
    assert not index.keywords_in_ints
    assert candidates(index, {"Pid": 12345, "CommandLine": "wget"}) == {0}
    assert 12345 not in index.keyword_memo


def test_the_keyword_memory_is_bounded() -> None:
    index = _keyword_index("evil")
    for n in range(MEMO_VALUES + 10):
        assert candidates(index, {"CommandLine": f"run {n}", "Image": f"/bin/evil{n % 3}"}) == {0}
        assert len(index.keyword_memo) <= MEMO_VALUES


WORDS = ["ab", "\u03c3", "12", "true", "-1", "x y", "\u0130".lower()]
PIECE = st.sampled_from(["ab", "AB", "Σ", "ΑΣ", "1", "2", "-", "x", " ", "y", "İ", "true", "\udcff", "é"])
VALUE = st.one_of(st.lists(PIECE, max_size=4).map("".join), st.integers(-20, 200), st.booleans(), st.none(),
                  st.floats(allow_nan=False, allow_infinity=False), st.lists(st.lists(PIECE, max_size=3).map("".join),
                                                                            max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["A", "B", "C"]), VALUE, max_size=3), min_size=1, max_size=4))
def test_keyword_candidates_are_the_values_holding_a_literal(events: list[dict[str, object]]) -> None:
    # the same index over several events: remembered values must answer as fresh ones
    index = _keyword_index(*WORDS)
    for fields in events:
        lows = [text.lower() for value in fields.values() for text in to_strings(value) or ()]
        expected = {n for n, word in enumerate(WORDS) if any(word in low for low in lows)}
        assert candidates(index, fields) == expected, (fields, lows)
