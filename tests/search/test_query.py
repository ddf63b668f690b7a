"""The query parser (pure) and the compilers to engine syntax, with property tests that run every
compiled query against a real FTS5 table (and a real PostgreSQL server for tsquery)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqchat.search import MAX_QUERY_CHARS, MAX_TERMS, InvalidSearch, Query, Term, TermKind, parse
from mqchat.search.postgres import PostgresSearchIndex, compile_tsquery, tsquery_literal
from mqchat.search.sqlite import SCHEMA, compile_match

W, P, X = TermKind.WORD, TermKind.PHRASE, TermKind.PREFIX
CODES = {"empty_query", "query_too_long", "too_many_terms"}

# Text a user types, heavy in what engines treat as syntax.
SYNTAX = [*' \t"\'*()-^:+~!&|<>@#/\\.,;?=[]{}%_$`', "NEAR", "AND", "OR", "NOT", "<->", ":*", "é", "ß", "İ"]
_typed = st.lists(st.one_of(st.sampled_from(SYNTAX), st.text(alphabet="abcXYZ019éüñ", min_size=1, max_size=6)),
                  max_size=40).map("".join)
queries = st.one_of(
    st.text(max_size=MAX_QUERY_CHARS + 20),
    _typed,
    _typed.map(lambda q: q + "ab*"),  # ends in a prefix term: its text goes into to_tsquery
)


def terms(q: str) -> list[tuple[TermKind, str]]:
    return [(t.kind, t.text) for t in parse(q).terms]


@pytest.mark.parametrize(("q", "expected"), [
    ("hello", [(W, "hello")]),
    ("  hello   world ", [(W, "hello"), (W, "world")]),
    ('"quick  brown" fox', [(P, "quick brown"), (W, "fox")]),
    ("hel*", [(X, "hel")]),
    ("hel**", [(X, "hel")]),
    ("h*", [(W, "h")]),  # too short to be a prefix
    ("foo-*", [(W, "foo-")]),
    ("a*b", [(W, "a*b")]),
    ("*", None), ("**  *", None),
    ('"unbalanced quote', [(W, "unbalanced"), (W, "quote")]),
    ('say "hi" there"', [(W, "say"), (P, "hi"), (W, "there")]),
    ('a"b"c', [(W, "a"), (P, "b"), (W, "c")]),
    ("NEAR(a b)", [(W, "NEAR(a"), (W, "b)")]),
    ("cats OR dogs", [(W, "cats"), (W, "OR"), (W, "dogs")]),
    ("-x ^y col:z", [(W, "-x"), (W, "^y"), (W, "col:z")]),
    ("<@u42> @alice", [(W, "<@u42>"), (W, "@alice")]),
    ("https://example.com/a?b=c", [(W, "https://example.com/a?b=c")]),
    ("\uff48\uff45\uff4c\uff4c\uff4f", [(W, "hello")]),  # full-width letters: NFKC
    ("Cafe\u0301", [(W, "Café")]),
    ("a\x00b \ue000c", [(W, "a"), (W, "b"), (W, "c")]),
])
def test_parse(q: str, expected: list[tuple[TermKind, str]] | None) -> None:
    if expected is None:
        with pytest.raises(InvalidSearch) as info:
            parse(q)
        assert info.value.code == "empty_query"
    else:
        assert terms(q) == expected


def test_limits() -> None:
    assert len(parse("w " * MAX_TERMS).terms) == MAX_TERMS
    assert parse("a" * MAX_QUERY_CHARS).terms == (Term(W, "a" * MAX_QUERY_CHARS),)
    for q, code in (("w " * (MAX_TERMS + 1), "too_many_terms"), ("a" * (MAX_QUERY_CHARS + 1), "query_too_long"),
                    ("\ufdfa" * 20, "query_too_long"),  # NFKC expands it to 18 characters
                    ("", "empty_query"), ("\n\t ", "empty_query"), ('"" ( ) :', "empty_query")):
        with pytest.raises(InvalidSearch) as info:
            parse(q)
        assert info.value.code == code, q
        assert info.value.message


def test_key_and_str() -> None:
    q = parse('"a b" cd*  e')
    assert str(q) == '"a b" cd* e'
    assert q.key() == parse('"a  b"   cd* e').key()
    assert q.key() != parse("a b cd* e").key()


def test_compile_match_quotes_everything() -> None:
    q = Query((Term(W, 'NEAR"x'), Term(P, "a b"), Term(X, "hel")))
    assert compile_match(q) == '"NEAR""x" AND "a b" AND "hel"*'


def test_tsquery_literal_escapes_quote_and_backslash() -> None:
    assert tsquery_literal("o'ne\\x") == "'o''ne\\\\x'"


# ------------------------------------------------------------------------------ properties


def outcome(text: str) -> Query | InvalidSearch:
    """The parsed query, or the typed error; anything else propagates and fails the property."""
    try:
        return parse(text)
    except InvalidSearch as e:
        return e


@given(queries)
def test_any_string_parses_or_raises_the_typed_error(text: str) -> None:
    q = outcome(text)
    if isinstance(q, InvalidSearch):
        assert q.code in CODES
        return
    assert 1 <= len(q.terms) <= MAX_TERMS
    for t in q.terms:
        assert t.text == t.text.strip()
        assert any(c.isalnum() for c in t.text)
        assert '"' not in t.text


@pytest.fixture(scope="module")
def fts() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(SCHEMA[0])
    conn.executemany("INSERT INTO docs VALUES (?, 'c', NULL, 's', ?, ?, 0, ?)",
                     [(i, i, i, body) for i, body in enumerate(
                         ["hello world", "NEAR AND OR NOT", "café <@u1> https://x.example/a?b=c", "a b c ß İ"])])
    yield conn
    conn.close()


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queries)
def test_every_parsed_query_is_a_valid_fts5_match(fts: sqlite3.Connection, text: str) -> None:
    try:
        q = parse(text)
    except InvalidSearch:
        return
    fts.execute("SELECT d.id, snippet(docs_fts, 0, '[', ']', '…', 8) FROM docs_fts JOIN docs AS d"
                " ON d.id = docs_fts.rowid WHERE docs_fts MATCH ?", (compile_match(q),)).fetchall()


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[tuple[psycopg.Connection[tuple[object, ...]], PostgresSearchIndex]]:
    async def create() -> PostgresSearchIndex:
        index = await PostgresSearchIndex.open(postgres_dsn)
        await index.close()
        return index

    index = asyncio.run(create())
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO search_docs (id, channel, sender, ts, seq, has_file, body) VALUES"
                     " (1, 'c', 's', 1, 1, false, 'hello world café <@u1> https://x.example/a?b=c NEAR')")
        yield conn, index


@pytest.mark.postgres
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queries)
def test_every_parsed_query_is_a_valid_tsquery(
        pg: tuple[psycopg.Connection[tuple[object, ...]], PostgresSearchIndex], text: str) -> None:
    conn, index = pg
    try:
        q = parse(text)
    except InvalidSearch:
        return
    c = compile_tsquery(q, index.language, index.simple)
    statement = (psycopg.sql.SQL("SELECT d.id, ts_headline(%s::regconfig, d.body, {}) FROM search_docs AS d WHERE {}")
                 .format(c.tsquery, c.match))
    conn.execute(statement, [index.language, *c.tsquery_params, *c.match_params]).fetchall()
