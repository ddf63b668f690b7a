"""Directory backends for the contract suites: memory, SQLite and a real PostgreSQL server.

The PostgreSQL variant gets a fresh, migrated database per test on the session's private server
(``postgres_dsn`` in tests/conftest.py); it is marked ``postgres``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqchat.storage.base import ServerDirectory
from mqchat.storage.memory import MemoryDirectory
from mqchat.storage.sqlite import SqliteDirectory

SERVER_DIRECTORIES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def open_server_directory(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                                **caps: int) -> ServerDirectory:
    """A new, empty directory of ``kind``; ``caps``: ``max_channel_members`` and the other ``limits.*``
    the backends take."""
    if kind == "memory":
        return MemoryDirectory(**caps)
    if kind == "sqlite":
        return await SqliteDirectory(tmp_path / "directory.db", **caps).open()
    from mqchat.storage.postgres import PostgresDirectory, migrate

    dsn: str = request.getfixturevalue("postgres_dsn")
    await migrate(dsn)
    return await PostgresDirectory(dsn, max_size=4, **caps).open()


@pytest.fixture(params=SERVER_DIRECTORIES)
async def sd(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerDirectory]:
    """A server directory on every backend."""
    d = await open_server_directory(request.param, request, tmp_path)
    try:
        yield d
    finally:
        await d.close()
