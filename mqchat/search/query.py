"""The search query language: what a user types, parsed into engine-neutral terms (pure).

Grammar (everything else is plain text)::

    query   = term { whitespace term }
    term    = phrase | prefix | word
    phrase  = '"' text '"'                 an exact sequence of words
    prefix  = word-ending-in-a-letter-or-digit '*'   search-as-you-type: ``hel*`` finds hello
    word    = run of non-space characters other than '"'

All terms must match (AND). There are no operators: ``NEAR``, ``AND``, ``OR``, ``NOT``, ``-x``,
``^x``, ``col:x``, parentheses and ``*`` are searched as the text they are, and an unbalanced
``"`` is ignored. Each backend compiles a :class:`Query` to its engine's syntax from quoted,
parameterized pieces only, so nothing the user types is ever engine syntax.

Case and accents are folded by the engines (both fold the indexed text the same way); the parser
NFKC-normalizes the text, as the indexer does with bodies. A term with no letter or digit (``*``,
``(``, ``!!``) has nothing to search for and is dropped.

Limits (each raises :class:`InvalidSearch` with a stable code):

==================  ============================================================================
``empty_query``     empty, whitespace only, or nothing searchable left after dropping terms
``query_too_long``  more than :data:`MAX_QUERY_CHARS` characters (before and after normalizing)
``too_many_terms``  more than :data:`MAX_TERMS` terms
==================  ============================================================================
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mqchat.search.errors import InvalidSearch

MAX_QUERY_CHARS: Final = 256
"""Longest query, in characters: longer input is not something a person typed to find a message."""
MAX_TERMS: Final = 32
"""Most terms in a query: each one is a posting-list intersection in the engine."""
MIN_PREFIX_CHARS: Final = 2
"""A prefix needs this many letters or digits; ``h*`` would walk most of the index, so it is the word ``h``."""

# Characters that are never part of a term: control characters, lone surrogates (not valid UTF-8,
# so no engine accepts them) and the snippet sentinels (base.MARK_START / MARK_END).
_DROP_CATEGORIES: Final = frozenset({"Cc", "Cs"})
_SENTINELS: Final = frozenset({"\ue000", "\ue001"})


class TermKind(StrEnum):
    WORD = "word"
    PHRASE = "phrase"
    PREFIX = "prefix"


@dataclass(frozen=True, slots=True)
class Term:
    """One thing to find.

    ``text`` is what the user typed (NFKC-normalized, whitespace collapsed), without the quotes of a
    phrase or the ``*`` of a prefix. A word with punctuation inside (``user_42``, ``@alice``,
    ``example.com/a``) is matched as the sequence of tokens the engine cuts it into.
    """

    kind: TermKind
    text: str


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: the conjunction of its terms (at least one, at most :data:`MAX_TERMS`)."""

    terms: tuple[Term, ...]

    def key(self) -> str:
        """A canonical string of this query (binds a cursor to it)."""
        return json.dumps([[t.kind.value, t.text] for t in self.terms], ensure_ascii=False)

    def __str__(self) -> str:
        shown = {TermKind.WORD: "{}", TermKind.PHRASE: '"{}"', TermKind.PREFIX: "{}*"}
        return " ".join(shown[t.kind].format(t.text) for t in self.terms)


def _searchable(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(" " if c in _SENTINELS or unicodedata.category(c) in _DROP_CATEGORIES else c for c in text)


def parse(text: str) -> Query:
    """Parse what the user typed.

    Raises:
        InvalidSearch: ``empty_query``, ``query_too_long`` or ``too_many_terms``.
    """
    too_long = f"a query has at most {MAX_QUERY_CHARS} characters"
    stripped = text.strip()
    if len(stripped) > MAX_QUERY_CHARS:
        raise InvalidSearch("query_too_long", too_long)
    clean = _clean(stripped)
    if len(clean) > MAX_QUERY_CHARS:  # NFKC can expand a character into several
        raise InvalidSearch("query_too_long", too_long)
    terms: list[Term] = []
    i, n = 0, len(clean)
    while i < n:
        c = clean[i]
        if c.isspace():
            i += 1
        elif c == '"':
            close = clean.find('"', i + 1)
            if close < 0:  # a stray quote is plain text: ignore it
                i += 1
                continue
            phrase = " ".join(clean[i + 1:close].split())
            if _searchable(phrase):
                terms.append(Term(TermKind.PHRASE, phrase))
            i = close + 1
        else:
            j = i
            while j < n and not clean[j].isspace() and clean[j] != '"':
                j += 1
            word, i = clean[i:j], j
            base = word.rstrip("*")
            if (base != word and base and base[-1].isalnum()
                    and sum(ch.isalnum() for ch in base) >= MIN_PREFIX_CHARS):
                terms.append(Term(TermKind.PREFIX, base))
            elif _searchable(base):
                terms.append(Term(TermKind.WORD, base))
    if not terms:
        raise InvalidSearch("empty_query", "type at least one word to search for")
    if len(terms) > MAX_TERMS:
        raise InvalidSearch("too_many_terms", f"a query has at most {MAX_TERMS} terms")
    return Query(tuple(terms))
