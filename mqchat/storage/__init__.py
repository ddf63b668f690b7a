"""Storage interfaces and their implementations.

``base`` holds the protocols every backend implements (:class:`MessageStore`, :class:`Directory`,
:class:`ServerDirectory`); ``memory`` holds in-process versions for unit tests; ``sqlite`` the
embedded default; ``cassandra`` the message store at scale; ``postgres`` the directory at scale.
The directory's rules are written once in ``directory`` over primitives each backend supplies
(``sql_directory`` for SQLite and PostgreSQL). One contract suite (tests/contract/) runs over every
backend.

Redis (presence, read state, push state, bridge leases, rate limits) is reached only through
:class:`mqchat.storage.redis_client.RedisClient`, which owns the client, keys, scripts and error mapping;
nothing outside this package issues a Redis command.
"""

from mqchat.storage.base import (
    AuditEntry,
    Ban,
    Channel,
    ChannelAccess,
    ChannelOverwrite,
    CmidKey,
    Directory,
    HistoryPage,
    Invite,
    Member,
    MessageStore,
    Position,
    Role,
    Server,
    ServerDirectory,
    StoredMessage,
    User,
)

__all__ = [
    "AuditEntry",
    "Ban",
    "Channel",
    "ChannelAccess",
    "ChannelOverwrite",
    "CmidKey",
    "Directory",
    "HistoryPage",
    "Invite",
    "Member",
    "MessageStore",
    "Position",
    "Role",
    "Server",
    "ServerDirectory",
    "StoredMessage",
    "User",
]
