"""The directory's primitives in SQL, shared by SQLite and PostgreSQL.

Statements are written once with ``?`` placeholders; a :class:`SqlConn` runs them on one backend
(the PostgreSQL connection rewrites ``?`` to ``%s``). The few dialect differences are attributes of
the connection: row locks (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
serialises writers) and case-insensitive usernames (SQLite's ``COLLATE NOCASE`` column; PostgreSQL
compares a stored casefolded key).

Both schemas (``sqlite.DIRECTORY_SCHEMA``, ``pg_migrations/*.sql``) have the same tables:
``users``, ``channels`` + ``members`` (direct and group channels, explicit members),
``servers``, ``server_members``, ``roles``, ``member_roles``, ``server_channels``, ``overwrites``,
``bans``, ``invites`` and ``audit_log``. Foreign keys cascade from a server to everything in it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, Protocol

from mqchat.permissions import from_bits
from mqchat.storage.base import (
    AuditEntry,
    Ban,
    Channel,
    ChannelOverwrite,
    Invite,
    Member,
    Role,
    Server,
    User,
)

Row = tuple[Any, ...]
_CHUNK = 400  # stay below SQLite's bound-parameter limit


class SqlConn(Protocol):
    """One connection inside one transaction."""

    dialect: Literal["sqlite", "postgres"]

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: Collection[Any]) -> list[list[Any]]:
    listed = list(dict.fromkeys(items))
    return [listed[i : i + _CHUNK] for i in range(0, len(listed), _CHUNK)]


_USER = "user_id, username, password_hash, created_ms, display_name, avatar_url"
_CHANNEL = "channel_id, kind, name, created_by, created_ms"
_SCHANNEL = "channel_id, 'server', name, created_by, created_ms, server_id, slow_mode_s"
_SERVER = "server_id, name, owner_id, discoverable, created_ms"
_MEMBER = ("m.server_id, m.user_id, COALESCE(u.username, m.user_id), u.display_name, m.joined_ms, "
           "m.timeout_until_ms")
_INVITE = "code, server_id, channel_id, creator, max_uses, uses, expires_ms, revoked, created_ms"


def _user(r: Row) -> User:
    return User(r[0], r[1], r[2], int(r[3]), r[4], r[5])


def _channel(r: Row) -> Channel:
    if len(r) == 5:
        return Channel(r[0], r[1], r[2], r[3], int(r[4]))
    return Channel(r[0], "server", r[2], r[3], int(r[4]), r[5], int(r[6]))


def _server(r: Row) -> Server:
    return Server(r[0], r[1], r[2], bool(r[3]), int(r[4]))


def _invite(r: Row) -> Invite:
    return Invite(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], bool(r[7]), int(r[8]))


class SqlTx:
    """:class:`~mqchat.storage.directory.DirectoryTx` over a :class:`SqlConn`."""

    def __init__(self, conn: SqlConn) -> None:
        self.c = conn
        self._lock = " FOR UPDATE" if conn.dialect == "postgres" else ""

    async def _in(self, sql: str, ids: Collection[Any], *, before: Sequence[Any] = ()) -> list[Row]:
        """``sql`` with ``{in}`` replaced by a placeholder list, run once per chunk of ``ids``."""
        rows: list[Row] = []
        for chunk in _chunks(ids):
            rows += await self.c.fetchall(sql.format(marks=_marks(len(chunk))), [*before, *chunk])
        return rows

    # --- users ---

    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]:
        rows = await self._in(f"SELECT {_USER} FROM users WHERE user_id IN ({{marks}})", user_ids)
        return {r[0]: _user(r) for r in rows}

    async def user_by_name(self, username: str) -> User | None:
        if self.c.dialect == "postgres":
            rows = await self.c.fetchall(f"SELECT {_USER} FROM users WHERE username_key=?", [username.casefold()])
        else:
            rows = await self.c.fetchall(f"SELECT {_USER} FROM users WHERE username=?", [username])
        return _user(rows[0]) if rows else None

    async def insert_user(self, user: User) -> None:
        values = [user.user_id, user.username, user.password_hash, user.created_ms, user.display_name,
                  user.avatar_url]
        if self.c.dialect == "postgres":
            await self.c.execute(f"INSERT INTO users ({_USER}, username_key) VALUES (?,?,?,?,?,?,?)",
                                 [*values, user.username.casefold()])
        else:
            await self.c.execute(f"INSERT INTO users ({_USER}) VALUES (?,?,?,?,?,?)", values)

    async def update_user(self, user: User) -> None:
        await self.c.execute("UPDATE users SET display_name=?, avatar_url=? WHERE user_id=?",
                             [user.display_name, user.avatar_url, user.user_id])

    # --- channels ---

    async def get_channels(self, channel_ids: Collection[str]) -> dict[str, Channel]:
        rows = await self._in(f"SELECT {_CHANNEL} FROM channels WHERE channel_id IN ({{marks}})", channel_ids)
        rows += await self._in(f"SELECT {_SCHANNEL} FROM server_channels WHERE channel_id IN ({{marks}})",
                               channel_ids)
        return {r[0]: _channel(r) for r in rows}

    async def channel_ids_after(self, after: str, limit: int) -> list[str]:
        rows = await self.c.fetchall(
            "SELECT channel_id FROM (SELECT channel_id FROM channels WHERE channel_id > ? UNION ALL "
            "SELECT channel_id FROM server_channels WHERE channel_id > ?) AS ids ORDER BY channel_id LIMIT ?",
            [after, after, limit])
        return [r[0] for r in rows]

    async def direct_channel(self, key: str) -> Channel | None:
        rows = await self.c.fetchall(f"SELECT {_CHANNEL} FROM channels WHERE direct_key=?", [key])
        return _channel(rows[0]) if rows else None

    async def insert_channel(self, channel: Channel, direct_key: str | None) -> None:
        if channel.server_id is None:
            await self.c.execute(
                f"INSERT INTO channels ({_CHANNEL}, direct_key) VALUES (?,?,?,?,?,?)",
                [channel.channel_id, channel.kind, channel.name, channel.created_by, channel.created_ms, direct_key])
        else:
            await self.c.execute(
                "INSERT INTO server_channels (channel_id, server_id, name, created_by, created_ms, slow_mode_s) "
                "VALUES (?,?,?,?,?,?)",
                [channel.channel_id, channel.server_id, channel.name, channel.created_by, channel.created_ms,
                 channel.slow_mode_s])

    async def update_channel(self, channel: Channel) -> None:
        await self.c.execute("UPDATE server_channels SET name=?, slow_mode_s=? WHERE channel_id=?",
                             [channel.name, channel.slow_mode_s, channel.channel_id])

    async def delete_channel(self, channel_id: str) -> None:
        await self.c.execute("DELETE FROM server_channels WHERE channel_id=?", [channel_id])  # cascades

    async def add_channel_member(self, channel_id: str, user_id: str, now_ms: int) -> bool:
        return await self.c.execute(
            "INSERT INTO members (channel_id, user_id, joined_ms) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            [channel_id, user_id, now_ms]) == 1

    async def remove_channel_member(self, channel_id: str, user_id: str) -> bool:
        return await self.c.execute("DELETE FROM members WHERE channel_id=? AND user_id=?", [channel_id, user_id]) == 1

    async def channel_members(self, channel_id: str) -> list[str]:
        rows = await self.c.fetchall("SELECT user_id FROM members WHERE channel_id=? ORDER BY user_id", [channel_id])
        return [r[0] for r in rows]

    async def channel_members_page(self, channel_id: str, after: str | None, limit: int) -> list[str]:
        rows = await self.c.fetchall(
            "SELECT user_id FROM members WHERE channel_id=? AND user_id>? ORDER BY user_id LIMIT ?",
            [channel_id, after or "", limit])
        return [r[0] for r in rows]

    async def count_channel_members(self, channel_id: str, at_most: int) -> int:
        rows = await self.c.fetchall(
            "SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE channel_id=? LIMIT ?) AS m", [channel_id, at_most])
        return int(rows[0][0])

    async def count_user_channels(self, user_id: str, at_most: int) -> int:
        rows = await self.c.fetchall(
            "SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE user_id=? LIMIT ?) AS m", [user_id, at_most])
        return int(rows[0][0])

    async def count_user_servers(self, user_id: str, at_most: int) -> int:
        rows = await self.c.fetchall(
            "SELECT COUNT(*) FROM (SELECT 1 FROM server_members WHERE user_id=? LIMIT ?) AS m", [user_id, at_most])
        return int(rows[0][0])

    async def lock_users(self, user_ids: Collection[str]) -> None:
        if self._lock:  # NO KEY UPDATE: rows referencing a user are not held up
            await self._in("SELECT user_id FROM users WHERE user_id IN ({marks}) ORDER BY user_id FOR NO KEY UPDATE",
                           sorted(set(user_ids)))

    async def lock_channel(self, channel_id: str) -> None:
        if self._lock:
            await self.c.fetchall(f"SELECT channel_id FROM channels WHERE channel_id=?{self._lock}", [channel_id])

    async def explicit_channel_ids(self, user_id: str) -> set[str]:
        return {r[0] for r in await self.c.fetchall("SELECT channel_id FROM members WHERE user_id=?", [user_id])}

    async def channel_memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = set(pairs)
        users = {u for _, u in wanted}
        rows = await self._in("SELECT channel_id, user_id FROM members WHERE user_id IN ({marks})", users)
        return {(r[0], r[1]) for r in rows} & wanted

    # --- servers and members ---

    async def get_server(self, server_id: str, *, lock: bool = False) -> Server | None:
        rows = await self.c.fetchall(f"SELECT {_SERVER} FROM servers WHERE server_id=?{self._lock if lock else ''}",
                                     [server_id])
        return _server(rows[0]) if rows else None

    async def get_servers(self, server_ids: Collection[str]) -> dict[str, Server]:
        rows = await self._in(f"SELECT {_SERVER} FROM servers WHERE server_id IN ({{marks}})", server_ids)
        return {r[0]: _server(r) for r in rows}

    async def insert_server(self, server: Server) -> None:
        await self.c.execute(f"INSERT INTO servers ({_SERVER}) VALUES (?,?,?,?,?)",
                             [server.server_id, server.name, server.owner_id, int(server.discoverable),
                              server.created_ms])

    async def update_server(self, server: Server) -> None:
        await self.c.execute("UPDATE servers SET name=?, owner_id=?, discoverable=? WHERE server_id=?",
                             [server.name, server.owner_id, int(server.discoverable), server.server_id])

    async def delete_server(self, server_id: str) -> None:
        await self.c.execute("DELETE FROM servers WHERE server_id=?", [server_id])  # cascades

    async def discoverable_servers(self, after: str | None, limit: int) -> list[Server]:
        rows = await self.c.fetchall(
            f"SELECT {_SERVER} FROM servers WHERE discoverable=1 AND server_id>? ORDER BY server_id LIMIT ?",
            [after or "", limit])
        return [_server(r) for r in rows]

    async def server_ids_of(self, user_id: str) -> list[str]:
        rows = await self.c.fetchall("SELECT server_id FROM server_members WHERE user_id=? ORDER BY server_id",
                                     [user_id])
        return [r[0] for r in rows]

    async def _with_roles(self, server_id: str, rows: list[Row]) -> list[Member]:
        roles: dict[str, list[str]] = {r[1]: [] for r in rows}
        for user_id, role_id in await self._in(
            "SELECT user_id, role_id FROM member_roles WHERE server_id=? AND user_id IN ({marks})",
            list(roles), before=[server_id],
        ):
            roles[user_id].append(role_id)
        return [Member(r[0], r[1], r[2], r[3], int(r[4]), tuple(sorted(roles[r[1]])), r[5]) for r in rows]

    async def get_members(self, server_id: str, user_ids: Collection[str]) -> dict[str, Member]:
        rows = await self._in(
            f"SELECT {_MEMBER} FROM server_members m LEFT JOIN users u ON u.user_id=m.user_id "
            "WHERE m.server_id=? AND m.user_id IN ({marks})", user_ids, before=[server_id])
        return {m.user_id: m for m in await self._with_roles(server_id, rows)}

    async def members_page(self, server_id: str, after: str | None, limit: int) -> list[Member]:
        rows = await self.c.fetchall(
            f"SELECT {_MEMBER} FROM server_members m LEFT JOIN users u ON u.user_id=m.user_id "
            "WHERE m.server_id=? AND m.user_id>? ORDER BY m.user_id LIMIT ?", [server_id, after or "", limit])
        return await self._with_roles(server_id, rows)

    async def all_members(self, server_id: str) -> list[Member]:
        rows = await self.c.fetchall(
            f"SELECT {_MEMBER} FROM server_members m LEFT JOIN users u ON u.user_id=m.user_id "
            "WHERE m.server_id=? ORDER BY m.user_id", [server_id])
        roles: dict[str, list[str]] = {r[1]: [] for r in rows}
        for user_id, role_id in await self.c.fetchall("SELECT user_id, role_id FROM member_roles WHERE server_id=?",
                                                      [server_id]):
            roles.setdefault(user_id, []).append(role_id)
        return [Member(r[0], r[1], r[2], r[3], int(r[4]), tuple(sorted(roles[r[1]])), r[5]) for r in rows]

    async def count_members(self, server_id: str, at_most: int) -> int:
        rows = await self.c.fetchall(
            "SELECT COUNT(*) FROM (SELECT 1 FROM server_members WHERE server_id=? LIMIT ?) AS m", [server_id, at_most])
        return int(rows[0][0])

    async def insert_member(self, server_id: str, user_id: str, now_ms: int) -> bool:
        return await self.c.execute(
            "INSERT INTO server_members (server_id, user_id, joined_ms) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            [server_id, user_id, now_ms]) == 1

    async def delete_member(self, server_id: str, user_id: str) -> None:
        await self.c.execute(
            "DELETE FROM overwrites WHERE target='member' AND target_id=? AND channel_id IN "
            "(SELECT channel_id FROM server_channels WHERE server_id=?)", [user_id, server_id])
        await self.c.execute("DELETE FROM server_members WHERE server_id=? AND user_id=?", [server_id, user_id])

    async def set_timeout(self, server_id: str, user_id: str, until_ms: int | None) -> None:
        await self.c.execute("UPDATE server_members SET timeout_until_ms=? WHERE server_id=? AND user_id=?",
                             [until_ms, server_id, user_id])

    # --- roles ---

    async def get_roles(self, server_id: str) -> list[Role]:
        rows = await self.c.fetchall("SELECT role_id, server_id, name, position, perms FROM roles WHERE server_id=?",
                                     [server_id])
        return [Role(r[0], r[1], r[2], int(r[3]), from_bits(int(r[4]))) for r in rows]

    async def insert_role(self, role: Role) -> None:
        await self.c.execute("INSERT INTO roles (role_id, server_id, name, position, perms) VALUES (?,?,?,?,?)",
                             [role.role_id, role.server_id, role.name, role.position, int(role.perms)])

    async def update_role(self, role: Role) -> None:
        await self.c.execute("UPDATE roles SET name=?, position=?, perms=? WHERE role_id=?",
                             [role.name, role.position, int(role.perms), role.role_id])

    async def delete_role(self, server_id: str, role_id: str) -> None:
        await self.c.execute(
            "DELETE FROM overwrites WHERE target='role' AND target_id=? AND channel_id IN "
            "(SELECT channel_id FROM server_channels WHERE server_id=?)", [role_id, server_id])
        await self.c.execute("DELETE FROM roles WHERE role_id=? AND server_id=?", [role_id, server_id])

    async def add_member_role(self, server_id: str, user_id: str, role_id: str) -> bool:
        return await self.c.execute(
            "INSERT INTO member_roles (server_id, user_id, role_id) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            [server_id, user_id, role_id]) == 1

    async def remove_member_role(self, server_id: str, user_id: str, role_id: str) -> bool:
        return await self.c.execute("DELETE FROM member_roles WHERE server_id=? AND user_id=? AND role_id=?",
                                    [server_id, user_id, role_id]) == 1

    # --- server channels and overwrites ---

    async def server_channels(self, server_id: str) -> list[Channel]:
        rows = await self.c.fetchall(f"SELECT {_SCHANNEL} FROM server_channels WHERE server_id=?", [server_id])
        return [_channel(r) for r in rows]

    async def get_overwrites(self, channel_ids: Collection[str]) -> dict[str, list[ChannelOverwrite]]:
        found: dict[str, list[ChannelOverwrite]] = {}
        for r in await self._in("SELECT channel_id, target, target_id, allow, deny FROM overwrites "
                                "WHERE channel_id IN ({marks})", channel_ids):
            found.setdefault(r[0], []).append(
                ChannelOverwrite(r[0], r[1], r[2], from_bits(int(r[3])), from_bits(int(r[4]))))
        return found

    async def put_overwrite(self, overwrite: ChannelOverwrite) -> None:
        await self.c.execute(
            "INSERT INTO overwrites (channel_id, target, target_id, allow, deny) VALUES (?,?,?,?,?) "
            "ON CONFLICT (channel_id, target, target_id) DO UPDATE SET allow=excluded.allow, deny=excluded.deny",
            [overwrite.channel_id, overwrite.target, overwrite.target_id, int(overwrite.allow), int(overwrite.deny)])

    async def delete_overwrite(self, channel_id: str, target: str, target_id: str) -> bool:
        return await self.c.execute("DELETE FROM overwrites WHERE channel_id=? AND target=? AND target_id=?",
                                    [channel_id, target, target_id]) == 1

    # --- bans, invites, audit log ---

    async def get_ban(self, server_id: str, user_id: str) -> Ban | None:
        rows = await self.c.fetchall("SELECT server_id, user_id, actor, reason, created_ms FROM bans "
                                     "WHERE server_id=? AND user_id=?", [server_id, user_id])
        return Ban(*rows[0]) if rows else None

    async def insert_ban(self, ban: Ban) -> None:
        await self.c.execute("INSERT INTO bans (server_id, user_id, actor, reason, created_ms) VALUES (?,?,?,?,?)",
                             [ban.server_id, ban.user_id, ban.actor, ban.reason, ban.created_ms])

    async def delete_ban(self, server_id: str, user_id: str) -> bool:
        return await self.c.execute("DELETE FROM bans WHERE server_id=? AND user_id=?", [server_id, user_id]) == 1

    async def get_bans(self, server_id: str) -> list[Ban]:
        rows = await self.c.fetchall("SELECT server_id, user_id, actor, reason, created_ms FROM bans "
                                     "WHERE server_id=?", [server_id])
        return [Ban(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    async def get_invite(self, code: str, *, lock: bool = False) -> Invite | None:
        rows = await self.c.fetchall(f"SELECT {_INVITE} FROM invites WHERE code=?{self._lock if lock else ''}",
                                     [code])
        return _invite(rows[0]) if rows else None

    async def insert_invite(self, invite: Invite) -> None:
        await self.c.execute(f"INSERT INTO invites ({_INVITE}) VALUES (?,?,?,?,?,?,?,?,?)",
                             [invite.code, invite.server_id, invite.channel_id, invite.creator, invite.max_uses,
                              invite.uses, invite.expires_ms, int(invite.revoked), invite.created_ms])

    async def update_invite(self, invite: Invite) -> None:
        await self.c.execute("UPDATE invites SET uses=?, revoked=? WHERE code=?",
                             [invite.uses, int(invite.revoked), invite.code])

    async def get_invites(self, server_id: str) -> list[Invite]:
        return [_invite(r) for r in await self.c.fetchall(f"SELECT {_INVITE} FROM invites WHERE server_id=?",
                                                          [server_id])]

    async def insert_audit(self, server_id: str, actor: str, action: str, target: str | None,
                           details: Mapping[str, Any], now_ms: int) -> None:
        await self.c.execute(
            "INSERT INTO audit_log (server_id, actor, action, target, details, created_ms) VALUES (?,?,?,?,?,?)",
            [server_id, actor, action, target, json.dumps(dict(details), sort_keys=True), now_ms])

    async def audit_page(self, server_id: str, before: int | None, limit: int) -> list[AuditEntry]:
        rows = await self.c.fetchall(
            "SELECT entry_id, server_id, actor, action, target, details, created_ms FROM audit_log "
            "WHERE server_id=? AND entry_id<? ORDER BY entry_id DESC LIMIT ?",
            [server_id, before if before is not None else 2**62, limit])
        return [AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), int(r[6])) for r in rows]
