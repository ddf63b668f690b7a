"""Invalidation events: what a directory change may have changed in cached access decisions.

Every directory write that can change what a user may see or do emits events after its commit
(:meth:`mqchat.storage.directory.DirectoryRules.add_listener`); the process that made the change
publishes them on the Redis stream ``acl:invalidations``
(:class:`mqchat.storage.invalidations.InvalidationFeed`) and every process that caches decisions
follows it (:func:`mqchat.access.follow_invalidations`) and drops exactly the entries named:

==========  =====================================  ==============================================
scope       emitted by                             drops
==========  =====================================  ==============================================
user        join, leave, kick, ban, unban,         that user's cached channel set
            timeout, role grant / revoke, a
            member overwrite, group membership,
            ownership transfer, a new channel's
            or server's members
channel     a role overwrite, a channel's slow     every cached user in ``server`` (who may gain
            mode, a channel deleted                or lose the channel), and the channel's users
server      a role's permissions or position, a    every cached user in the server
            role deleted, a server channel
            created, the server deleted
==========  =====================================  ==============================================

Pure: no I/O here. The wire form is a flat map of strings (one Redis stream entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Scope = Literal["user", "channel", "server"]
SCOPES: tuple[Scope, ...] = ("user", "channel", "server")


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One change: ``scope`` and the id of the user, channel or server; for a channel, its server
    (``None`` for direct and group channels)."""

    scope: Scope
    id: str
    server: str | None = None

    def fields(self) -> dict[str, str]:
        """The wire form (a stream entry's fields)."""
        out = {"scope": self.scope, "id": self.id}
        if self.server is not None:
            out["server"] = self.server
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Invalidation | None:
        """The event in a stream entry; ``None`` for an entry this version does not understand (a newer
        writer's scope): the caller then drops everything, which is always safe."""
        scope, ident = fields.get("scope", ""), fields.get("id", "")
        if not ident:
            return None
        for known in SCOPES:
            if scope == known:
                return cls(known, ident, fields.get("server") or None)
        return None


def user(user_id: str) -> Invalidation:
    return Invalidation("user", user_id)


def channel(channel_id: str, server_id: str | None) -> Invalidation:
    return Invalidation("channel", channel_id, server_id)


def server(server_id: str) -> Invalidation:
    return Invalidation("server", server_id)
