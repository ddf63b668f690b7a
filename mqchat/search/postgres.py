"""PostgreSQL full-text search index: the production backend (psycopg 3, async, pooled).

Layout (created and versioned on open, under an advisory lock so concurrent openers do not race)::

    search_meta   (key, value)       schema_version, language, unaccent
    search_docs   (id bigint PRIMARY KEY, channel, server, sender, ts, seq, has_file, body,
                   tsv_lang   tsvector GENERATED ALWAYS AS (to_tsvector(<language>, body)) STORED,
                   tsv_simple tsvector GENERATED ALWAYS AS (to_tsvector(<simple>, body)) STORED)
      ├── GIN indexes on tsv_lang and tsv_simple
      └── btree (channel, ts DESC, id DESC)

Two text search configurations feed the two vectors: the language one (default ``english``: stemming,
so ``running`` finds ``run``; stop words dropped) and ``simple`` (every word as written, so
names, stop words and exact forms match too). Where the ``unaccent`` extension can be created,
both are copies (``mqchat_<language>``, ``mqchat_simple``) that run ``unaccent`` before their
dictionaries, so ``café`` and ``cafe`` are the same lexeme; where it cannot, the stock
configurations are used and a warning says accents now matter.

A query is compiled from parameters only (:func:`compile_tsquery`): each word is
``phraseto_tsquery`` against both vectors (ORed), each quoted phrase against the exact-words
vector, each prefix a quoted ``to_tsquery(simple, '…':*)`` against the exact-words vector, and
the terms are ANDed. Visibility (``channel = ANY(%s)``), the filters and the cursor are
predicates of the same statement; ``ts_headline`` runs only on the rows of the page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from mqchat.errors import ConfigError
from mqchat.search.base import (
    DEFAULT_LIMIT,
    ELLIPSIS,
    MARK_END,
    MARK_START,
    NO_FILTERS,
    SNIPPET_TOKENS,
    SearchDoc,
    SearchFilters,
    SearchHit,
    SearchIndex,
    SearchPage,
    check_limit,
    clean_body,
    decode_cursor,
    encode_cursor,
    render_snippet,
)
from mqchat.search.errors import SearchError
from mqchat.search.query import Query, TermKind
from mqchat.search.sqlite import dedupe

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
DEFAULT_LANGUAGE: Final = "english"
_LANGUAGE_RE: Final = re.compile(r"[a-z_]{1,40}")
_LOCK_KEY: Final = 0x6D71_6368_6174_5331  # "mqchatS1": serializes schema creation across processes
_HEADLINE_OPTIONS: Final = (f'StartSel="{MARK_START}", StopSel="{MARK_END}", MaxWords={SNIPPET_TOKENS}, '
                            f'MinWords={SNIPPET_TOKENS // 3}, ShortWord=0, MaxFragments=2, '
                            f'FragmentDelimiter=" {ELLIPSIS} "')


def tsquery_literal(text: str) -> str:
    """``text`` as a quoted tsquery operand: inside single quotes only ``'`` and ``\\`` are special."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A query as SQL: a predicate over ``d.tsv_lang`` / ``d.tsv_simple``, and one tsquery for headlines."""

    match: sql.Composed
    match_params: list[Any]
    tsquery: sql.Composed
    tsquery_params: list[Any]


def compile_tsquery(query: Query, language: str, simple: str) -> CompiledQuery:
    """``query`` as SQL over the two tsvector columns of ``search_docs AS d``.

    A word matches when either configuration finds it (as the sequence of tokens it is cut into:
    ``user_42``); a quoted phrase and a prefix match the exact-words column only, so a phrase
    means exactly these words (no stemming, stop words kept), as it does on SQLite.

    The two vectors are separate columns, not one concatenated vector: a
    concatenation would put the last word of the stemmed half next to the first word of the exact
    half, and ``"quick brown"`` would match "brown and quick".

    Args:
        query: the parsed query.
        language: the stemming configuration's name (a parameter, cast to ``regconfig``).
        simple: the exact-words configuration's name.
    """
    match: list[sql.Composable] = []
    match_params: list[Any] = []
    headline: list[sql.Composable] = []
    headline_params: list[Any] = []
    for term in query.terms:
        if term.kind is TermKind.PREFIX:
            literal = tsquery_literal(term.text) + ":*"
            match.append(sql.SQL("d.tsv_simple @@ to_tsquery(%s::regconfig, %s)"))
            match_params += [simple, literal]
            headline.append(sql.SQL("to_tsquery(%s::regconfig, %s)"))
            headline_params += [simple, literal]
        elif term.kind is TermKind.PHRASE:  # quoted: exactly these words, no stemming or stop words
            match.append(sql.SQL("d.tsv_simple @@ phraseto_tsquery(%s::regconfig, %s)"))
            match_params += [simple, term.text]
            headline.append(sql.SQL("phraseto_tsquery(%s::regconfig, %s)"))
            headline_params += [simple, term.text]
        else:
            match.append(sql.SQL("(d.tsv_lang @@ phraseto_tsquery(%s::regconfig, %s)"
                                 " OR d.tsv_simple @@ phraseto_tsquery(%s::regconfig, %s))"))
            match_params += [language, term.text, simple, term.text]
            headline.append(sql.SQL("(phraseto_tsquery(%s::regconfig, %s) || phraseto_tsquery(%s::regconfig, %s))"))
            headline_params += [language, term.text, simple, term.text]
    return CompiledQuery(
        match=sql.SQL("(") + sql.SQL(" AND ").join(match) + sql.SQL(")"), match_params=match_params,
        tsquery=sql.SQL("(") + sql.SQL(" && ").join(headline) + sql.SQL(")"), tsquery_params=headline_params)


class PostgresSearchIndex:
    """Full-text index in PostgreSQL; open with :meth:`open`."""

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], language: str, simple: str,
                 unaccent: bool) -> None:
        self._pool = pool
        self.language = language
        """The stemming text search configuration in use (``mqchat_english`` or ``english``)."""
        self.simple = simple
        """The exact-words configuration in use (``mqchat_simple`` or ``simple``)."""
        self.unaccent = unaccent
        """Whether accents are folded (the ``unaccent`` extension was available)."""
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, *, language: str = DEFAULT_LANGUAGE, min_size: int = 1,
                   max_size: int = 4) -> PostgresSearchIndex:
        """Connect and create or check the schema.

        Args:
            dsn: a libpq connection string or URL.
            language: a text search configuration shipped with PostgreSQL (``english``,
                ``french``, ``german``, …), fixed when the index is created.
            min_size: connections kept open.
            max_size: most connections at once.

        Raises:
            ConfigError: ``language`` is not a configuration of this server, or differs from
                the one the index was created with (drop it and reindex to change it).
        """
        if not _LANGUAGE_RE.fullmatch(language):
            raise ConfigError(f"search language {language!r}: expected a text search configuration name")
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, kwargs={"autocommit": True}, open=False,
            name="mqchat-search")
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                stemmed, simple, unaccent = await _ensure_schema(conn, language)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, stemmed, simple, unaccent)

    # -------------------------------------------------------------------------------- contract

    async def index(self, docs: Sequence[SearchDoc]) -> None:
        docs = dedupe(docs)
        if not docs:
            return
        columns = ([d.id for d in docs], [d.channel for d in docs], [d.server for d in docs],
                   [d.sender for d in docs], [d.ts for d in docs], [d.seq for d in docs],
                   [d.has_file for d in docs], [clean_body(d.body) for d in docs])
        # One statement per batch (unnest of column arrays); dedupe above because ON CONFLICT
        # refuses to touch one row twice in a statement.
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO search_docs (id, channel, server, sender, ts, seq, has_file, body)"
                " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[],"
                " %s::bigint[], %s::boolean[], %s::text[])"
                " ON CONFLICT (id) DO UPDATE SET channel = excluded.channel, server = excluded.server,"
                " sender = excluded.sender, ts = excluded.ts, seq = excluded.seq, has_file = excluded.has_file,"
                " body = excluded.body"
                " WHERE (search_docs.channel, search_docs.server, search_docs.sender, search_docs.ts,"
                " search_docs.seq, search_docs.has_file, search_docs.body)"
                " IS DISTINCT FROM (excluded.channel, excluded.server, excluded.sender, excluded.ts,"
                " excluded.seq, excluded.has_file, excluded.body)",
                columns)

    async def delete(self, ids: Collection[int]) -> None:
        if ids:
            async with self._pool.connection() as conn:
                await conn.execute("DELETE FROM search_docs WHERE id = ANY(%s::bigint[])", (sorted(set(ids)),))

    async def delete_channel(self, channel: str) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("DELETE FROM search_docs WHERE channel = %s", (channel,))
            return cur.rowcount

    async def search(self, query: Query, *, visible_channels: Collection[str], filters: SearchFilters = NO_FILTERS,
                     limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> SearchPage:
        check_limit(limit)
        after = decode_cursor(cursor, query, filters) if cursor is not None else None
        compiled = compile_tsquery(query, self.language, self.simple)
        where: list[sql.Composable] = [compiled.match, sql.SQL("d.channel = ANY(%s::text[])")]
        params: list[Any] = [*compiled.match_params, sorted(set(visible_channels))]
        for clause, value in (("d.channel = %s", filters.channel), ("d.server = %s", filters.server),
                              ("d.sender = %s", filters.sender), ("d.ts < %s", filters.before),
                              ("d.ts > %s", filters.after)):
            if value is not None:
                where.append(sql.SQL(clause))
                params.append(value)
        if filters.has_file:
            where.append(sql.SQL("d.has_file"))
        if after is not None:
            where.append(sql.SQL("(d.ts, d.id) < (%s, %s)"))
            params += [after[0], after[1]]
        # The inner query finds the page; ts_headline (costly: it re-parses the body) runs only on it.
        statement = sql.SQL(
            "SELECT p.id, p.channel, p.server, p.sender, p.ts, p.seq, p.has_file,"
            " ts_headline(%s::regconfig, p.body, {tsq}, %s)"
            " FROM (SELECT d.id, d.channel, d.server, d.sender, d.ts, d.seq, d.has_file, d.body"
            "       FROM search_docs AS d WHERE {where} ORDER BY d.ts DESC, d.id DESC LIMIT %s) AS p"
            " ORDER BY p.ts DESC, p.id DESC").format(tsq=compiled.tsquery, where=sql.SQL(" AND ").join(where))
        args = [self.language, *compiled.tsquery_params, _HEADLINE_OPTIONS, *params, limit + 1]
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(statement, args)).fetchall()
        hits = [SearchHit(id=r[0], channel=r[1], server=r[2], sender=r[3], ts=r[4], seq=r[5], has_file=r[6],
                          snippet=render_snippet(r[7])) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(query, filters, hits[-1].ts, hits[-1].id) if more else None
        return SearchPage(hits=hits, cursor=next_cursor)

    async def count(self) -> int:
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM search_docs")).fetchone()
        assert row is not None
        return int(row[0])

    async def list_docs(self, *, after_id: int = -1, limit: int = 1000) -> list[SearchDoc]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, channel, server, sender, ts, seq, has_file, body FROM search_docs"
                " WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit))).fetchall()
        return [SearchDoc(id=r[0], channel=r[1], server=r[2], sender=r[3], ts=r[4], seq=r[5], has_file=r[6],
                          body=r[7]) for r in rows]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()


async def _ensure_schema(conn: psycopg.AsyncConnection[Any], language: str) -> tuple[str, str, bool]:
    """Create or check the schema; returns (stemming config, simple config, unaccent available)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute("CREATE TABLE IF NOT EXISTS search_meta (key text PRIMARY KEY, value text NOT NULL)")
        meta = dict(await (await conn.execute("SELECT key, value FROM search_meta")).fetchall())
        if meta:
            version = int(meta["schema_version"])
            if version > SCHEMA_VERSION:
                raise SearchError(f"search schema version {version} is newer than this code ({SCHEMA_VERSION})")
            if meta["language"] != language:
                raise ConfigError(f"the search index was built for language {meta['language']!r}, not {language!r};"
                                  " drop search_docs and reindex to change it")
            unaccent = meta["unaccent"] == "true"
            stemmed, simple = _config_names(language, unaccent)
            return stemmed, simple, unaccent
        found = await (await conn.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = %s", (language,))).fetchone()
        if found is None:
            raise ConfigError(f"search language {language!r} is not a text search configuration of this server")
        unaccent = await _create_unaccent(conn)
        stemmed, simple = _config_names(language, unaccent)
        if unaccent:
            await _create_config(conn, stemmed, language)
            await _create_config(conn, simple, "simple")
        await conn.execute(sql.SQL(
            "CREATE TABLE search_docs ("
            " id bigint PRIMARY KEY, channel text NOT NULL, server text, sender text NOT NULL,"
            " ts bigint NOT NULL, seq bigint NOT NULL, has_file boolean NOT NULL, body text NOT NULL,"
            " tsv_lang tsvector GENERATED ALWAYS AS (to_tsvector({stemmed}::regconfig, body)) STORED,"
            " tsv_simple tsvector GENERATED ALWAYS AS (to_tsvector({simple}::regconfig, body)) STORED)"
        ).format(stemmed=sql.Literal(stemmed), simple=sql.Literal(simple)))
        await conn.execute("CREATE INDEX search_docs_tsv_lang ON search_docs USING gin (tsv_lang)")
        await conn.execute("CREATE INDEX search_docs_tsv_simple ON search_docs USING gin (tsv_simple)")
        await conn.execute("CREATE INDEX search_docs_channel_ts ON search_docs (channel, ts DESC, id DESC)")
        await conn.execute(
            "INSERT INTO search_meta (key, value) VALUES ('schema_version', %s), ('language', %s), ('unaccent', %s)",
            (str(SCHEMA_VERSION), language, "true" if unaccent else "false"))
    return stemmed, simple, unaccent


def _config_names(language: str, unaccent: bool) -> tuple[str, str]:
    return (f"mqchat_{language}", "mqchat_simple") if unaccent else (language, "simple")


async def _create_unaccent(conn: psycopg.AsyncConnection[Any]) -> bool:
    try:
        async with conn.transaction():  # a savepoint: a refusal must not abort the schema transaction
            await conn.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    except psycopg.Error as e:
        logger.warning("search: the unaccent extension is unavailable (%s); accents will not be folded,"
                       " so 'cafe' will not find 'café'", str(e).strip())
        return False
    return True


async def _create_config(conn: psycopg.AsyncConnection[Any], name: str, source: str) -> None:
    """``name``: a copy of configuration ``source`` that unaccents words before its own dictionaries."""
    row = await (await conn.execute(
        "SELECT dictionaries FROM ts_debug(%s::regconfig, 'é') WHERE alias = 'word'", (source,))).fetchone()
    dictionaries: list[str] = list(row[0]) if row else [source]
    exists = await (await conn.execute("SELECT 1 FROM pg_ts_config WHERE cfgname = %s", (name,))).fetchone()
    if exists is None:  # configurations are per database and outlive a dropped table
        await conn.execute(sql.SQL("CREATE TEXT SEARCH CONFIGURATION {} (COPY = {})").format(
            sql.Identifier(name), sql.Identifier(source)))
    await conn.execute(sql.SQL(
        "ALTER TEXT SEARCH CONFIGURATION {} ALTER MAPPING FOR hword, hword_part, word WITH unaccent, {}").format(
        sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(d) for d in dictionaries)))


_check: type[SearchIndex] = PostgresSearchIndex
