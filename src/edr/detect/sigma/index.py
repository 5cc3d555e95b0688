"""Literal index: which rules of one logsource route an event can possibly match.

Built from each rule's necessary literals (:mod:`edr.detect.sigma.literals`):
per field, a dict from exact lower-cased value to rule numbers, and one
Aho-Corasick automaton over all substring literals; keyword (field-less)
literals have one automaton over the values of the whole event. An event
costs one dict lookup per indexed field value plus one automaton pass over
it, whatever the number of rules; only the returned candidates are
evaluated. Rules without a necessary literal set are always candidates.

What a str or int value meets depends on the value alone, and a host's
values recur (images, parents, users, a service's command lines): each
route remembers the last few hundred per field and for its keywords
(:data:`MEMO_VALUES`), so that a recurring value costs one dict read. An
exec storm's process_creation costs 2.3 us of candidate selection instead
of 8 (``scripts/bench_detect_linux.py``).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

import ahocorasick
import ahocorasick_rs

from edr.detect.sigma.literals import ANY_FIELD, Needs
from edr.detect.sigma.matchers import MatchContext, to_strings
from edr.text import replaced

#: Values remembered per indexed field of a route, and for its keywords (then forgotten all at once) ...
MEMO_VALUES = 512
#: ... each of at most this many characters: at most ~200 KB per field, a few MB for a route's fields.
MEMO_VALUE_CHARS = 256
#: the characters of an int's decimal form
_INT_CHARS = frozenset("0123456789-")

#: Per-field automata already built for a rule set, by field and words (each with its clause numbers):
#: the words say all an automaton holds, so one is reused only where it would be built the same. The
#: routes of one category share most rules (``process_creation`` through Sysmon and through Security
#: 4688), and with them their largest automata (``CommandLine``: ~11,000 words, ~15 ms to build).
SharedAutomata: TypeAlias = dict[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], "ahocorasick.Automaton"]


class RouteIndex:
    """Candidate selection for the rules of one (product, category, service) route.

    Every rule contributes up to a few clauses; each clause's literals point
    at the clause. An event's literals give the set of clauses it meets, and a
    rule is a candidate when all of its clauses are met.

    One clause of each rule is its anchor: the one whose literals the fewest
    other clauses share, a proxy for the one events meet least often. Only
    rules whose anchor is met are looked at further, with one C-level subset
    test for the rest of their clauses. Counting met clauses per rule instead
    costs Python work for every met clause, and most met clauses belong to
    rules that are not candidates (an ``Image`` ending in ``\\cmd.exe`` meets
    one clause of nearly a hundred SigmaHQ rules).
    """

    __slots__ = ("always", "anchor_set", "anchors", "any_exact", "exact", "field_memo", "fields", "keyword_ids",
                 "keyword_memo", "keyword_words", "keywords", "keywords_in_ints", "rules", "substr")

    def __init__(self, entries: Iterable[tuple[int, tuple[Needs, ...] | None]], *,
                 first_clause: Sequence[int] | None = None, automata: SharedAutomata | None = None) -> None:
        """Index the rules of ``entries`` (rule number, its clauses; None: always a candidate).

        ``first_clause`` numbers the clauses across a whole rule set (its entry
        for a rule: the number of the rule's first clause; else they are numbered
        in this route): a rule's clauses then have the same numbers in every route,
        so that two routes whose rules read one field alike can share that field's
        automaton, kept in ``automata`` (see :data:`SharedAutomata`).
        """
        exact: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        substr: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        always: list[int] = []
        rules: list[int] = []
        rule_clauses: list[tuple[int, list[int]]] = []
        clause_count = 0
        for rule, clauses in entries:
            rules.append(rule)
            if not clauses:  # None (or no clause): nothing necessary is known, always evaluate
                always.append(rule)
                continue
            first = clause_count if first_clause is None else first_clause[rule]
            ids = list(range(first, first + len(clauses)))
            clause_count = max(clause_count, ids[-1] + 1)
            rule_clauses.append((rule, ids))
            for clause_id, clause in zip(ids, clauses, strict=True):
                # sorted: a frozenset iterates in an order that varies with the hash seed, and the
                # tables and automata built here should be the same for the same rules. A clause
                # holds a literal once (a set), so no clause is listed twice under one literal.
                for field, kind, text in sorted(clause):
                    (exact if kind == "eq" else substr)[field][text].append(clause_id)
        #: every rule of the route, in load order
        self.rules: tuple[int, ...] = tuple(rules)
        self.always: tuple[int, ...] = tuple(always)
        #: anchor clause -> (its rule, the rule's other clauses)
        self.anchors = _anchors(rule_clauses, [exact, substr], clause_count)
        self.anchor_set = frozenset(self.anchors)
        self.exact: dict[str, dict[str, tuple[int, ...]]] = {
            f: {v: tuple(c) for v, c in table.items()} for f, table in exact.items()
        }
        #: keyword (field-less) equality literals: any value of the event equal to one
        self.any_exact = self.exact.pop(ANY_FIELD, None)
        # Keyword literals are searched in the whole event's text at once, where
        # ahocorasick_rs takes half the instructions of pyahocorasick (callgrind);
        # on short per-field values pyahocorasick's cheaper call wins.
        keywords = substr.pop(ANY_FIELD, {})
        self.keyword_words: tuple[str, ...] = tuple(keywords)
        self.keywords = _keyword_automaton(self.keyword_words)
        self.keyword_ids: tuple[tuple[int, ...], ...] = tuple(map(tuple, keywords.values()))
        #: whether some keyword literal can be found in an int's decimal digits (else ints are skipped)
        self.keywords_in_ints = any(set(word) <= _INT_CHARS for word in self.keyword_words)
        #: recent str and int values -> the keyword clauses found in them (see candidates)
        self.keyword_memo: dict[str | int, tuple[int, ...]] = {}
        self.substr: dict[str, ahocorasick.Automaton] = {}
        for field, table in substr.items():
            words = tuple((text, tuple(ids)) for text, ids in table.items())
            automaton = automata.get((field, words)) if automata is not None else None
            if automaton is None:
                automaton = _automaton(words)
                if automata is not None:
                    automata[(field, words)] = automaton
            self.substr[field] = automaton
        self.fields = frozenset(self.exact) | frozenset(self.substr)
        #: per indexed field: recent values (str or int) -> the clauses they meet (see candidates)
        self.field_memo: dict[str, dict[str | int, tuple[int, ...]]] = {field: {} for field in self.fields}

    def candidates(self, ctx: MatchContext) -> set[int]:
        """Rule numbers whose clauses the event all meets (plus the unindexed)."""
        hit: set[int] = set()
        update = hit.update
        any_exact = self.any_exact
        fields = ctx.fields
        lows = None
        if any_exact is not None:
            # keyword equality needs every value lower-cased anyway: do it in one pass,
            # then the per-field lookups below are plain dict reads
            ctx.all_low()
            lows = ctx.lows()
        field_memo = self.field_memo
        # the set intersection runs in C: only fields both present and indexed cost anything
        for field in fields.keys() & self.fields:
            if lows is not None:
                values = lows.get(field)
            else:
                # A live event's field holds one str or int. The clauses a value meets depend
                # on the value alone, and the same values recur (an image, a parent, a
                # service's command line): they are remembered per field, so a recurring
                # value costs one dict read instead of lowering, lookups and an automaton pass.
                value = fields[field]
                kind = type(value)
                if kind is str or kind is int:
                    memo = field_memo[field]
                    met = memo.get(value)
                    if met is None:
                        met = self._met(field, value.lower() if kind is str else str(value))
                        if kind is int or len(value) <= MEMO_VALUE_CHARS:
                            if len(memo) >= MEMO_VALUES:
                                memo.clear()  # cheaper than LRU bookkeeping; refills from the recurring values
                            memo[value] = met
                    if met:
                        update(met)
                    continue
                values = ctx.low(field)
            if not values:
                continue
            table = self.exact.get(field)
            if table is not None:
                for text in values:
                    ids = table.get(text)
                    if ids:
                        update(ids)
            automaton = self.substr.get(field)
            if automaton is not None:
                for text in values:
                    for _end, ids in automaton.iter(text):
                        update(ids)
        if any_exact is not None:
            for value in ctx.all_low():
                ids = any_exact.get(value)
                if ids:
                    update(ids)
        if self.keywords is not None and lows is None:
            # No literal spans two values (none holds a NUL), so the keyword clauses an event
            # meets are those of its values, each remembered like a field's value above;
            # the values not seen yet share one automaton pass.
            memo = self.keyword_memo
            in_ints = self.keywords_in_ints
            new: list[tuple[str | int | None, str]] = []
            for value in fields.values():
                kind = type(value)
                if kind is str:
                    key: str | int = value
                elif kind is int:
                    if not in_ints:
                        continue
                    key = value
                elif kind is bool:
                    key = "true" if value else "false"  # its Sigma string form; True as a key would be 1
                else:
                    # None has no string form; float and list values have theirs (to_strings), not kept
                    new.extend((None, text.lower()) for text in to_strings(value) or ())
                    continue
                met = memo.get(key)
                if met is None:
                    new.append((key, key.lower() if isinstance(key, str) else str(key)))
                elif met:
                    update(met)
            if new:
                self._learn_keywords(new, update)
        elif self.keywords is not None:
            keyword_ids = self.keyword_ids
            text = ctx.keyword_text()
            try:
                found_words = self.keywords.find_matches_as_indexes(text, True)
            except UnicodeEncodeError:
                # bytes that are not UTF-8 (edr.text) must not hide the keywords around them
                found_words = self.keywords.find_matches_as_indexes(replaced(text), True)
            for number, _start, _end in found_words:
                update(keyword_ids[number])
        found: set[int] = set(self.always)
        if hit:
            anchors = self.anchors
            met_all = hit.issuperset
            for anchor in hit & self.anchor_set:
                rule, others = anchors[anchor]
                if not others or met_all(others):
                    found.add(rule)
        return found

    def _learn_keywords(self, new: list[tuple[str | int | None, str]],
                        update: Callable[[Iterable[int]], None]) -> None:
        """Search ``new`` (key, lower-cased text) values in one pass; hand on and remember what each meets."""
        assert self.keywords is not None
        text = "\0".join([low for _key, low in new])
        try:
            found = self.keywords.find_matches_as_indexes(text, True)
        except UnicodeEncodeError:
            # bytes that are not UTF-8 (edr.text) must not hide the keywords around them;
            # each such character stays one character, so the offsets hold
            found = self.keywords.find_matches_as_indexes(replaced(text), True)
        keyword_ids = self.keyword_ids
        met: list[list[int]] = [[] for _ in new]
        if found:
            starts = list(itertools.accumulate((len(low) + 1 for _key, low in new[:-1]), initial=0))
            for number, start, _end in found:
                met[bisect.bisect_right(starts, start) - 1].extend(keyword_ids[number])
        memo = self.keyword_memo
        for (key, low), ids in zip(new, met, strict=True):
            if ids:
                update(ids)
            if key is not None and len(low) <= MEMO_VALUE_CHARS:
                if len(memo) >= MEMO_VALUES:
                    memo.clear()
                memo[key] = tuple(ids)

    def _met(self, field: str, text: str) -> tuple[int, ...]:
        """The clauses one lower-cased value of ``field`` meets (exact values and substrings)."""
        met: list[int] = []
        table = self.exact.get(field)
        if table is not None:
            ids = table.get(text)
            if ids:
                met.extend(ids)
        automaton = self.substr.get(field)
        if automaton is not None:
            for _end, ids in automaton.iter(text):
                met.extend(ids)
        return tuple(met)


def _automaton(words: tuple[tuple[str, tuple[int, ...]], ...]) -> ahocorasick.Automaton:
    """An automaton finding each word of ``words`` in a value, with the clause numbers it is paired with."""
    automaton = ahocorasick.Automaton()
    for text, ids in words:
        automaton.add_word(text, ids)
    automaton.make_automaton()
    return automaton


def _anchors(rule_clauses: list[tuple[int, list[int]]], tables: list[dict[str, dict[str, list[int]]]],
             clause_count: int) -> dict[int, tuple[int, tuple[int, ...]]]:
    """Each rule's anchor clause (least shared literals) -> (rule, its other clauses)."""
    shared = [0] * clause_count
    for table in tables:
        for by_text in table.values():
            for ids in by_text.values():
                for clause_id in ids:
                    shared[clause_id] += len(ids)
    anchors: dict[int, tuple[int, tuple[int, ...]]] = {}
    for rule, ids in rule_clauses:
        anchor = min(ids, key=shared.__getitem__)
        anchors[anchor] = (rule, tuple(c for c in ids if c != anchor))
    return anchors


def _keyword_automaton(words: tuple[str, ...]) -> ahocorasick_rs.AhoCorasick | None:
    """The keyword automaton (pattern numbers index ``keyword_ids``), or None without words."""
    return _shared_dfa(words) if words else None


@functools.lru_cache(maxsize=64)
def _shared_dfa(words: tuple[str, ...]) -> ahocorasick_rs.AhoCorasick:
    """A DFA over ``words``, one per distinct word list.

    A DFA searches the whole event's text in about two thirds of the time of
    the default automaton (the text is long, the word lists short), but is
    larger (1.3 MB for the 153 field-less words of ``product: linux``): the
    routes of one product share their field-less rules, and so one automaton.
    """
    return ahocorasick_rs.AhoCorasick(list(words), implementation=ahocorasick_rs.Implementation.DFA)
