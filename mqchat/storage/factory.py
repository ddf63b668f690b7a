"""Open the configured backends. The one place that maps ``store.backend`` to an implementation."""

from __future__ import annotations

from mqchat.config import Settings
from mqchat.errors import ConfigError
from mqchat.storage.base import Directory, MessageStore


async def open_message_store(settings: Settings) -> MessageStore:
    """The message store named by ``settings.store.backend``, opened (schema present)."""
    if settings.store.backend == "sqlite":
        from mqchat.storage.sqlite import SqliteMessageStore

        return await SqliteMessageStore(settings.messages_db).open()
    raise ConfigError(f"store.backend {settings.store.backend!r} is not available yet")


async def open_directory(settings: Settings) -> Directory:
    """The directory named by ``settings.store.backend``, opened (schema present)."""
    if settings.store.backend == "sqlite":
        from mqchat.storage.sqlite import SqliteDirectory

        return await SqliteDirectory(settings.directory_db).open()
    raise ConfigError(f"store.backend {settings.store.backend!r} is not available yet")
