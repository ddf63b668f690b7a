"""Storage interfaces and their implementations.

``base`` holds the protocols every backend implements (:class:`MessageStore`, :class:`Directory`);
``memory`` holds in-process versions for unit tests; ``sqlite`` the embedded default. One contract
suite (tests/contract/) runs over every backend.

Redis (presence, read state, push state, bridge leases) is reached only through
:class:`mqchat.storage.redis_client.RedisClient`, which owns the client, keys, scripts and error mapping;
nothing outside this package issues a Redis command.
"""

from mqchat.storage.base import (
    Channel,
    CmidKey,
    Directory,
    HistoryPage,
    MessageStore,
    Position,
    StoredMessage,
    User,
)

__all__ = [
    "Channel",
    "CmidKey",
    "Directory",
    "HistoryPage",
    "MessageStore",
    "Position",
    "StoredMessage",
    "User",
]
