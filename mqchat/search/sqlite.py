"""SQLite FTS5 search index: the embedded default, one file under the data directory.

Layout::

    docs      (id INTEGER PRIMARY KEY = the Snowflake, channel, server, sender, ts, seq, has_file, body)
      └── index docs_channel_ts (channel, ts, id)
    docs_fts  FTS5 over docs.body (external content: the text is stored once, in docs)
      └── kept in step with docs by triggers, so an upsert or delete is one statement

Tokenizer ``unicode61 remove_diacritics 2``: words are runs of letters and digits, folded to
lower case and stripped of accents (``Café`` and ``cafe`` are one token). No extra
``tokenchars``: every term of a query is compiled to an FTS5 *phrase*, so ``user_42``,
``@alice``, ``<@u1>`` and ``example.com/a`` match as their token sequences while their parts
(``alice``, ``example``) stay findable on their own, which adding ``_ @ . /`` to the token
characters would prevent. Prefix indexes of 2, 3 and 4 characters make ``hel*`` an index
lookup rather than a scan of the term dictionary.

Each index holds two connections, each used from its own thread: a writer (batches are one
``BEGIN IMMEDIATE`` transaction) and a reader, so a search never waits behind a batch (WAL mode:
readers see the last committed batch). ``synchronous=NORMAL``: a power cut may lose the last
batches, never corrupt the file, and the indexer replays them from the log.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

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

T = TypeVar("T")

TOKENIZER: Final = "unicode61 remove_diacritics 2"

SCHEMA: Final = [
    # version 1
    f"""
    CREATE TABLE docs (
        id       INTEGER PRIMARY KEY,
        channel  TEXT NOT NULL,
        server   TEXT,
        sender   TEXT NOT NULL,
        ts       INTEGER NOT NULL,
        seq      INTEGER NOT NULL,
        has_file INTEGER NOT NULL,
        body     TEXT NOT NULL
    );
    CREATE INDEX docs_channel_ts ON docs (channel, ts, id);
    CREATE VIRTUAL TABLE docs_fts USING fts5(
        body, content='docs', content_rowid='id', tokenize='{TOKENIZER}', prefix='2 3 4'
    );
    CREATE TRIGGER docs_ai AFTER INSERT ON docs BEGIN
        INSERT INTO docs_fts (rowid, body) VALUES (new.id, new.body);
    END;
    CREATE TRIGGER docs_ad AFTER DELETE ON docs BEGIN
        INSERT INTO docs_fts (docs_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END;
    CREATE TRIGGER docs_au AFTER UPDATE OF body ON docs WHEN old.body IS NOT new.body BEGIN
        INSERT INTO docs_fts (docs_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO docs_fts (rowid, body) VALUES (new.id, new.body);
    END;
    """,
]

_UPSERT: Final = """
    INSERT INTO docs (id, channel, server, sender, ts, seq, has_file, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET channel = excluded.channel, server = excluded.server, sender = excluded.sender,
        ts = excluded.ts, seq = excluded.seq, has_file = excluded.has_file, body = excluded.body
"""
_COLUMNS: Final = "d.id, d.channel, d.server, d.sender, d.ts, d.seq, d.has_file"


def _fts_string(text: str) -> str:
    """``text`` as an FTS5 string: inside double quotes every character is literal (``"`` doubled)."""
    return '"' + text.replace('"', '""') + '"'


def compile_match(query: Query) -> str:
    """The FTS5 MATCH expression for ``query``: only quoted strings, ``AND`` and a trailing ``*``.

    Each term is a quoted string (a phrase of the tokens the tokenizer cuts it into), so nothing
    the user typed is FTS5 syntax; a prefix term is the same string followed by ``*``, which marks
    its last token as a prefix.
    """
    parts = []
    for term in query.terms:
        quoted = _fts_string(term.text)
        parts.append(quoted + "*" if term.kind is TermKind.PREFIX else quoted)
    return " AND ".join(parts)


def _closed(cursor: sqlite3.Cursor) -> int:
    """Close ``cursor`` on the thread that ran it and return its rowcount.

    A cursor must never leave its connection's thread: dropped later on the event loop's thread,
    its finalizer resets the cached statement while the writer thread may be running that same
    statement again, and SQLite answers ``bad parameter or other API misuse`` (seen in a
    1,000,000-message benchmark run).
    """
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def dedupe(docs: Sequence[SearchDoc]) -> list[SearchDoc]:
    """``docs`` with only the last version of each id (a batch may hold a message and its edit)."""
    return list({d.id: d for d in docs}.values())


class SqliteSearchIndex:
    """FTS5 index in one SQLite file; open with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-sqlite-w")
        self._reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-sqlite-r")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path) -> SqliteSearchIndex:
        """Open (creating or migrating) the index at ``path``."""
        index = cls(Path(path))
        try:
            index._writer = await index._on(index._writer_pool, index._connect_writer)
            index._reader = await index._on(index._reader_pool, index._connect)
        except BaseException:
            await index.close()
            raise
        return index

    # -------------------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        # Several processes may open a new index at once (workers instances started together): each
        # step is applied under the write lock, and a step another opener committed first (the
        # version moved while this one waited for the lock, its script then fails) is skipped.
        while (version := conn.execute("PRAGMA user_version").fetchone()[0]) < len(SCHEMA):
            try:
                conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA[version]}; PRAGMA user_version={version + 1}; COMMIT;")
            except sqlite3.OperationalError:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if conn.execute("PRAGMA user_version").fetchone()[0] == version:
                    conn.close()
                    raise
        if version > len(SCHEMA):
            conn.close()
            raise SearchError(f"{self.path}: search schema version {version} is newer than this code ({len(SCHEMA)})")
        return conn

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        if self._closed:
            raise SearchError("the search index is closed")
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._writer is not None
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._on(self._writer_pool, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._reader is not None
            return fn(self._reader)

        return await self._on(self._reader_pool, run)

    # -------------------------------------------------------------------------------- contract

    async def index(self, docs: Sequence[SearchDoc]) -> None:
        rows = [(d.id, d.channel, d.server, d.sender, d.ts, d.seq, int(d.has_file), clean_body(d.body))
                for d in dedupe(docs)]
        if rows:
            await self._write(lambda conn: _closed(conn.executemany(_UPSERT, rows)))

    async def delete(self, ids: Collection[int]) -> None:
        if ids:
            payload = json.dumps(sorted(set(ids)))
            await self._write(lambda conn: _closed(conn.execute(
                "DELETE FROM docs WHERE id IN (SELECT value FROM json_each(?))", (payload,))))

    async def delete_channel(self, channel: str) -> int:
        return await self._write(lambda conn: _closed(conn.execute("DELETE FROM docs WHERE channel = ?", (channel,))))

    async def search(self, query: Query, *, visible_channels: Collection[str], filters: SearchFilters = NO_FILTERS,
                     limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> SearchPage:
        check_limit(limit)
        after = decode_cursor(cursor, query, filters) if cursor is not None else None
        # Every predicate is a constant fragment chosen here; every value is a parameter.
        where = ["docs_fts MATCH ?", "d.channel IN (SELECT value FROM json_each(?))"]
        params: list[Any] = [compile_match(query), json.dumps(sorted(set(visible_channels)))]
        for clause, value in (("d.channel = ?", filters.channel), ("d.server = ?", filters.server),
                              ("d.sender = ?", filters.sender), ("d.ts < ?", filters.before),
                              ("d.ts > ?", filters.after)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if filters.has_file:
            where.append("d.has_file = 1")
        if after is not None:
            where.append("(d.ts < ? OR (d.ts = ? AND d.id < ?))")
            params += [after[0], after[0], after[1]]
        sql = (f"SELECT {_COLUMNS}, snippet(docs_fts, 0, ?, ?, ?, ?)"
               " FROM docs_fts JOIN docs AS d ON d.id = docs_fts.rowid"
               f" WHERE {' AND '.join(where)} ORDER BY d.ts DESC, d.id DESC LIMIT ?")
        args = [MARK_START, MARK_END, ELLIPSIS, SNIPPET_TOKENS, *params, limit + 1]
        rows = await self._read(lambda conn: conn.execute(sql, args).fetchall())
        hits = [SearchHit(id=r[0], channel=r[1], server=r[2], sender=r[3], ts=r[4], seq=r[5], has_file=bool(r[6]),
                          snippet=render_snippet(r[7])) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(query, filters, hits[-1].ts, hits[-1].id) if more else None
        return SearchPage(hits=hits, cursor=next_cursor)

    async def count(self) -> int:
        return int(await self._read(lambda conn: conn.execute("SELECT count(*) FROM docs").fetchone()[0]))

    async def list_docs(self, *, after_id: int = -1, limit: int = 1000) -> list[SearchDoc]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT id, channel, server, sender, ts, seq, has_file, body FROM docs WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit)).fetchall())
        return [SearchDoc(id=r[0], channel=r[1], server=r[2], sender=r[3], ts=r[4], seq=r[5], has_file=bool(r[6]),
                          body=r[7]) for r in rows]

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        for pool, conn in ((self._reader_pool, self._reader), (self._writer_pool, self._writer)):
            if conn is not None:
                await loop.run_in_executor(pool, conn.close)
            pool.shutdown(wait=True)
        self._closed = True


_check: type[SearchIndex] = SqliteSearchIndex
