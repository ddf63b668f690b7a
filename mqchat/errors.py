"""Error hierarchy shared by every mqchat process.

::

    MqchatError
     ├── ConfigError            settings are missing or invalid (fatal at start-up)
     ├── InvalidId              an id does not follow the id grammar
     ├── InvalidTopic           a topic or filter does not follow the topic grammar
     ├── SchemaError            a payload was rejected; ``code`` is sent to the client
     ├── AuthError              a token or identity was refused; ``reason`` says why
     ├── StorageError           the store failed
     │    ├── StorageUnavailable  temporary: retry later (``retry_after`` seconds)
     │    └── Conflict            a uniqueness rule was violated (``conflict``; e.g. username taken)
     └── DirectoryError         a directory request was refused; nothing changed (``code`` below)
          ├── NotFound            ``not_found``: the object does not exist (or may not be seen)
          ├── Forbidden           ``forbidden``: the actor lacks ``permission``
          ├── RoleHierarchy       ``role_hierarchy``: the target sits at or above the actor
          ├── OwnerCannotLeave    ``owner_cannot_leave``: transfer ownership first
          ├── Banned              ``banned``: the user is banned from the server
          ├── InviteExpired       ``invite_expired``
          ├── InviteUsedUp        ``invite_used_up``
          ├── InviteRevoked       ``invite_revoked``
          ├── Full                ``channel_full`` / ``server_full``: at ``limits.max_channel_members``;
          │                       ``user_channels_full`` / ``user_servers_full``: a user at their cap
          ├── TooMany             ``too_many_roles``, ``too_many_channels``, ``too_many_overwrites``
          ├── UnknownPermission   ``unknown_permission``: a permission name we do not know
          └── InvalidRequest      ``invalid`` (or a narrower ``code``): a malformed request

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

    code = "conflict"


class DirectoryError(MqchatError):
    """A directory request was refused by a rule; the directory did not change.

    Attributes:
        code: stable machine-readable code (the HTTP API maps each to a 4xx status).
        message: human-readable explanation.
    """

    code = "directory_error"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.code}: {message}")


class NotFound(DirectoryError):
    """The object does not exist, or the actor may not see it (both read the same to a client)."""

    code = "not_found"

    def __init__(self, kind: str, object_id: str) -> None:
        self.kind = kind
        self.object_id = object_id
        super().__init__(f"{kind} {object_id!r} not found")


class Forbidden(DirectoryError):
    """The actor may see the object but lacks ``permission`` (a permission name) to act on it."""

    code = "forbidden"

    def __init__(self, permission: str, message: str | None = None) -> None:
        self.permission = permission
        super().__init__(message or f"missing permission {permission}")


class RoleHierarchy(DirectoryError):
    """The role or member acted on sits at or above the actor's highest role (or is the owner)."""

    code = "role_hierarchy"


class OwnerCannotLeave(DirectoryError):
    """The owner cannot leave or be removed from their server; ownership must be transferred first."""

    code = "owner_cannot_leave"


class Banned(DirectoryError):
    """The user is banned from the server: no join, not even by invite."""

    code = "banned"


class InviteExpired(DirectoryError):
    code = "invite_expired"


class InviteUsedUp(DirectoryError):
    code = "invite_used_up"


class InviteRevoked(DirectoryError):
    code = "invite_revoked"


class Full(DirectoryError):
    """A channel (``channel_full``) or a server (``server_full``) already holds ``limit`` members, the
    most ``limits.max_channel_members`` allows; nobody was added."""

    def __init__(self, kind: str, object_id: str, limit: int, message: str | None = None) -> None:
        self.code = f"{kind}_full"
        self.kind = kind
        self.object_id = object_id
        self.limit = limit
        super().__init__(message or f"{kind} {object_id!r} already has {limit} members, the most allowed")


class TooMany(DirectoryError):
    """A server already has its most roles or channels, or a channel its most overwrites
    (``too_many_<what>``); nothing was created."""

    def __init__(self, what: str, limit: int) -> None:
        self.code = f"too_many_{what}"
        self.limit = limit
        super().__init__(f"at most {limit} {what} here; delete one first")


class UnknownPermission(DirectoryError, ValueError):
    """A permission name that :class:`mqchat.permissions.Permission` does not define."""

    code = "unknown_permission"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown permission {name!r}")


class InvalidRequest(DirectoryError, ValueError):
    """A malformed directory request (a blank name, a negative slow mode, a server-only operation on a
    direct channel). ``code`` is ``invalid`` unless a narrower one is given."""

    code = "invalid"

    def __init__(self, message: str, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message)
