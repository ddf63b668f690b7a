"""In-process storage: unit tests and throwaway dev runs. Same contract as the real backends."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from mqchat.config import DEFAULT_MAX_CHANNEL_MEMBERS, DEFAULT_MAX_CHANNELS_PER_USER, DEFAULT_MAX_SERVERS_PER_USER
from mqchat.errors import Conflict
from mqchat.storage.base import (
    EMPTY_POSITION,
    AuditEntry,
    Ban,
    Channel,
    ChannelOverwrite,
    CmidKey,
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
from mqchat.storage.directory import DirectoryRules, DirectoryTx


class MemoryMessageStore:
    def __init__(self) -> None:
        self._positions: dict[str, Position] = {}
        self._messages: dict[str, list[StoredMessage]] = defaultdict(list)  # current epoch, by seq
        self._by_cmid: dict[CmidKey, StoredMessage] = {}

    async def positions(self, channels: Collection[str]) -> dict[str, Position]:
        return {c: self._positions.get(c, EMPTY_POSITION) for c in channels}

    async def find_cmids(self, keys: Collection[CmidKey]) -> dict[CmidKey, StoredMessage]:
        return {k: self._by_cmid[k] for k in keys if k in self._by_cmid}

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        positions = dict(self._positions)
        seen: set[CmidKey] = set()
        for m in messages:
            pos = positions.get(m.channel, EMPTY_POSITION)
            if (m.epoch, m.seq) != (pos.epoch, pos.last_seq + 1) and not (m.epoch > pos.epoch and m.seq == 1):
                raise Conflict(f"channel {m.channel}: seq {m.epoch}/{m.seq} does not follow {pos}")
            if m.cmid_key in self._by_cmid or m.cmid_key in seen:
                raise Conflict(f"duplicate cmid {m.cmid_key}")
            seen.add(m.cmid_key)
            positions[m.channel] = Position(m.epoch, m.seq)
        for m in messages:
            if self._positions.get(m.channel, EMPTY_POSITION).epoch != m.epoch:
                self._messages[m.channel] = []
            self._messages[m.channel].append(m)
            self._by_cmid[m.cmid_key] = m
            self._positions[m.channel] = Position(m.epoch, m.seq, m.count_seq)
            if m.kind == "delete" and m.target is not None:
                self._erase(m.channel, m.target)

    def _erase(self, channel: str, target: int) -> None:
        msgs = self._messages[channel]
        for i, m in enumerate(msgs):
            if m.seq == target or (m.kind == "edit" and m.target == target):
                msgs[i] = replace(m, body="")
                self._by_cmid[m.cmid_key] = msgs[i]

    async def related(self, wanted: Mapping[str, Collection[int]]) -> dict[str, list[StoredMessage]]:
        found: dict[str, list[StoredMessage]] = {}
        for channel, seqs in wanted.items():
            want = set(seqs)
            found[channel] = [m for m in self._messages.get(channel, [])
                              if m.seq in want or m.target in want or m.thread in want]
        return found

    async def thread(self, channel: str, root: int, *, after: int = 0, limit: int = 50,
                     ) -> tuple[list[StoredMessage], bool]:
        chosen = [m for m in self._messages.get(channel, []) if m.thread == root and m.seq > after]
        return chosen[:limit], len(chosen) > limit

    async def pin_events(self, channel: str) -> list[StoredMessage]:
        return [m for m in self._messages.get(channel, []) if m.kind in ("pin", "unpin")]

    async def counts_at(self, points: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        found: dict[tuple[str, int], int] = {}
        for channel, seq in points:
            msgs = self._messages.get(channel, [])
            found[(channel, seq)] = msgs[seq - 1].count_seq if 0 < seq <= len(msgs) else 0
        return found

    async def history(
        self, channel: str, *, before: int | None = None, after: int | None = None, limit: int = 50,
    ) -> HistoryPage:
        pos = self._positions.get(channel, EMPTY_POSITION)
        msgs = self._messages.get(channel, [])
        if after is not None:
            chosen = [m for m in msgs if m.seq > after and (before is None or m.seq < before)]
            page, more = chosen[:limit], len(chosen) > limit
        else:
            chosen = [m for m in msgs if before is None or m.seq < before]
            page, more = chosen[-limit:] if limit else [], len(chosen) > limit
        return HistoryPage(page, pos.epoch, pos.last_seq, more)

    async def close(self) -> None:
        return None


@dataclass
class _State:
    users: dict[str, User] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    direct: dict[str, str] = field(default_factory=dict)
    channel_members: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    channels_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    servers: dict[str, Server] = field(default_factory=dict)
    members: dict[str, dict[str, tuple[int, int | None]]] = field(default_factory=lambda: defaultdict(dict))
    """server → user → (joined_ms, timeout_until_ms)"""
    member_roles: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    roles: dict[str, dict[str, Role]] = field(default_factory=lambda: defaultdict(dict))
    overwrites: dict[str, dict[tuple[str, str], ChannelOverwrite]] = field(default_factory=lambda: defaultdict(dict))
    bans: dict[str, dict[str, Ban]] = field(default_factory=lambda: defaultdict(dict))
    invites: dict[str, Invite] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)


class _MemoryTx:
    """:class:`DirectoryTx` over dicts. Writers are serialised by the directory's lock, and the rules
    raise every refusal before their first write, so no undo log is needed."""

    def __init__(self, state: _State) -> None:
        self.s = state

    # users
    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]:
        return {u: self.s.users[u] for u in user_ids if u in self.s.users}

    async def user_by_name(self, username: str) -> User | None:
        uid = self.s.by_name.get(username.casefold())
        return self.s.users[uid] if uid else None

    async def insert_user(self, user: User) -> None:
        if user.username.casefold() in self.s.by_name:
            raise Conflict(f"username {user.username!r} is taken")
        self.s.users[user.user_id] = user
        self.s.by_name[user.username.casefold()] = user.user_id

    async def update_user(self, user: User) -> None:
        self.s.users[user.user_id] = user

    # channels
    async def get_channels(self, channel_ids: Collection[str]) -> dict[str, Channel]:
        return {c: self.s.channels[c] for c in channel_ids if c in self.s.channels}

    async def channel_ids_after(self, after: str, limit: int) -> list[str]:
        return sorted(c for c in self.s.channels if c > after)[:limit]

    async def direct_channel(self, key: str) -> Channel | None:
        cid = self.s.direct.get(key)
        return self.s.channels[cid] if cid else None

    async def insert_channel(self, channel: Channel, direct_key: str | None) -> None:
        self.s.channels[channel.channel_id] = channel
        if direct_key:
            self.s.direct[direct_key] = channel.channel_id

    async def update_channel(self, channel: Channel) -> None:
        self.s.channels[channel.channel_id] = channel

    async def delete_channel(self, channel_id: str) -> None:
        self.s.channels.pop(channel_id, None)
        self.s.overwrites.pop(channel_id, None)
        for code in [c for c, i in self.s.invites.items() if i.channel_id == channel_id]:
            del self.s.invites[code]

    async def add_channel_member(self, channel_id: str, user_id: str, now_ms: int) -> bool:
        if user_id in self.s.channel_members[channel_id]:
            return False
        self.s.channel_members[channel_id][user_id] = now_ms
        self.s.channels_of[user_id].add(channel_id)
        return True

    async def remove_channel_member(self, channel_id: str, user_id: str) -> bool:
        if self.s.channel_members.get(channel_id, {}).pop(user_id, None) is None:
            return False
        self.s.channels_of[user_id].discard(channel_id)
        return True

    async def channel_members(self, channel_id: str) -> list[str]:
        return sorted(self.s.channel_members.get(channel_id, ()))

    async def channel_members_page(self, channel_id: str, after: str | None, limit: int) -> list[str]:
        return sorted(u for u in self.s.channel_members.get(channel_id, ()) if after is None or u > after)[:limit]

    async def count_channel_members(self, channel_id: str, at_most: int) -> int:
        return min(len(self.s.channel_members.get(channel_id, ())), at_most)

    async def lock_channel(self, channel_id: str) -> None:
        return None  # writers hold the directory's lock

    async def lock_users(self, user_ids: Collection[str]) -> None:
        return None

    async def count_user_channels(self, user_id: str, at_most: int) -> int:
        return min(len(self.s.channels_of.get(user_id, ())), at_most)

    async def count_user_servers(self, user_id: str, at_most: int) -> int:
        return min(sum(user_id in members for members in self.s.members.values()), at_most)

    async def explicit_channel_ids(self, user_id: str) -> set[str]:
        return set(self.s.channels_of.get(user_id, ()))

    async def channel_memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(c, u) for c, u in pairs if u in self.s.channel_members.get(c, ())}

    # servers and members
    async def get_server(self, server_id: str, *, lock: bool = False) -> Server | None:
        return self.s.servers.get(server_id)

    async def get_servers(self, server_ids: Collection[str]) -> dict[str, Server]:
        return {s: self.s.servers[s] for s in server_ids if s in self.s.servers}

    async def insert_server(self, server: Server) -> None:
        self.s.servers[server.server_id] = server

    async def update_server(self, server: Server) -> None:
        self.s.servers[server.server_id] = server

    async def delete_server(self, server_id: str) -> None:
        for channel in await self.server_channels(server_id):
            await self.delete_channel(channel.channel_id)
        for user_id in list(self.s.members.get(server_id, ())):
            await self.delete_member(server_id, user_id)
        self.s.members.pop(server_id, None)
        self.s.roles.pop(server_id, None)
        self.s.bans.pop(server_id, None)
        self.s.servers.pop(server_id, None)
        for code in [c for c, i in self.s.invites.items() if i.server_id == server_id]:
            del self.s.invites[code]
        self.s.audit = [e for e in self.s.audit if e.server_id != server_id]

    async def discoverable_servers(self, after: str | None, limit: int) -> list[Server]:
        found = sorted((s for s in self.s.servers.values()
                        if s.discoverable and (after is None or s.server_id > after)), key=lambda s: s.server_id)
        return found[:limit]

    async def server_ids_of(self, user_id: str) -> list[str]:
        return sorted(s for s, members in self.s.members.items() if user_id in members)

    def _member(self, server_id: str, user_id: str) -> Member:
        joined, timeout = self.s.members[server_id][user_id]
        user = self.s.users.get(user_id)
        return Member(server_id, user_id, user.username if user else user_id, user.display_name if user else None,
                      joined, tuple(sorted(self.s.member_roles.get((server_id, user_id), ()))), timeout)

    async def get_members(self, server_id: str, user_ids: Collection[str]) -> dict[str, Member]:
        here = self.s.members.get(server_id, {})
        return {u: self._member(server_id, u) for u in user_ids if u in here}

    async def members_page(self, server_id: str, after: str | None, limit: int) -> list[Member]:
        ids = sorted(u for u in self.s.members.get(server_id, ()) if after is None or u > after)
        return [self._member(server_id, u) for u in ids[:limit]]

    async def all_members(self, server_id: str) -> list[Member]:
        return [self._member(server_id, u) for u in sorted(self.s.members.get(server_id, ()))]

    async def count_members(self, server_id: str, at_most: int) -> int:
        return min(len(self.s.members.get(server_id, ())), at_most)

    async def insert_member(self, server_id: str, user_id: str, now_ms: int) -> bool:
        if user_id in self.s.members[server_id]:
            return False
        self.s.members[server_id][user_id] = (now_ms, None)
        return True

    async def delete_member(self, server_id: str, user_id: str) -> None:
        self.s.members.get(server_id, {}).pop(user_id, None)
        self.s.member_roles.pop((server_id, user_id), None)
        for channel in await self.server_channels(server_id):
            self.s.overwrites.get(channel.channel_id, {}).pop(("member", user_id), None)

    async def set_timeout(self, server_id: str, user_id: str, until_ms: int | None) -> None:
        joined, _ = self.s.members[server_id][user_id]
        self.s.members[server_id][user_id] = (joined, until_ms)

    # roles
    async def get_roles(self, server_id: str) -> list[Role]:
        return list(self.s.roles.get(server_id, {}).values())

    async def insert_role(self, role: Role) -> None:
        self.s.roles[role.server_id][role.role_id] = role

    async def update_role(self, role: Role) -> None:
        self.s.roles[role.server_id][role.role_id] = role

    async def delete_role(self, server_id: str, role_id: str) -> None:
        self.s.roles[server_id].pop(role_id, None)
        for (sid, _), held in self.s.member_roles.items():
            if sid == server_id:
                held.discard(role_id)
        for channel in await self.server_channels(server_id):
            self.s.overwrites.get(channel.channel_id, {}).pop(("role", role_id), None)

    async def add_member_role(self, server_id: str, user_id: str, role_id: str) -> bool:
        held = self.s.member_roles[(server_id, user_id)]
        if role_id in held:
            return False
        held.add(role_id)
        return True

    async def remove_member_role(self, server_id: str, user_id: str, role_id: str) -> bool:
        held = self.s.member_roles.get((server_id, user_id), set())
        if role_id not in held:
            return False
        held.discard(role_id)
        return True

    # server channels and overwrites
    async def server_channels(self, server_id: str) -> list[Channel]:
        return [c for c in self.s.channels.values() if c.server_id == server_id]

    async def get_overwrites(self, channel_ids: Collection[str]) -> dict[str, list[ChannelOverwrite]]:
        return {c: list(self.s.overwrites[c].values()) for c in channel_ids if self.s.overwrites.get(c)}

    async def put_overwrite(self, overwrite: ChannelOverwrite) -> None:
        self.s.overwrites[overwrite.channel_id][(overwrite.target, overwrite.target_id)] = overwrite

    async def delete_overwrite(self, channel_id: str, target: str, target_id: str) -> bool:
        return self.s.overwrites.get(channel_id, {}).pop((target, target_id), None) is not None

    # bans, invites, audit log
    async def get_ban(self, server_id: str, user_id: str) -> Ban | None:
        return self.s.bans.get(server_id, {}).get(user_id)

    async def insert_ban(self, ban: Ban) -> None:
        self.s.bans[ban.server_id][ban.user_id] = ban

    async def delete_ban(self, server_id: str, user_id: str) -> bool:
        return self.s.bans.get(server_id, {}).pop(user_id, None) is not None

    async def get_bans(self, server_id: str) -> list[Ban]:
        return list(self.s.bans.get(server_id, {}).values())

    async def get_invite(self, code: str, *, lock: bool = False) -> Invite | None:
        return self.s.invites.get(code)

    async def insert_invite(self, invite: Invite) -> None:
        self.s.invites[invite.code] = invite

    async def update_invite(self, invite: Invite) -> None:
        self.s.invites[invite.code] = invite

    async def get_invites(self, server_id: str) -> list[Invite]:
        return [i for i in self.s.invites.values() if i.server_id == server_id]

    async def insert_audit(self, server_id: str, actor: str, action: str, target: str | None,
                           details: Mapping[str, Any], now_ms: int) -> None:
        entry_id = self.s.audit[-1].entry_id + 1 if self.s.audit else 1
        self.s.audit.append(AuditEntry(entry_id, server_id, actor, action, target, dict(details), now_ms))

    async def audit_page(self, server_id: str, before: int | None, limit: int) -> list[AuditEntry]:
        found = [e for e in reversed(self.s.audit)
                 if e.server_id == server_id and (before is None or e.entry_id < before)]
        return found[:limit]


class MemoryDirectory(DirectoryRules):
    """:class:`ServerDirectory` in process memory (unit tests, throwaway runs)."""

    def __init__(self, *, max_channel_members: int = DEFAULT_MAX_CHANNEL_MEMBERS,
                 max_channels_per_user: int = DEFAULT_MAX_CHANNELS_PER_USER,
                 max_servers_per_user: int = DEFAULT_MAX_SERVERS_PER_USER) -> None:
        self.max_channel_members = max_channel_members
        self.max_channels_per_user = max_channels_per_user
        self.max_servers_per_user = max_servers_per_user
        self._state = _State()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[DirectoryTx]:
        if not write:
            yield _MemoryTx(self._state)
            return
        async with self._lock:
            yield _MemoryTx(self._state)


_store_check: MessageStore = MemoryMessageStore()
_directory_check: ServerDirectory = MemoryDirectory()
