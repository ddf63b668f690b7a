"""The directory's rules, written once over a small transactional interface every backend provides.

::

    API / broker / bridge
          │  ServerDirectory methods (actor, now_ms)
          ▼
    DirectoryRules ── validates input, loads the server, the actor's member row and roles,
          │           asks mqchat.permissions (resolver + hierarchy), writes, appends the audit entry
          │  DirectoryTx primitives, all inside one transaction
          ▼
    MemoryTx (dicts) · SqlTx over SQLite · SqlTx over PostgreSQL

A backend supplies :meth:`DirectoryRules._tx`: a context manager yielding a :class:`DirectoryTx`
whose reads and writes form one transaction (committed on a clean exit, rolled back on an
exception). Writes lock the server row first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite and
memory serialise writers), so a check and the change it guards cannot be separated by another
writer. Every refusal is raised before the first write.

After a write that can change what someone may see or do commits, the directory hands its
:class:`~mqchat.invalidation.Invalidation` events to its listeners (:meth:`DirectoryRules.add_listener`;
the API publishes them on Redis for every process that caches access decisions, see
``docs/permissions.md``). A write returns once its listeners have run.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from mqchat import invalidation as inv
from mqchat import permissions as P
from mqchat.config import (
    DEFAULT_MAX_CHANNEL_MEMBERS,
    DEFAULT_MAX_CHANNELS_PER_USER,
    DEFAULT_MAX_SERVERS_PER_USER,
)
from mqchat.errors import (
    Banned,
    Conflict,
    Forbidden,
    Full,
    InvalidRequest,
    InviteExpired,
    InviteRevoked,
    InviteUsedUp,
    NotFound,
    OwnerCannotLeave,
    TooMany,
)
from mqchat.ids import new_random_id
from mqchat.invalidation import Invalidation
from mqchat.permissions import NONE, Permission, Rank
from mqchat.storage.base import (
    EVERYONE_NAME,
    AccessScope,
    AuditEntry,
    AuditPage,
    Ban,
    Channel,
    ChannelAccess,
    ChannelKind,
    ChannelMemberPage,
    ChannelOverwrite,
    Invite,
    Member,
    MemberPage,
    OverwriteTarget,
    Role,
    Server,
    User,
    direct_key,
)

MAX_NAME = 100
MAX_DISPLAY_NAME = 64
MAX_SLOW_MODE_S = 6 * 3600
MAX_TIMEOUT_MS = 28 * 24 * 3600 * 1000
MAX_INVITE_USES = 100_000
MAX_PAGE = 1000
#: Most roles of a server (``@everyone`` not counted), channels of a server, and overwrites of a channel:
#: each is listed whole (``GET .../roles``, ``.../channels``, ``.../permissions``) and read to resolve a
#: member's permissions, so each is bounded.
MAX_ROLES = 250
MAX_SERVER_CHANNELS = 500
MAX_OVERWRITES = 500
#: Server members one page of a server channel's members looks at, at most: a private channel of a large
#: server may have few members among many, and one request must not walk them all.
MEMBER_SCAN = 2000
_URL = re.compile(r"^https?://[^\s]{1,2000}$")

logger = logging.getLogger(__name__)

#: Told about each committed change (:meth:`DirectoryRules.add_listener`).
Listener = Callable[[Sequence[Invalidation]], Awaitable[None]]


class DirectoryTx(Protocol):
    """The primitives :class:`DirectoryRules` needs; one instance is one transaction. No rules here:
    a primitive does exactly what it says (deleting a server channel deletes its overwrites and
    invites; deleting a member deletes their roles and their member overwrites in the server)."""

    # users
    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]: ...
    async def user_by_name(self, username: str) -> User | None: ...
    async def insert_user(self, user: User) -> None: ...
    async def update_user(self, user: User) -> None: ...

    # channels (direct and group with explicit members; server channels)
    async def get_channels(self, channel_ids: Collection[str]) -> dict[str, Channel]: ...
    async def direct_channel(self, key: str) -> Channel | None: ...
    async def channel_ids_after(self, after: str, limit: int) -> list[str]: ...
    async def insert_channel(self, channel: Channel, direct_key: str | None) -> None: ...
    async def update_channel(self, channel: Channel) -> None: ...
    async def delete_channel(self, channel_id: str) -> None: ...
    async def add_channel_member(self, channel_id: str, user_id: str, now_ms: int) -> bool: ...
    async def remove_channel_member(self, channel_id: str, user_id: str) -> bool: ...
    async def channel_members(self, channel_id: str) -> list[str]: ...
    async def channel_members_page(self, channel_id: str, after: str | None, limit: int) -> list[str]: ...
    async def count_channel_members(self, channel_id: str, at_most: int) -> int:
        """The channel's explicit members, counted up to ``at_most`` (a bound on the work)."""
        ...
    async def count_user_channels(self, user_id: str, at_most: int) -> int:
        """The direct and group channels ``user_id`` is a member of, counted up to ``at_most``."""
        ...
    async def count_user_servers(self, user_id: str, at_most: int) -> int:
        """The servers ``user_id`` is a member of, counted up to ``at_most``."""
        ...
    async def lock_users(self, user_ids: Collection[str]) -> None:
        """Hold the users' rows (in id order) until the transaction ends, like :meth:`lock_channel`: a
        user's channel or server count and the add it allows are not separated by another writer."""
        ...
    async def lock_channel(self, channel_id: str) -> None:
        """Hold a direct or group channel's row until the transaction ends (PostgreSQL ``FOR UPDATE``;
        a no-op where writers are serialised anyway), so that a member count and the add it allows
        are not separated by another writer."""
        ...
    async def explicit_channel_ids(self, user_id: str) -> set[str]: ...
    async def channel_memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]: ...

    # servers and members
    async def get_server(self, server_id: str, *, lock: bool = False) -> Server | None: ...
    async def get_servers(self, server_ids: Collection[str]) -> dict[str, Server]: ...
    async def insert_server(self, server: Server) -> None: ...
    async def update_server(self, server: Server) -> None: ...
    async def delete_server(self, server_id: str) -> None: ...
    async def discoverable_servers(self, after: str | None, limit: int) -> list[Server]: ...
    async def server_ids_of(self, user_id: str) -> list[str]: ...
    async def get_members(self, server_id: str, user_ids: Collection[str]) -> dict[str, Member]: ...
    async def members_page(self, server_id: str, after: str | None, limit: int) -> list[Member]: ...
    async def all_members(self, server_id: str) -> list[Member]: ...
    async def count_members(self, server_id: str, at_most: int) -> int:
        """The server's members, counted up to ``at_most``."""
        ...
    async def insert_member(self, server_id: str, user_id: str, now_ms: int) -> bool: ...
    async def delete_member(self, server_id: str, user_id: str) -> None: ...
    async def set_timeout(self, server_id: str, user_id: str, until_ms: int | None) -> None: ...

    # roles
    async def get_roles(self, server_id: str) -> list[Role]: ...
    async def insert_role(self, role: Role) -> None: ...
    async def update_role(self, role: Role) -> None: ...
    async def delete_role(self, server_id: str, role_id: str) -> None: ...
    async def add_member_role(self, server_id: str, user_id: str, role_id: str) -> bool: ...
    async def remove_member_role(self, server_id: str, user_id: str, role_id: str) -> bool: ...

    # server channels and overwrites
    async def server_channels(self, server_id: str) -> list[Channel]: ...
    async def get_overwrites(self, channel_ids: Collection[str]) -> dict[str, list[ChannelOverwrite]]: ...
    async def put_overwrite(self, overwrite: ChannelOverwrite) -> None: ...
    async def delete_overwrite(self, channel_id: str, target: str, target_id: str) -> bool: ...

    # bans, invites, audit log
    async def get_ban(self, server_id: str, user_id: str) -> Ban | None: ...
    async def insert_ban(self, ban: Ban) -> None: ...
    async def delete_ban(self, server_id: str, user_id: str) -> bool: ...
    async def get_bans(self, server_id: str) -> list[Ban]: ...
    async def get_invite(self, code: str, *, lock: bool = False) -> Invite | None: ...
    async def insert_invite(self, invite: Invite) -> None: ...
    async def update_invite(self, invite: Invite) -> None: ...
    async def get_invites(self, server_id: str) -> list[Invite]: ...
    async def insert_audit(self, server_id: str, actor: str, action: str, target: str | None,
                           details: Mapping[str, Any], now_ms: int) -> None: ...
    async def audit_page(self, server_id: str, before: int | None, limit: int) -> list[AuditEntry]: ...


# --- pure helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerView:
    """A server with its roles: enough to rank a member and resolve their channel permissions."""

    server: Server
    roles: dict[str, Role]

    @property
    def everyone(self) -> Permission:
        return self.roles[self.server.server_id].perms

    def held(self, member: Member) -> dict[str, Permission]:
        return {r: self.roles[r].perms for r in member.role_ids if r in self.roles}

    def rank(self, member: Member) -> Rank:
        positions = [self.roles[r].position for r in member.role_ids if r in self.roles]
        is_owner = member.user_id == self.server.owner_id
        perms = P.base_permissions(is_owner=is_owner, everyone=self.everyone, roles=self.held(member).values())
        return Rank(member.user_id, is_owner=is_owner, top_position=max(positions, default=0), perms=perms)

    def channel_perms(self, member: Member, overwrites: Collection[ChannelOverwrite]) -> Permission:
        everyone_ow: P.Overwrite | None = None
        member_ow: P.Overwrite | None = None
        role_ows: dict[str, P.Overwrite] = {}
        for ow in overwrites:
            value = P.Overwrite(allow=ow.allow, deny=ow.deny)
            if ow.target == "member":
                if ow.target_id == member.user_id:
                    member_ow = value
            elif ow.target_id == self.server.server_id:
                everyone_ow = value
            else:
                role_ows[ow.target_id] = value
        return P.effective(is_owner=member.user_id == self.server.owner_id, everyone=self.everyone,
                           roles=self.held(member), everyone_overwrite=everyone_ow, role_overwrites=role_ows,
                           member_overwrite=member_ow)


def _name(value: str, what: str, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidRequest(f"{what} must be 1-{limit} characters, not blank")
    return value.strip()


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _slow_mode(seconds: int) -> int:
    if not isinstance(seconds, int) or not 0 <= seconds <= MAX_SLOW_MODE_S:
        raise InvalidRequest(f"slow_mode_s must be between 0 and {MAX_SLOW_MODE_S}")
    return seconds


def _server_channel(channel: Channel | None, channel_id: str) -> Channel:
    if channel is None:
        raise NotFound("channel", channel_id)
    if channel.kind != "server" or channel.server_id is None:
        raise InvalidRequest(f"channel {channel_id!r} is not a server channel", code="not_server_channel")
    return channel


@dataclass(frozen=True, slots=True)
class _Actor:
    view: ServerView
    member: Member
    rank: Rank


class DirectoryRules:
    """:class:`~mqchat.storage.base.ServerDirectory` on top of a backend's :meth:`_tx`."""

    max_channel_members: int = DEFAULT_MAX_CHANNEL_MEMBERS
    """``limits.max_channel_members``: the most members of a direct or group channel, and of a server
    (its channels open to ``@everyone`` hold every member). Backends take it as a constructor argument."""
    max_channels_per_user: int = DEFAULT_MAX_CHANNELS_PER_USER
    max_servers_per_user: int = DEFAULT_MAX_SERVERS_PER_USER
    """``limits.max_channels_per_user`` (direct and group channels) and ``limits.max_servers_per_user``."""
    max_roles: int = MAX_ROLES
    max_server_channels: int = MAX_SERVER_CHANNELS
    max_overwrites: int = MAX_OVERWRITES
    _listeners: tuple[Listener, ...] = ()

    def _tx(self, *, write: bool) -> AbstractAsyncContextManager[DirectoryTx]:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with the invalidation events of each committed change (in this process),
        before the write returns. A listener that raises is logged and the write still succeeds: the
        change is committed."""
        self._listeners = (*self._listeners, listener)

    async def _changed(self, *events: Invalidation) -> None:
        if not events:
            return
        for listener in self._listeners:
            try:
                await listener(events)
            except Exception:
                logger.exception("an invalidation listener failed for %s", events)

    # --- shared loaders ----------------------------------------------------------------------------

    @staticmethod
    async def _view(tx: DirectoryTx, server: Server) -> ServerView:
        return ServerView(server, {r.role_id: r for r in await tx.get_roles(server.server_id)})

    async def _actor(self, tx: DirectoryTx, server_id: str, actor: str, *, lock: bool = True) -> _Actor:
        """The server (locked for writing) as seen by ``actor``; ``NotFound`` for non-members, who may
        not see the server at all."""
        server = await tx.get_server(server_id, lock=lock)
        member = (await tx.get_members(server_id, [actor])).get(actor) if server else None
        if server is None or member is None:
            raise NotFound("server", server_id)
        view = await self._view(tx, server)
        return _Actor(view, member, view.rank(member))

    async def _target(self, tx: DirectoryTx, a: _Actor, user_id: str) -> tuple[Member, Rank]:
        target = (await tx.get_members(a.view.server.server_id, [user_id])).get(user_id)
        if target is None:
            raise NotFound("member", user_id)
        return target, a.view.rank(target)

    async def _channel_actor(self, tx: DirectoryTx, channel_id: str, actor: str) -> tuple[Channel, _Actor, Permission]:
        """A server channel, the actor in its server, and their permissions in it (``NotFound`` when
        they cannot see it)."""
        channel = _server_channel((await tx.get_channels([channel_id])).get(channel_id), channel_id)
        assert channel.server_id is not None
        try:
            a = await self._actor(tx, channel.server_id, actor)
        except NotFound:
            raise NotFound("channel", channel_id) from None
        perms = a.view.channel_perms(a.member, (await tx.get_overwrites([channel_id])).get(channel_id, []))
        if Permission.VIEW_CHANNEL not in perms:
            raise NotFound("channel", channel_id)
        return channel, a, perms

    @staticmethod
    async def _audit(tx: DirectoryTx, a: _Actor | str, server_id: str, action: str, target: str | None,
                     now_ms: int, /, **details: Any) -> None:
        actor = a if isinstance(a, str) else a.member.user_id
        await tx.insert_audit(server_id, actor, action, target, details, now_ms)

    # --- users and profiles ------------------------------------------------------------------------

    async def create_user(self, username: str, password_hash: str, *, now_ms: int) -> User:
        user = User(new_random_id("u"), username, password_hash, now_ms)
        async with self._tx(write=True) as tx:
            if await tx.user_by_name(username) is not None:
                raise Conflict(f"username {username!r} is taken")
            try:
                await tx.insert_user(user)
            except Conflict:
                raise Conflict(f"username {username!r} is taken") from None
        return user

    async def user_by_name(self, username: str) -> User | None:
        async with self._tx(write=False) as tx:
            return await tx.user_by_name(username)

    async def existing_users(self, user_ids: Collection[str]) -> set[str]:
        async with self._tx(write=False) as tx:
            return set(await tx.get_users(set(user_ids)))

    async def get_user(self, user_id: str) -> User | None:
        return (await self.users([user_id])).get(user_id)

    async def users(self, user_ids: Collection[str]) -> dict[str, User]:
        async with self._tx(write=False) as tx:
            return await tx.get_users(set(user_ids))

    async def update_profile(self, user_id: str, *, display_name: str | None, avatar_url: str | None) -> User:
        if display_name is not None:
            display_name = _name(display_name, "display_name", MAX_DISPLAY_NAME)
        if avatar_url is not None and not _URL.match(avatar_url):
            raise InvalidRequest("avatar_url must be an http(s) URL of at most 2000 characters")
        async with self._tx(write=True) as tx:
            user = (await tx.get_users([user_id])).get(user_id)
            if user is None:
                raise NotFound("user", user_id)
            updated = replace(user, display_name=display_name, avatar_url=avatar_url)
            await tx.update_user(updated)
        return updated

    # --- direct and group channels (explicit members), and membership as visibility ---------------

    async def create_channel(
        self, kind: ChannelKind, name: str | None, creator: str, members: Collection[str], *, now_ms: int,
    ) -> tuple[Channel, bool]:
        if kind not in ("direct", "group"):
            raise InvalidRequest("server channels are created with create_server_channel", code="server_channel")
        everyone = list(dict.fromkeys([creator, *members]))
        if len(everyone) > self.max_channel_members:
            raise Full("channel", name or kind, self.max_channel_members,
                       f"a channel holds at most {self.max_channel_members} members; {len(everyone)} were given")
        key = direct_key(*everyone) if kind == "direct" and len(everyone) == 2 else None
        channel = Channel(new_random_id("c"), kind, name, creator, now_ms)
        async with self._tx(write=True) as tx:
            if key is not None:
                existing = await tx.direct_channel(key)
                if existing is not None:
                    return existing, False
            await self._user_room(tx, everyone, servers=False)
            await tx.insert_channel(channel, key)
            for user in everyone:
                await tx.add_channel_member(channel.channel_id, user, now_ms)
        await self._changed(*(inv.user(u) for u in everyone))
        return channel, True

    async def get_channel(self, channel_id: str) -> Channel | None:
        async with self._tx(write=False) as tx:
            return (await tx.get_channels([channel_id])).get(channel_id)

    async def all_channel_ids(self, *, after: str = "", limit: int = 1000) -> list[str]:
        """Every channel id (direct, group and server channels) above ``after``, in id order: a page of
        the whole directory, for maintenance jobs such as ``mqchat reindex``."""
        async with self._tx(write=False) as tx:
            return await tx.channel_ids_after(after, limit)

    async def _explicit(self, tx: DirectoryTx, channel_id: str) -> None:
        channel = (await tx.get_channels([channel_id])).get(channel_id)
        if channel is not None and channel.kind == "server":
            raise InvalidRequest("a server channel's members follow the server and its permissions",
                                 code="server_channel")

    async def add_member(self, channel_id: str, user_id: str, *, now_ms: int) -> bool:
        async with self._tx(write=True) as tx:
            await self._explicit(tx, channel_id)
            await tx.lock_channel(channel_id)
            if await tx.channel_memberships([(channel_id, user_id)]):
                return False
            if await tx.count_channel_members(channel_id, self.max_channel_members) >= self.max_channel_members:
                raise Full("channel", channel_id, self.max_channel_members)
            await self._user_room(tx, [user_id], servers=False)
            changed = await tx.add_channel_member(channel_id, user_id, now_ms)
        if changed:
            await self._changed(inv.user(user_id))
        return changed

    async def remove_member(self, channel_id: str, user_id: str) -> bool:
        async with self._tx(write=True) as tx:
            await self._explicit(tx, channel_id)
            changed = await tx.remove_channel_member(channel_id, user_id)
        if changed:
            await self._changed(inv.user(user_id))
        return changed

    async def members(self, channel_id: str) -> list[str]:
        async with self._tx(write=False) as tx:
            channel = (await tx.get_channels([channel_id])).get(channel_id)
            if channel is None or channel.server_id is None:
                return await tx.channel_members(channel_id)
            server = await tx.get_server(channel.server_id)
            if server is None:
                return []
            view = await self._view(tx, server)
            overwrites = (await tx.get_overwrites([channel_id])).get(channel_id, [])
            return sorted(m.user_id for m in await tx.all_members(server.server_id)
                          if Permission.VIEW_CHANNEL in view.channel_perms(m, overwrites))

    async def channel_members(self, channel_id: str, *, after: str | None = None, limit: int = 100,
                              scan: int = MEMBER_SCAN) -> ChannelMemberPage:
        limit = _limit(limit)
        scan = max(1, min(scan, MEMBER_SCAN))
        async with self._tx(write=False) as tx:
            channel = (await tx.get_channels([channel_id])).get(channel_id)
            if channel is None or channel.server_id is None:
                found = await tx.channel_members_page(channel_id, after, limit + 1)
                return ChannelMemberPage(found[:limit], found[limit - 1] if len(found) > limit else None)
            server = await tx.get_server(channel.server_id)
            if server is None:
                return ChannelMemberPage([], None)
            view = await self._view(tx, server)
            overwrites = (await tx.get_overwrites([channel_id])).get(channel_id, [])
            seen: list[str] = []
            cursor, scanned, done = after, 0, False
            while not done and len(seen) < limit and scanned < scan:
                want = min(scan - scanned, max(limit, 200))
                chunk = await tx.members_page(server.server_id, cursor, want)
                done = len(chunk) < want  # the server has no members after this chunk
                for i, member in enumerate(chunk):
                    scanned, cursor = scanned + 1, member.user_id
                    if Permission.VIEW_CHANNEL in view.channel_perms(member, overwrites):
                        seen.append(member.user_id)
                        if len(seen) == limit:
                            done = done and i == len(chunk) - 1
                            break
            return ChannelMemberPage(seen, None if done else cursor)

    async def _visible_server_channels(self, tx: DirectoryTx, user_id: str) -> list[Channel]:
        visible: list[Channel] = []
        for server_id in await tx.server_ids_of(user_id):
            server = await tx.get_server(server_id)
            member = (await tx.get_members(server_id, [user_id])).get(user_id)
            if server is None or member is None:
                continue
            view = await self._view(tx, server)
            channels = await tx.server_channels(server_id)
            overwrites = await tx.get_overwrites([c.channel_id for c in channels])
            visible += [c for c in channels
                        if Permission.VIEW_CHANNEL in view.channel_perms(member, overwrites.get(c.channel_id, []))]
        return visible

    async def channels_of(self, user_id: str) -> list[Channel]:
        async with self._tx(write=False) as tx:
            explicit = await tx.get_channels(await tx.explicit_channel_ids(user_id))
            found = list(explicit.values()) + await self._visible_server_channels(tx, user_id)
        return sorted(found, key=lambda c: (c.created_ms, c.channel_id))

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        async with self._tx(write=False) as tx:
            explicit = await tx.explicit_channel_ids(user_id)
            return frozenset(explicit | {c.channel_id for c in await self._visible_server_channels(tx, user_id)})

    async def access_scope(self, user_id: str) -> AccessScope:
        """The channels ``user_id`` can view and the servers they are a member of, in one transaction
        (what an access cache keeps, so a server's invalidation finds its members)."""
        async with self._tx(write=False) as tx:
            explicit = await tx.explicit_channel_ids(user_id)
            servers = await tx.server_ids_of(user_id)
            visible = {c.channel_id for c in await self._visible_server_channels(tx, user_id)}
        return AccessScope(frozenset(explicit | visible), frozenset(servers))

    async def memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        access = await self.channel_access(pairs)
        return {p for p, a in access.items() if Permission.VIEW_CHANNEL in a.perms}

    async def shares_channel(self, a: str, b: str) -> bool:
        return bool(await self.channel_ids_of(a) & await self.channel_ids_of(b))

    async def channel_access(self, pairs: Collection[tuple[str, str]]) -> dict[tuple[str, str], ChannelAccess]:
        wanted = list(dict.fromkeys(pairs))
        result = {p: ChannelAccess() for p in wanted}
        async with self._tx(write=False) as tx:
            channels = await tx.get_channels({c for c, _ in wanted})
            explicit = [p for p in wanted if p[0] in channels and channels[p[0]].server_id is None]
            for pair in await tx.channel_memberships(explicit):
                result[pair] = ChannelAccess(perms=P.DIRECT_MEMBER)
            by_server: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for pair in wanted:
                channel = channels.get(pair[0])
                if channel is not None and channel.server_id is not None:
                    by_server[channel.server_id].append(pair)
            for server_id, server_pairs in by_server.items():
                server = await tx.get_server(server_id)
                if server is None:
                    continue
                view = await self._view(tx, server)
                members = await tx.get_members(server_id, {u for _, u in server_pairs})
                overwrites = await tx.get_overwrites({c for c, _ in server_pairs})
                for channel_id, user_id in server_pairs:
                    member = members.get(user_id)
                    if member is None:
                        continue
                    result[(channel_id, user_id)] = ChannelAccess(
                        perms=view.channel_perms(member, overwrites.get(channel_id, [])),
                        timeout_until_ms=member.timeout_until_ms,
                        slow_mode_s=channels[channel_id].slow_mode_s,
                        server_id=server_id,
                    )
        return result

    # --- servers -----------------------------------------------------------------------------------

    async def create_server(self, owner: str, name: str, *, discoverable: bool = False, now_ms: int) -> Server:
        server = Server(new_random_id("s"), _name(name, "server name"), owner, bool(discoverable), now_ms)
        async with self._tx(write=True) as tx:
            if not await tx.get_users([owner]):
                raise NotFound("user", owner)
            await self._user_room(tx, [owner], servers=True)
            await tx.insert_server(server)
            await tx.insert_role(Role(server.server_id, server.server_id, EVERYONE_NAME, 0, P.DEFAULT_EVERYONE))
            await tx.insert_member(server.server_id, owner, now_ms)
            await self._audit(tx, owner, server.server_id, "server.create", server.server_id, now_ms,
                              name=server.name, discoverable=server.discoverable)
        await self._changed(inv.user(owner))
        return server

    async def get_server(self, server_id: str) -> Server | None:
        async with self._tx(write=False) as tx:
            return await tx.get_server(server_id)

    async def servers_of(self, user_id: str) -> list[Server]:
        async with self._tx(write=False) as tx:
            servers = await tx.get_servers(await tx.server_ids_of(user_id))
        return sorted(servers.values(), key=lambda s: (s.created_ms, s.server_id))

    async def discoverable_servers(self, *, after: str | None = None, limit: int = 50) -> list[Server]:
        async with self._tx(write=False) as tx:
            return await tx.discoverable_servers(after, _limit(limit))

    async def rename_server(self, actor: str, server_id: str, name: str, *, now_ms: int) -> Server:
        name = _name(name, "server name")
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_SERVER)
            server = replace(a.view.server, name=name)
            await tx.update_server(server)
            await self._audit(tx, a, server_id, "server.rename", server_id, now_ms,
                              old=a.view.server.name, new=name)
        return server

    async def set_discoverable(self, actor: str, server_id: str, discoverable: bool, *, now_ms: int) -> Server:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_SERVER)
            server = replace(a.view.server, discoverable=bool(discoverable))
            await tx.update_server(server)
            await self._audit(tx, a, server_id, "server.discoverable", server_id, now_ms,
                              discoverable=server.discoverable)
        return server

    async def delete_server(self, actor: str, server_id: str, *, now_ms: int) -> None:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            if not a.rank.is_owner:
                raise Forbidden("owner", "only the owner can delete the server")
            await tx.delete_server(server_id)
        await self._changed(inv.server(server_id))

    async def transfer_ownership(self, actor: str, server_id: str, new_owner: str, *, now_ms: int) -> Server:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            if not a.rank.is_owner:
                raise Forbidden("owner", "only the owner can transfer ownership")
            await self._target(tx, a, new_owner)
            if new_owner == actor:
                raise InvalidRequest("you already own this server")
            server = replace(a.view.server, owner_id=new_owner)
            await tx.update_server(server)
            await self._audit(tx, a, server_id, "server.transfer", new_owner, now_ms)
        await self._changed(inv.user(actor), inv.user(new_owner))
        return server

    async def _join(self, tx: DirectoryTx, server: Server, user_id: str) -> bool:
        """Whether ``user_id`` may join and is not yet a member (``Banned``, ``NotFound`` otherwise)."""
        if not await tx.get_users([user_id]):
            raise NotFound("user", user_id)
        if (await tx.get_members(server.server_id, [user_id])).get(user_id) is not None:
            return False
        if await tx.get_ban(server.server_id, user_id) is not None:
            raise Banned(f"you are banned from server {server.server_id!r}")
        return True

    async def _user_room(self, tx: DirectoryTx, user_ids: Collection[str], *, servers: bool) -> None:
        """``Full`` (``user_channels_full`` / ``user_servers_full``) when one of the users already is in
        their most direct and group channels, or servers. Locks their rows first."""
        await tx.lock_users(user_ids)
        cap = self.max_servers_per_user if servers else self.max_channels_per_user
        count = tx.count_user_servers if servers else tx.count_user_channels
        what = "servers" if servers else "channels"
        for user_id in sorted(set(user_ids)):
            if await count(user_id, cap) >= cap:
                raise Full(f"user_{what}", user_id, cap,
                           f"user {user_id!r} is already in {cap} {what}, the most allowed; they must leave one first")

    async def _room(self, tx: DirectoryTx, server: Server) -> None:
        """``Full`` when the server (locked by the caller) already has its most members."""
        cap = self.max_channel_members
        if await tx.count_members(server.server_id, cap) >= cap:
            raise Full("server", server.server_id, cap)

    async def join_server(self, user_id: str, server_id: str, *, now_ms: int) -> bool:
        async with self._tx(write=True) as tx:
            server = await tx.get_server(server_id, lock=True)
            if server is None or not server.discoverable:
                raise NotFound("server", server_id)
            if not await self._join(tx, server, user_id):
                return False
            await self._room(tx, server)
            await self._user_room(tx, [user_id], servers=True)
            await tx.insert_member(server_id, user_id, now_ms)
            await self._audit(tx, user_id, server_id, "member.join", user_id, now_ms)
        await self._changed(inv.user(user_id))
        return True

    async def leave_server(self, user_id: str, server_id: str, *, now_ms: int) -> None:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, user_id)
            if a.rank.is_owner:
                raise OwnerCannotLeave("the owner cannot leave; transfer ownership first")
            await tx.delete_member(server_id, user_id)
            await self._audit(tx, a, server_id, "member.leave", user_id, now_ms)
        await self._changed(inv.user(user_id))

    async def member(self, server_id: str, user_id: str) -> Member | None:
        async with self._tx(write=False) as tx:
            return (await tx.get_members(server_id, [user_id])).get(user_id)

    async def server_members(self, server_id: str, *, after: str | None = None, limit: int = 100) -> MemberPage:
        limit = _limit(limit)
        async with self._tx(write=False) as tx:
            if await tx.get_server(server_id) is None:
                raise NotFound("server", server_id)
            found = await tx.members_page(server_id, after, limit + 1)
        page = found[:limit]
        return MemberPage(page, page[-1].user_id if len(found) > limit else None)

    async def server_permissions(self, server_id: str, user_id: str) -> Permission:
        async with self._tx(write=False) as tx:
            server = await tx.get_server(server_id)
            member = (await tx.get_members(server_id, [user_id])).get(user_id) if server else None
            if server is None or member is None:
                return NONE
            return (await self._view(tx, server)).rank(member).perms

    # --- roles -------------------------------------------------------------------------------------

    async def roles(self, server_id: str) -> list[Role]:
        async with self._tx(write=False) as tx:
            roles = await tx.get_roles(server_id)
        return sorted(roles, key=lambda r: (-r.position, r.role_id))

    @staticmethod
    def _role(a: _Actor, role_id: str) -> Role:
        role = a.view.roles.get(role_id)
        if role is None:
            raise NotFound("role", role_id)
        return role

    @staticmethod
    def _position(position: int) -> int:
        if not isinstance(position, int) or not 1 <= position <= 10_000:
            raise InvalidRequest("a role's position must be between 1 and 10000 (@everyone is 0)")
        return position

    async def create_role(self, actor: str, server_id: str, name: str, perms: Permission, *,
                          position: int = 1, now_ms: int) -> Role:
        name = _name(name, "role name")
        position = self._position(position)
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_ROLES)
            P.check_role_manageable(a.rank, position)
            P.check_grant(a.rank, perms)
            if len(a.view.roles) - 1 >= self.max_roles:
                raise TooMany("roles", self.max_roles)
            role = Role(new_random_id("r"), server_id, name, position, P.from_bits(perms))
            await tx.insert_role(role)
            await self._audit(tx, a, server_id, "role.create", role.role_id, now_ms, name=name,
                              position=position, perms=P.names(role.perms))
        return role

    async def edit_role(self, actor: str, server_id: str, role_id: str, *, name: str | None = None,
                        perms: Permission | None = None, position: int | None = None, now_ms: int) -> Role:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_ROLES)
            role = self._role(a, role_id)
            P.check_role_manageable(a.rank, role.position)
            changes: dict[str, Any] = {}
            if name is not None:
                if role.is_everyone:
                    raise InvalidRequest("the @everyone role cannot be renamed")
                role = replace(role, name=_name(name, "role name"))
                changes["name"] = role.name
            if position is not None and position != role.position:
                if role.is_everyone:
                    raise InvalidRequest("the @everyone role always sits at position 0")
                P.check_role_manageable(a.rank, self._position(position))
                role = replace(role, position=position)
                changes["position"] = position
            if perms is not None:
                perms = P.from_bits(perms)
                P.check_grant(a.rank, Permission(perms & ~role.perms))
                role = replace(role, perms=perms)
                changes["perms"] = P.names(perms)
            if changes:
                await tx.update_role(role)
                await self._audit(tx, a, server_id, "role.edit", role_id, now_ms, **changes)
        if "perms" in changes or "position" in changes:
            await self._changed(inv.server(server_id))
        return role

    async def delete_role(self, actor: str, server_id: str, role_id: str, *, now_ms: int) -> None:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_ROLES)
            role = self._role(a, role_id)
            if role.is_everyone:
                raise InvalidRequest("the @everyone role cannot be deleted")
            P.check_role_manageable(a.rank, role.position)
            await tx.delete_role(server_id, role_id)
            await self._audit(tx, a, server_id, "role.delete", role_id, now_ms, name=role.name)
        await self._changed(inv.server(server_id))

    async def _member_role(self, actor: str, server_id: str, user_id: str, role_id: str, *, add: bool,
                           now_ms: int) -> bool:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_ROLES)
            role = self._role(a, role_id)
            if role.is_everyone:
                raise InvalidRequest("every member holds @everyone; it is not assigned")
            P.check_role_manageable(a.rank, role.position)
            if add:
                P.check_grant(a.rank, role.perms)
            await self._target(tx, a, user_id)
            if add:
                changed = await tx.add_member_role(server_id, user_id, role_id)
            else:
                changed = await tx.remove_member_role(server_id, user_id, role_id)
            if changed:
                await self._audit(tx, a, server_id, "member.role_add" if add else "member.role_remove", user_id,
                                  now_ms, role=role_id)
        if changed:
            await self._changed(inv.user(user_id))
        return changed

    async def add_member_role(self, actor: str, server_id: str, user_id: str, role_id: str, *, now_ms: int) -> bool:
        return await self._member_role(actor, server_id, user_id, role_id, add=True, now_ms=now_ms)

    async def remove_member_role(self, actor: str, server_id: str, user_id: str, role_id: str, *,
                                 now_ms: int) -> bool:
        return await self._member_role(actor, server_id, user_id, role_id, add=False, now_ms=now_ms)

    # --- server channels and overwrites ------------------------------------------------------------

    async def create_server_channel(self, actor: str, server_id: str, name: str, *, private: bool = False,
                                    slow_mode_s: int = 0, now_ms: int) -> Channel:
        name = _name(name, "channel name")
        slow_mode_s = _slow_mode(slow_mode_s)
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MANAGE_CHANNELS)
            if len(await tx.server_channels(server_id)) >= self.max_server_channels:
                raise TooMany("channels", self.max_server_channels)
            channel = Channel(new_random_id("c"), "server", name, actor, now_ms, server_id, slow_mode_s)
            await tx.insert_channel(channel, None)
            if private:
                await tx.put_overwrite(ChannelOverwrite(channel.channel_id, "role", server_id, NONE,
                                                        Permission.VIEW_CHANNEL))
                if not a.rank.is_admin:
                    await tx.put_overwrite(ChannelOverwrite(channel.channel_id, "member", actor,
                                                            Permission.VIEW_CHANNEL, NONE))
            await self._audit(tx, a, server_id, "channel.create", channel.channel_id, now_ms, name=name,
                              private=bool(private), slow_mode_s=slow_mode_s)
        await self._changed(inv.server(server_id))
        return channel

    async def edit_server_channel(self, actor: str, channel_id: str, *, name: str | None = None,
                                  slow_mode_s: int | None = None, now_ms: int) -> Channel:
        async with self._tx(write=True) as tx:
            channel, a, perms = await self._channel_actor(tx, channel_id, actor)
            if Permission.MANAGE_CHANNELS not in perms:
                raise Forbidden("manage_channels")
            changes: dict[str, Any] = {}
            if name is not None:
                channel = replace(channel, name=_name(name, "channel name"))
                changes["name"] = channel.name
            if slow_mode_s is not None:
                channel = replace(channel, slow_mode_s=_slow_mode(slow_mode_s))
                changes["slow_mode_s"] = slow_mode_s
            if changes:
                await tx.update_channel(channel)
                await self._audit(tx, a, a.view.server.server_id, "channel.edit", channel_id, now_ms, **changes)
        if "slow_mode_s" in changes:
            await self._changed(inv.channel(channel_id, channel.server_id))
        return channel

    async def delete_server_channel(self, actor: str, channel_id: str, *, now_ms: int) -> None:
        async with self._tx(write=True) as tx:
            channel, a, perms = await self._channel_actor(tx, channel_id, actor)
            if Permission.MANAGE_CHANNELS not in perms:
                raise Forbidden("manage_channels")
            await tx.delete_channel(channel_id)
            await self._audit(tx, a, a.view.server.server_id, "channel.delete", channel_id, now_ms,
                              name=channel.name)
        await self._changed(inv.channel(channel_id, channel.server_id))

    async def server_channels(self, server_id: str) -> list[Channel]:
        async with self._tx(write=False) as tx:
            channels = await tx.server_channels(server_id)
        return sorted(channels, key=lambda c: (c.created_ms, c.channel_id))

    async def set_overwrite(self, actor: str, channel_id: str, target: OverwriteTarget, target_id: str, *,
                            allow: Permission, deny: Permission, now_ms: int) -> ChannelOverwrite | None:
        if target not in ("role", "member"):
            raise InvalidRequest("an overwrite's target is 'role' or 'member'")
        value = P.Overwrite(allow=Permission(allow), deny=Permission(deny))
        outside = (value.allow | value.deny) & ~P.CHANNEL_SCOPED
        if outside:
            raise InvalidRequest(f"overwrites carry only channel permissions, not {P.names(Permission(outside))}")
        async with self._tx(write=True) as tx:
            _channel, a, perms = await self._channel_actor(tx, channel_id, actor)
            if Permission.MANAGE_ROLES not in perms:
                raise Forbidden("manage_roles")
            P.check_grant(a.rank, value.allow | value.deny)
            server_id = a.view.server.server_id
            if target == "role":
                role = self._role(a, target_id)
                if not role.is_everyone:
                    P.check_role_manageable(a.rank, role.position)
            else:
                _, target_rank = await self._target(tx, a, target_id)
                if target_id != actor:
                    P.check_moderate(a.rank, target_rank)
            overwrite: ChannelOverwrite | None = None
            if not value.allow and not value.deny:
                if await tx.delete_overwrite(channel_id, target, target_id):
                    await self._audit(tx, a, server_id, "overwrite.delete", channel_id, now_ms,
                                      target=target, target_id=target_id)
            else:
                existing = (await tx.get_overwrites([channel_id])).get(channel_id, [])
                if len(existing) >= self.max_overwrites and not any(
                        (o.target, o.target_id) == (target, target_id) for o in existing):
                    raise TooMany("overwrites", self.max_overwrites)
                overwrite = ChannelOverwrite(channel_id, target, target_id, value.allow, value.deny)
                await tx.put_overwrite(overwrite)
                await self._audit(tx, a, server_id, "overwrite.set", channel_id, now_ms, target=target,
                                  target_id=target_id, allow=P.names(value.allow), deny=P.names(value.deny))
        # A member overwrite concerns that member alone; a role's, anyone in the server.
        await self._changed(inv.user(target_id) if target == "member" else inv.channel(channel_id, server_id))
        return overwrite

    async def overwrites(self, channel_id: str) -> list[ChannelOverwrite]:
        async with self._tx(write=False) as tx:
            found = (await tx.get_overwrites([channel_id])).get(channel_id, [])
        return sorted(found, key=lambda o: (o.target, o.target_id))

    # --- moderation --------------------------------------------------------------------------------

    async def kick(self, actor: str, server_id: str, user_id: str, *, now_ms: int) -> None:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.KICK_MEMBERS)
            _, target = await self._target(tx, a, user_id)
            P.check_moderate(a.rank, target)
            await tx.delete_member(server_id, user_id)
            await self._audit(tx, a, server_id, "member.kick", user_id, now_ms)
        await self._changed(inv.user(user_id))

    async def ban(self, actor: str, server_id: str, user_id: str, *, reason: str | None = None,
                  now_ms: int) -> None:
        if reason is not None and len(reason) > 512:
            raise InvalidRequest("a ban reason is at most 512 characters")
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.BAN_MEMBERS)
            if not await tx.get_users([user_id]):
                raise NotFound("user", user_id)
            member = (await tx.get_members(server_id, [user_id])).get(user_id)
            # A user who is not a member can be banned too (pre-emptively): they rank like a new member.
            target = a.view.rank(member) if member else Rank(user_id, is_owner=False, top_position=0, perms=NONE)
            P.check_moderate(a.rank, target)
            if await tx.get_ban(server_id, user_id) is not None:
                return
            if member is not None:
                await tx.delete_member(server_id, user_id)
            await tx.insert_ban(Ban(server_id, user_id, actor, reason, now_ms))
            await self._audit(tx, a, server_id, "member.ban", user_id, now_ms, reason=reason)
        await self._changed(inv.user(user_id))

    async def unban(self, actor: str, server_id: str, user_id: str, *, now_ms: int) -> bool:
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.BAN_MEMBERS)
            changed = await tx.delete_ban(server_id, user_id)
            if changed:
                await self._audit(tx, a, server_id, "member.unban", user_id, now_ms)
        if changed:
            await self._changed(inv.user(user_id))
        return changed

    async def bans(self, server_id: str) -> list[Ban]:
        async with self._tx(write=False) as tx:
            found = await tx.get_bans(server_id)
        return sorted(found, key=lambda b: (b.created_ms, b.user_id))

    async def timeout(self, actor: str, server_id: str, user_id: str, until_ms: int | None, *, now_ms: int) -> None:
        if until_ms is not None and not now_ms < until_ms <= now_ms + MAX_TIMEOUT_MS:
            raise InvalidRequest("a timeout ends in the future, at most 28 days from now")
        async with self._tx(write=True) as tx:
            a = await self._actor(tx, server_id, actor)
            P.require(a.rank, Permission.MODERATE_MEMBERS)
            _, target = await self._target(tx, a, user_id)
            P.check_moderate(a.rank, target)
            await tx.set_timeout(server_id, user_id, until_ms)
            await self._audit(tx, a, server_id, "member.timeout", user_id, now_ms, until_ms=until_ms)
        await self._changed(inv.user(user_id))

    # --- invites -----------------------------------------------------------------------------------

    async def create_invite(self, actor: str, server_id: str, *, channel_id: str | None = None,
                            max_uses: int | None = None, expires_ms: int | None = None, now_ms: int) -> Invite:
        if max_uses is not None and not 1 <= max_uses <= MAX_INVITE_USES:
            raise InvalidRequest(f"max_uses must be between 1 and {MAX_INVITE_USES} (or unlimited)")
        if expires_ms is not None and expires_ms <= now_ms:
            raise InvalidRequest("an invite must expire in the future")
        async with self._tx(write=True) as tx:
            if channel_id is not None:
                channel, a, perms = await self._channel_actor(tx, channel_id, actor)
                if channel.server_id != server_id:
                    raise NotFound("channel", channel_id)
                if Permission.CREATE_INVITES not in perms:
                    raise Forbidden("create_invites")
            else:
                a = await self._actor(tx, server_id, actor)
                P.require(a.rank, Permission.CREATE_INVITES)
            invite = Invite(secrets.token_urlsafe(8), server_id, channel_id, actor, max_uses, 0, expires_ms,
                            False, now_ms)
            await tx.insert_invite(invite)
            await self._audit(tx, a, server_id, "invite.create", invite.code, now_ms, channel=channel_id,
                              max_uses=max_uses, expires_ms=expires_ms)
        return invite

    async def get_invite(self, code: str) -> Invite | None:
        async with self._tx(write=False) as tx:
            return await tx.get_invite(code)

    async def invites(self, server_id: str) -> list[Invite]:
        async with self._tx(write=False) as tx:
            found = await tx.get_invites(server_id)
        return sorted(found, key=lambda i: (i.created_ms, i.code))

    async def _locked_invite(self, tx: DirectoryTx, code: str) -> tuple[Invite, Server]:
        # The server row is locked before the invite row, the order every other writer uses.
        first = await tx.get_invite(code)
        server = await tx.get_server(first.server_id, lock=True) if first else None
        invite = await tx.get_invite(code, lock=True) if server else None
        if invite is None or server is None:
            raise NotFound("invite", code)
        return invite, server

    async def revoke_invite(self, actor: str, code: str, *, now_ms: int) -> Invite:
        async with self._tx(write=True) as tx:
            invite, server = await self._locked_invite(tx, code)
            try:
                a = await self._actor(tx, server.server_id, actor)
            except NotFound:
                raise NotFound("invite", code) from None
            if actor != invite.creator:
                P.require(a.rank, Permission.MANAGE_SERVER)
            if invite.revoked:
                return invite
            invite = replace(invite, revoked=True)
            await tx.update_invite(invite)
            await self._audit(tx, a, server.server_id, "invite.revoke", code, now_ms)
        return invite

    async def use_invite(self, user_id: str, code: str, *, now_ms: int) -> Server:
        async with self._tx(write=True) as tx:
            invite, server = await self._locked_invite(tx, code)
            if invite.revoked:
                raise InviteRevoked(f"invite {code!r} was revoked")
            if invite.expires_ms is not None and now_ms >= invite.expires_ms:
                raise InviteExpired(f"invite {code!r} has expired")
            if not await self._join(tx, server, user_id):
                return server
            if invite.max_uses is not None and invite.uses >= invite.max_uses:
                raise InviteUsedUp(f"invite {code!r} has been used {invite.uses} times, its maximum")
            await self._room(tx, server)
            await self._user_room(tx, [user_id], servers=True)
            await tx.insert_member(server.server_id, user_id, now_ms)
            await tx.update_invite(replace(invite, uses=invite.uses + 1))
            await self._audit(tx, user_id, server.server_id, "member.join", user_id, now_ms, invite=code)
        await self._changed(inv.user(user_id))
        return server

    # --- audit log ---------------------------------------------------------------------------------

    async def audit_log(self, server_id: str, *, before: int | None = None, limit: int = 50) -> AuditPage:
        limit = _limit(limit)
        async with self._tx(write=False) as tx:
            found = await tx.audit_page(server_id, before, limit + 1)
        page = found[:limit]
        return AuditPage(page, page[-1].entry_id if len(found) > limit else None)
