"""The directory on PostgreSQL (production): psycopg 3, async, with a connection pool.

Same rules as every directory (:mod:`mqchat.storage.directory`) and the same SQL as SQLite
(:mod:`mqchat.storage.sql_directory`). Each directory call is one transaction on one pooled
connection; writes lock the server row (``SELECT ... FOR UPDATE``) before they check anything, so
concurrent changes to one server are serialised and a check cannot go stale before its write.

The schema is versioned: ``pg_migrations/NNNN_name.sql`` files, applied by :func:`migrate`
(``mqchat migrate``) in one transaction under an advisory lock and recorded in
``schema_migrations``. :meth:`PostgresDirectory.open` never changes the schema; it refuses a
database that is behind, naming the command to run.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
import psycopg_pool

from mqchat.config import DEFAULT_MAX_CHANNEL_MEMBERS, DEFAULT_MAX_CHANNELS_PER_USER, DEFAULT_MAX_SERVERS_PER_USER
from mqchat.errors import ConfigError, Conflict, StorageError, StorageUnavailable
from mqchat.storage.base import ServerDirectory
from mqchat.storage.directory import DirectoryRules, DirectoryTx
from mqchat.storage.sql_directory import SqlTx

logger = logging.getLogger(__name__)

#: ``pg_advisory_xact_lock`` key held while migrating, so two ``mqchat migrate`` runs never interleave.
_MIGRATION_LOCK = 0x6D71_6368_6174  # "mqchat"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    found = []
    for entry in importlib.resources.files("mqchat.storage.pg_migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ConfigError(f"PostgreSQL migrations are not numbered 1..n: {[m.version for m in found]}")
    return found


LATEST = len(migrations())


def _mapped(exc: Exception) -> StorageError:
    if isinstance(exc, psycopg.errors.IntegrityError):
        return Conflict(str(exc).strip())
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        # Connection lost, server shutting down, deadlock or serialisation failure: retry later.
        return StorageUnavailable(f"postgresql: {str(exc).strip()}")
    return StorageError(f"postgresql: {str(exc).strip()}")


async def migrate(dsn: str, *, clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> list[int]:
    """Apply the pending migrations to the database at ``dsn``; the versions applied now.

    All pending migrations run in one transaction with their ``schema_migrations`` rows, under an
    advisory lock: a failure leaves the database as it was, and concurrent runs wait for each other.

    Raises:
        StorageError: the database refused a statement (nothing was applied).
        StorageUnavailable: the server could not be reached.
    """
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                               "name TEXT NOT NULL, applied_ms BIGINT NOT NULL)")
            done = {r[0] for r in await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()}
            applied = []
            for m in migrations():
                if m.version in done:
                    continue
                logger.info("applying directory migration %d: %s", m.version, m.name)
                await conn.execute(m.sql.encode())  # several statements, no parameters
                await conn.execute("INSERT INTO schema_migrations (version, name, applied_ms) VALUES (%s, %s, %s)",
                                   [m.version, m.name, clock_ms()])
                applied.append(m.version)
            return applied
    except psycopg.Error as exc:
        raise _mapped(exc) from exc


async def schema_version(dsn: str) -> int:
    """The highest migration applied to the database (0: none)."""
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            exists = await (await conn.execute("SELECT to_regclass('schema_migrations')")).fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = await (await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error as exc:
        raise _mapped(exc) from exc


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """Our ``?`` placeholders as psycopg's ``%s`` (no statement of ours has a literal ``?`` or ``%``)."""
    return sql.replace("?", "%s")


class _PgConn:
    """:class:`~mqchat.storage.sql_directory.SqlConn` over one psycopg connection in a transaction."""

    dialect: Literal["sqlite", "postgres"] = "postgres"

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = await self._conn.execute(_pg(sql), list(params))
            return await cur.fetchall()
        except psycopg.Error as exc:
            raise _mapped(exc) from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cur = await self._conn.execute(_pg(sql), list(params))
            return cur.rowcount
        except psycopg.Error as exc:
            raise _mapped(exc) from exc


class PostgresDirectory(DirectoryRules):
    """:class:`ServerDirectory` on PostgreSQL.

    Args:
        dsn: ``postgresql://user[:password]@host[:port]/database``.
        min_size: connections the pool keeps open.
        max_size: the most connections the pool opens; a call waits up to ``acquire_timeout_s`` for
            one, then fails with :class:`StorageUnavailable`.
    """

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, acquire_timeout_s: float = 10.0,
                 max_channel_members: int = DEFAULT_MAX_CHANNEL_MEMBERS,
                 max_channels_per_user: int = DEFAULT_MAX_CHANNELS_PER_USER,
                 max_servers_per_user: int = DEFAULT_MAX_SERVERS_PER_USER) -> None:
        self.max_channel_members = max_channel_members
        self.max_channels_per_user = max_channels_per_user
        self.max_servers_per_user = max_servers_per_user
        self._dsn = dsn
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] = psycopg_pool.AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, timeout=acquire_timeout_s, open=False,
            name="mqchat-directory",
        )

    async def open(self) -> PostgresDirectory:
        """Open the pool and check the schema is current.

        Raises:
            ConfigError: the database is behind (run ``mqchat migrate``) or ahead of this version.
            StorageUnavailable: the server could not be reached.
        """
        version = await schema_version(self._dsn)
        if version != LATEST:
            raise ConfigError(f"the directory database is at schema version {version}, this mqchat needs {LATEST}: "
                              "run `mqchat migrate` with the same directory.url" if version < LATEST else
                              f"the directory database is at schema version {version}, newer than this mqchat "
                              f"({LATEST}): upgrade mqchat")
        try:
            await self._pool.open(wait=True)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise _mapped(exc) from exc
        return self

    @asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[DirectoryTx]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield SqlTx(_PgConn(conn))
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise _mapped(exc) from exc

    async def close(self) -> None:
        """Close the pool; safe to call more than once."""
        await self._pool.close()


def _conformance(dsn: str) -> ServerDirectory:
    """Static conformance: mypy checks the class against the protocol."""
    return PostgresDirectory(dsn)
