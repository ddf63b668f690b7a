"""Error hierarchy shared by every mqchat process.

::

    MqchatError
     ├── ConfigError            settings are missing or invalid (fatal at start-up)
     ├── InvalidId              an id does not follow the id grammar
     ├── InvalidTopic           a topic or filter does not follow the topic grammar
     ├── SchemaError            a payload was rejected; ``code`` is sent to the client
     ├── AuthError              a token or identity was refused; ``reason`` says why
     └── StorageError           the store failed
          ├── StorageUnavailable  temporary: retry later (``retry_after`` seconds)
          └── Conflict            a uniqueness rule was violated (e.g. username taken)

Errors meant for clients carry a stable ``code`` (documented in docs/protocol.md); the rest are
for operators and never reach a device verbatim.
"""

from __future__ import annotations


class MqchatError(Exception):
    """Base class of every error raised by mqchat code."""


class ConfigError(MqchatError):
    """Settings are missing or invalid."""


class InvalidId(MqchatError, ValueError):
    """An id (user, device, channel) does not match ``[A-Za-z0-9_-]{1,64}``."""

    def __init__(self, kind: str, value: object) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"invalid {kind} id {value!r}: expected 1-64 characters from [A-Za-z0-9_-]")


class InvalidTopic(MqchatError, ValueError):
    """A topic or subscription filter is not part of the mqchat topic grammar."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"invalid topic {topic!r}: {reason}")


class SchemaError(MqchatError, ValueError):
    """A payload failed validation.

    Attributes:
        code: stable machine-readable code sent to the client (e.g. ``payload_too_large``).
        message: human-readable explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class AuthError(MqchatError):
    """A token was refused (expired, badly signed, wrong audience) or an identity did not match."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class StorageError(MqchatError):
    """The store failed; the operation did not take effect."""


class StorageUnavailable(StorageError):
    """A temporary storage failure: the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 0.5) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Conflict(StorageError):
    """A uniqueness rule was violated (a taken username, for example)."""
