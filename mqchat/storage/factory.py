"""Open the configured backends. The one place that maps ``store.backend`` to an implementation."""

from __future__ import annotations

from pathlib import Path

from mqchat.config import CassandraSettings, Settings
from mqchat.errors import ConfigError
from mqchat.storage.base import Directory, MessageStore


async def open_message_store(settings: Settings) -> MessageStore:
    """The message store named by ``settings.store.backend``, opened.

    SQLite migrates its file on open; a Cassandra keyspace must have been migrated beforehand
    (``python -m mqchat.storage.cql migrate``): schema changes are never applied on start-up.
    """
    if settings.store.backend == "sqlite":
        from mqchat.storage.sqlite import SqliteMessageStore

        return await SqliteMessageStore(settings.messages_db).open()
    if settings.store.backend == "cassandra":
        # Imported here: the driver is loaded only by deployments that use it.
        from mqchat.storage.cassandra import CassandraMessageStore

        return await CassandraMessageStore(settings.cassandra).open()
    raise ConfigError(f"store.backend {settings.store.backend!r} is not available yet")


async def open_directory(settings: Settings) -> Directory:
    """The directory named by ``settings.store.backend``, opened (schema present)."""
    return await open_directory_from(settings.store.backend, settings.directory_db, settings.cassandra)


async def open_directory_from(backend: str, directory_db: Path, cassandra: CassandraSettings) -> Directory:
    """:func:`open_directory` from the few settings it needs (for amqtt plugins, which get plain data)."""
    if backend == "sqlite":
        from mqchat.storage.sqlite import SqliteDirectory

        return await SqliteDirectory(directory_db).open()
    if backend == "cassandra":
        from mqchat.storage.cassandra import CassandraDirectory

        return await CassandraDirectory(cassandra).open()
    raise ConfigError(f"store.backend {backend!r} is not available yet")
