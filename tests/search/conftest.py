"""Fixtures of the search suite: one index per test, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqchat.search import SearchIndex
from mqchat.search.postgres import PostgresSearchIndex
from mqchat.search.sqlite import SqliteSearchIndex

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's empty index lives: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "search.db")
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


async def open_index(url: str) -> SearchIndex:
    if url.startswith("postgresql://"):
        return await PostgresSearchIndex.open(url)
    return await SqliteSearchIndex.open(url)


@pytest.fixture
async def index(index_url: str) -> AsyncIterator[SearchIndex]:
    opened = await open_index(index_url)
    yield opened
    await opened.close()
