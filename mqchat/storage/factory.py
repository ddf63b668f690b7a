"""Open the configured backends. The one place that maps ``store.backend`` and ``directory.url`` to
implementations."""

from __future__ import annotations

from pathlib import Path

from mqchat.config import CassandraSettings, LimitsSettings, Settings
from mqchat.errors import ConfigError
from mqchat.storage.base import MessageStore, ServerDirectory


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


async def open_directory(settings: Settings) -> ServerDirectory:
    """The directory named by ``settings.directory``, opened.

    ``directory.url`` unset: the SQLite file in ``data_dir`` (migrated on open), whatever the message
    store. ``postgresql://...``: PostgreSQL, whose schema must have been migrated beforehand
    (``mqchat migrate``). Cassandra no longer holds the directory (docs/storage-cassandra.md).
    """
    d = settings.directory
    return await open_directory_from(settings.store.backend, settings.directory_db, settings.cassandra,
                                     url=d.url, pool_min=d.pool_min, pool_max=d.pool_max,
                                     limits=settings.limits)


def _caps(limits: LimitsSettings) -> dict[str, int]:
    """The directory's share of ``limits`` (its constructors' keyword arguments)."""
    return {"max_channel_members": limits.max_channel_members, "max_channels_per_user": limits.max_channels_per_user,
            "max_servers_per_user": limits.max_servers_per_user}


async def open_directory_from(backend: str, directory_db: Path, cassandra: CassandraSettings | None = None, *,
                              url: str | None = None, pool_min: int = 1, pool_max: int = 10,
                              limits: LimitsSettings | None = None) -> ServerDirectory:
    """:func:`open_directory` from the few settings it needs (for amqtt plugins, which get plain data).

    ``backend`` (the message store) no longer decides the directory; it is kept so callers written for
    the Cassandra directory keep working (they get the SQLite directory in ``directory_db``).
    """
    caps = _caps(limits or LimitsSettings())
    if url is not None:
        from mqchat.storage.postgres import PostgresDirectory

        return await PostgresDirectory(url, min_size=pool_min, max_size=pool_max, **caps).open()
    if backend in ("sqlite", "cassandra"):
        from mqchat.storage.sqlite import SqliteDirectory

        return await SqliteDirectory(directory_db, **caps).open()
    raise ConfigError(f"store.backend {backend!r} is not available yet")


async def migrate_directory(settings: Settings) -> list[int]:
    """Apply pending PostgreSQL directory migrations (``directory.url`` set); the versions applied.

    The SQLite directory migrates itself on open, so there is nothing to do without a URL.
    """
    if settings.directory.url is None:
        return []
    from mqchat.storage.postgres import migrate

    return await migrate(settings.directory.url)
