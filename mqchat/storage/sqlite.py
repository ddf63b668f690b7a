"""SQLite backends: the embedded default for one node.

Each store owns one connection used from one dedicated thread, so the event loop never blocks on
disk and SQLite sees a single writer per process. The database runs in WAL mode with
``synchronous=FULL``: a transaction is on disk when ``COMMIT`` returns, which is what lets the bridge
ack a send after :meth:`SqliteMessageStore.append` (one transaction per batch: group commit, not
one fsync per message). Readers in other processes (the API's history) use their own connections
and never block the writer.

Schemas are versioned with ``PRAGMA user_version`` and migrated on open, in one transaction: an
existing database is upgraded in place (directory version 2 added servers, roles, overwrites, bans,
invites and the audit log). The directory's rules live in :mod:`mqchat.storage.directory`, its SQL
in :mod:`mqchat.storage.sql_directory` (shared with PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from mqchat.config import DEFAULT_MAX_CHANNEL_MEMBERS, DEFAULT_MAX_CHANNELS_PER_USER, DEFAULT_MAX_SERVERS_PER_USER
from mqchat.errors import Conflict, StorageError, StorageUnavailable
from mqchat.storage.base import (
    EMPTY_POSITION,
    CmidKey,
    HistoryPage,
    MessageStore,
    Position,
    ServerDirectory,
    StoredMessage,
)
from mqchat.storage.directory import DirectoryRules, DirectoryTx
from mqchat.storage.sql_directory import SqlTx

T = TypeVar("T")

MESSAGES_SCHEMA = [
    # version 1
    """
    CREATE TABLE messages (
        channel_id TEXT NOT NULL,
        epoch      INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        id         INTEGER NOT NULL,
        sender     TEXT NOT NULL,
        device     TEXT NOT NULL,
        cmid       TEXT NOT NULL,
        ts         INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        body       TEXT NOT NULL,
        PRIMARY KEY (channel_id, epoch, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_cmid ON messages (channel_id, sender, cmid);
    CREATE TABLE positions (
        channel_id TEXT PRIMARY KEY,
        epoch      INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # version 2: events that change earlier messages (edit, delete, reaction, pin), replies and
    # threads, and the counter of counting events. Every earlier message was a text: it counts.
    """
    ALTER TABLE messages ADD COLUMN target INTEGER;
    ALTER TABLE messages ADD COLUMN emoji TEXT;
    ALTER TABLE messages ADD COLUMN op TEXT;
    ALTER TABLE messages ADD COLUMN reply_to INTEGER;
    ALTER TABLE messages ADD COLUMN thread INTEGER;
    ALTER TABLE messages ADD COLUMN count_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET count_seq = seq;
    ALTER TABLE positions ADD COLUMN last_count INTEGER NOT NULL DEFAULT 0;
    UPDATE positions SET last_count = last_seq;
    CREATE INDEX messages_target ON messages (channel_id, epoch, target) WHERE target IS NOT NULL;
    CREATE INDEX messages_thread ON messages (channel_id, epoch, thread) WHERE thread IS NOT NULL;
    CREATE INDEX messages_pins ON messages (channel_id, epoch, seq) WHERE kind IN ('pin', 'unpin');
    """,
]

DIRECTORY_SCHEMA = [
    # version 1
    """
    CREATE TABLE users (
        user_id       TEXT PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE channels (
        channel_id TEXT PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
        name       TEXT,
        created_by TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        direct_key TEXT UNIQUE
    );
    CREATE TABLE members (
        channel_id TEXT NOT NULL REFERENCES channels (channel_id),
        user_id    TEXT NOT NULL,
        joined_ms  INTEGER NOT NULL,
        PRIMARY KEY (channel_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON members (user_id, channel_id);
    """,
    # version 2: profiles, servers, roles, overwrites, moderation, invites, audit log
    """
    ALTER TABLE users ADD COLUMN display_name TEXT;
    ALTER TABLE users ADD COLUMN avatar_url TEXT;
    CREATE TABLE servers (
        server_id    TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        owner_id     TEXT NOT NULL,
        discoverable INTEGER NOT NULL,
        created_ms   INTEGER NOT NULL
    );
    CREATE INDEX servers_discoverable ON servers (discoverable, server_id);
    CREATE TABLE server_members (
        server_id        TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
        user_id          TEXT NOT NULL,
        joined_ms        INTEGER NOT NULL,
        timeout_until_ms INTEGER,
        PRIMARY KEY (server_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX server_members_by_user ON server_members (user_id, server_id);
    CREATE TABLE roles (
        role_id   TEXT PRIMARY KEY,
        server_id TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
        name      TEXT NOT NULL,
        position  INTEGER NOT NULL,
        perms     INTEGER NOT NULL
    );
    CREATE INDEX roles_by_server ON roles (server_id);
    CREATE TABLE member_roles (
        server_id TEXT NOT NULL,
        user_id   TEXT NOT NULL,
        role_id   TEXT NOT NULL REFERENCES roles ON DELETE CASCADE,
        PRIMARY KEY (server_id, user_id, role_id),
        FOREIGN KEY (server_id, user_id) REFERENCES server_members ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX member_roles_by_role ON member_roles (role_id);
    CREATE TABLE server_channels (
        channel_id  TEXT PRIMARY KEY,
        server_id   TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
        name        TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        slow_mode_s INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX server_channels_by_server ON server_channels (server_id);
    CREATE TABLE overwrites (
        channel_id TEXT NOT NULL REFERENCES server_channels ON DELETE CASCADE,
        target     TEXT NOT NULL CHECK (target IN ('role', 'member')),
        target_id  TEXT NOT NULL,
        allow      INTEGER NOT NULL,
        deny       INTEGER NOT NULL,
        PRIMARY KEY (channel_id, target, target_id)
    ) WITHOUT ROWID;
    CREATE TABLE bans (
        server_id  TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
        user_id    TEXT NOT NULL,
        actor      TEXT NOT NULL,
        reason     TEXT,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (server_id, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE invites (
        code       TEXT PRIMARY KEY,
        server_id  TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
        channel_id TEXT REFERENCES server_channels ON DELETE CASCADE,
        creator    TEXT NOT NULL,
        max_uses   INTEGER,
        uses       INTEGER NOT NULL,
        expires_ms INTEGER,
        revoked    INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX invites_by_server ON invites (server_id);
    CREATE TABLE audit_log (
        entry_id   INTEGER PRIMARY KEY AUTOINCREMENT,
        server_id  TEXT NOT NULL REFERENCES servers ON DELETE CASCADE,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        target     TEXT,
        details    TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX audit_by_server ON audit_log (server_id, entry_id);
    """,
]

_IN_CHUNK = 400  # stay well below SQLite's bound-parameter limit


class _Db:
    """One SQLite connection driven from one thread."""

    def __init__(self, path: Path, migrations: list[str], busy_timeout_ms: int = 10_000, *,
                 secure_delete: bool = False) -> None:
        self.path = path
        self._secure_delete = secure_delete
        self._busy_timeout_ms = busy_timeout_ms
        self._migrations = migrations
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_timeout_ms / 1000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if self._secure_delete:
            # Erased words (a deleted message's body) are overwritten with zeros in the file, not
            # left in free space. The WAL keeps older page images until its next checkpoint.
            conn.execute("PRAGMA secure_delete=ON")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(self._migrations[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._conn = conn

    async def open(self) -> None:
        await self.run(lambda conn: None)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread, mapping sqlite errors to ours."""
        loop = asyncio.get_running_loop()

        def call() -> T:
            if self._conn is None:
                self._open()
            assert self._conn is not None
            return fn(self._conn)

        try:
            return await loop.run_in_executor(self._pool, call)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            # "database is locked", disk I/O errors: temporary from the caller's point of view.
            raise StorageUnavailable(f"sqlite {self.path.name}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite {self.path.name}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection; safe to call more than once."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)


def _transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + _IN_CHUNK] for i in range(0, len(items), _IN_CHUNK)]


_MSG_COLS = ("id, channel_id, seq, epoch, sender, device, cmid, ts, kind, body, target, emoji, op, reply_to, "
             "thread, count_seq")


def _row_to_message(row: Any) -> StoredMessage:
    return StoredMessage(*row)


class SqliteMessageStore:
    """:class:`MessageStore` on one SQLite file.

    Args:
        path: the database file (created and migrated on open).
        busy_timeout_ms: how long a write waits for a lock held elsewhere before failing with
            :class:`StorageUnavailable`.
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self._db = _Db(path, MESSAGES_SCHEMA, busy_timeout_ms, secure_delete=True)

    async def open(self) -> SqliteMessageStore:
        await self._db.open()
        return self

    async def positions(self, channels: Collection[str]) -> dict[str, Position]:
        wanted = list(dict.fromkeys(channels))

        def q(conn: sqlite3.Connection) -> dict[str, Position]:
            found: dict[str, Position] = {}
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                for cid, epoch, last, count in conn.execute(
                    f"SELECT channel_id, epoch, last_seq, last_count FROM positions WHERE channel_id IN ({marks})",
                    chunk,
                ):
                    found[cid] = Position(epoch, last, count)
            return {c: found.get(c, EMPTY_POSITION) for c in wanted}

        return await self._db.run(q)

    async def find_cmids(self, keys: Collection[CmidKey]) -> dict[CmidKey, StoredMessage]:
        wanted = list(dict.fromkeys(keys))

        def q(conn: sqlite3.Connection) -> dict[CmidKey, StoredMessage]:
            found: dict[CmidKey, StoredMessage] = {}
            for key in wanted:
                row = conn.execute(
                    f"SELECT {_MSG_COLS} FROM messages WHERE channel_id=? AND sender=? AND cmid=?", key
                ).fetchone()
                if row is not None:
                    found[key] = _row_to_message(row)
            return found

        return await self._db.run(q)

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        if not messages:
            return
        batch = list(messages)

        def write(conn: sqlite3.Connection) -> None:
            def body() -> None:
                channels = list(dict.fromkeys(m.channel for m in batch))
                current: dict[str, Position] = {}
                for chunk in _chunks(channels):
                    marks = ",".join("?" * len(chunk))
                    for cid, epoch, last, count in conn.execute(
                        f"SELECT channel_id, epoch, last_seq, last_count FROM positions WHERE channel_id IN ({marks})",
                        chunk,
                    ):
                        current[cid] = Position(epoch, last, count)
                for m in batch:
                    pos = current.get(m.channel, EMPTY_POSITION)
                    follows = (m.epoch, m.seq) == (pos.epoch, pos.last_seq + 1)
                    if not follows and not (m.epoch > pos.epoch and m.seq == 1):
                        raise Conflict(f"channel {m.channel}: seq {m.epoch}/{m.seq} does not follow {pos}")
                    current[m.channel] = Position(m.epoch, m.seq, m.count_seq)
                conn.executemany(
                    f"INSERT INTO messages ({_MSG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(m.id, m.channel, m.seq, m.epoch, m.sender, m.device, m.cmid, m.ts, m.kind, m.body, m.target,
                      m.emoji, m.op, m.reply_to, m.thread, m.count_seq) for m in batch],
                )
                # A delete erases the words: the target's body and those of its edits.
                conn.executemany(
                    "UPDATE messages SET body='' WHERE channel_id=? AND epoch=? "
                    "AND (seq=? OR (target=? AND kind='edit'))",
                    [(m.channel, m.epoch, m.target, m.target) for m in batch if m.kind == "delete"],
                )
                conn.executemany(
                    "INSERT INTO positions (channel_id, epoch, last_seq, last_count) VALUES (?,?,?,?) "
                    "ON CONFLICT (channel_id) DO UPDATE SET epoch=excluded.epoch, last_seq=excluded.last_seq, "
                    "last_count=excluded.last_count",
                    [(c, current[c].epoch, current[c].last_seq, current[c].count) for c in channels],
                )

            _transaction(conn, body)

        await self._db.run(write)

    async def history(
        self, channel: str, *, before: int | None = None, after: int | None = None, limit: int = 50,
    ) -> HistoryPage:
        def q(conn: sqlite3.Connection) -> HistoryPage:
            row = conn.execute("SELECT epoch, last_seq, last_count FROM positions WHERE channel_id=?",
                               (channel,)).fetchone()
            pos = Position(*row) if row else EMPTY_POSITION
            lo = after if after is not None else 0
            hi = before if before is not None else pos.last_seq + 1
            order = "ASC" if after is not None else "DESC"
            rows = conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE channel_id=? AND epoch=? AND seq>? AND seq<? "
                f"ORDER BY seq {order} LIMIT ?",
                (channel, pos.epoch, lo, hi, limit + 1),
            ).fetchall()
            more = len(rows) > limit
            page = [_row_to_message(r) for r in rows[:limit]]
            if order == "DESC":
                page.reverse()
            return HistoryPage(page, pos.epoch, pos.last_seq, more)

        return await self._db.run(q)

    def _epoch(self, conn: sqlite3.Connection, channel: str) -> int:
        row = conn.execute("SELECT epoch FROM positions WHERE channel_id=?", (channel,)).fetchone()
        return int(row[0]) if row else EMPTY_POSITION.epoch

    async def related(self, wanted: Mapping[str, Collection[int]]) -> dict[str, list[StoredMessage]]:
        asked = {c: sorted(set(seqs)) for c, seqs in wanted.items()}

        def q(conn: sqlite3.Connection) -> dict[str, list[StoredMessage]]:
            found: dict[str, list[StoredMessage]] = {}
            for channel, seqs in asked.items():
                epoch, rows = self._epoch(conn, channel), {}
                for chunk in _chunks(seqs):
                    marks = ",".join("?" * len(chunk))
                    for column in ("seq", "target", "thread"):
                        for r in conn.execute(
                            f"SELECT {_MSG_COLS} FROM messages "
                            f"WHERE channel_id=? AND epoch=? AND {column} IN ({marks})",
                            (channel, epoch, *chunk),
                        ):
                            rows[r[2]] = r
                found[channel] = [_row_to_message(rows[s]) for s in sorted(rows)]
            return found

        return await self._db.run(q)

    async def thread(self, channel: str, root: int, *, after: int = 0, limit: int = 50,
                     ) -> tuple[list[StoredMessage], bool]:
        def q(conn: sqlite3.Connection) -> tuple[list[StoredMessage], bool]:
            rows = conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE channel_id=? AND epoch=? AND thread=? AND seq>? "
                "ORDER BY seq LIMIT ?", (channel, self._epoch(conn, channel), root, after, limit + 1),
            ).fetchall()
            return [_row_to_message(r) for r in rows[:limit]], len(rows) > limit

        return await self._db.run(q)

    async def pin_events(self, channel: str) -> list[StoredMessage]:
        def q(conn: sqlite3.Connection) -> list[StoredMessage]:
            return [_row_to_message(r) for r in conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE channel_id=? AND epoch=? AND kind IN ('pin', 'unpin') "
                "ORDER BY seq", (channel, self._epoch(conn, channel)))]

        return await self._db.run(q)

    async def counts_at(self, points: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        wanted = list(dict.fromkeys(points))

        def q(conn: sqlite3.Connection) -> dict[tuple[str, int], int]:
            found: dict[tuple[str, int], int] = {}
            for channel, seq in wanted:
                row = conn.execute(
                    "SELECT m.count_seq FROM positions p JOIN messages m ON m.channel_id=p.channel_id "
                    "AND m.epoch=p.epoch AND m.seq=? WHERE p.channel_id=?", (seq, channel)).fetchone()
                found[(channel, seq)] = int(row[0]) if row else 0
            return found

        return await self._db.run(q)

    async def close(self) -> None:
        await self._db.close()


class _SqliteConn:
    """:class:`SqlConn` over a :class:`_Db`: each statement runs on the store's thread."""

    dialect: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, db: _Db) -> None:
        self._db = db

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._db.run(lambda conn: conn.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._db.run(lambda conn: conn.execute(sql, params).rowcount)


class SqliteDirectory(DirectoryRules):
    """:class:`ServerDirectory` on one SQLite file.

    One transaction at a time per process (an asyncio lock around ``BEGIN`` ... ``COMMIT`` on the one
    connection); writers in other processes wait on SQLite's own lock (``BEGIN IMMEDIATE``).
    """

    def __init__(self, path: Path, *, max_channel_members: int = DEFAULT_MAX_CHANNEL_MEMBERS,
                 max_channels_per_user: int = DEFAULT_MAX_CHANNELS_PER_USER,
                 max_servers_per_user: int = DEFAULT_MAX_SERVERS_PER_USER) -> None:
        self.max_channel_members = max_channel_members
        self.max_channels_per_user = max_channels_per_user
        self.max_servers_per_user = max_servers_per_user
        self._db = _Db(path, DIRECTORY_SCHEMA)
        self._conn = _SqliteConn(self._db)
        self._lock = asyncio.Lock()

    async def open(self) -> SqliteDirectory:
        await self._db.open()
        return self

    @asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[DirectoryTx]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield SqlTx(self._conn)
            except BaseException:
                with contextlib.suppress(StorageError):
                    await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._db.close()


def _conformance(path: Path) -> tuple[MessageStore, ServerDirectory]:
    """Static conformance: mypy checks these classes against the protocols."""
    return SqliteMessageStore(path), SqliteDirectory(path)
