"""Storage interfaces and their implementations.

``base`` holds the protocols every backend implements (:class:`MessageStore`, :class:`Directory`);
``memory`` holds in-process versions for unit tests; ``sqlite`` the embedded default. One contract
suite (tests/contract/) runs over every backend.
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
