"""Open a search index from one URL (the setting the API, the indexer and ``mqchat reindex`` share).

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a plain file path: SQLite FTS5;
- ``postgresql://…`` or ``postgres://…``: PostgreSQL (the backend module, and so psycopg, is
  imported only then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from mqchat.errors import ConfigError
from mqchat.search.base import SearchIndex

SQLITE_FILE: Final = "search.db"
"""The embedded index's file name under the data directory."""


def default_url(data_dir: Path) -> str:
    """The embedded default: ``<data_dir>/search.db`` (what a ``search_url`` setting defaults to)."""
    return f"sqlite:///{data_dir / SQLITE_FILE}"


async def open_search_index(url: str, *, language: str = "english") -> SearchIndex:
    """Open (creating if needed) the index ``url`` names.

    Args:
        url: where the index lives (see the module docstring).
        language: PostgreSQL's stemming configuration; ignored by SQLite.

    Raises:
        ConfigError: an unknown scheme or an unusable language.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from mqchat.search.postgres import PostgresSearchIndex

        return await PostgresSearchIndex.open(url, language=language)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise ConfigError(f"search index URL {url!r}: expected sqlite:///<path>")
        url = path[1:]
    elif "://" in url:
        raise ConfigError(f"search index URL {url!r}: expected sqlite:///<path> or postgresql://…")
    from mqchat.search.sqlite import SqliteSearchIndex

    return await SqliteSearchIndex.open(url)
