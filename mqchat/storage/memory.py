"""In-process storage: unit tests and throwaway dev runs. Same contract as the real backends."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from mqchat.errors import Conflict
from mqchat.ids import new_random_id
from mqchat.storage.base import (
    EMPTY_POSITION,
    Channel,
    ChannelKind,
    CmidKey,
    Directory,
    HistoryPage,
    MessageStore,
    Position,
    StoredMessage,
    User,
    direct_key,
)


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


class MemoryDirectory:
    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._by_name: dict[str, str] = {}
        self._channels: dict[str, Channel] = {}
        self._direct: dict[str, str] = {}
        self._members: dict[str, set[str]] = defaultdict(set)
        self._channels_of: dict[str, set[str]] = defaultdict(set)

    async def create_user(self, username: str, password_hash: str, *, now_ms: int) -> User:
        if username.casefold() in self._by_name:
            raise Conflict(f"username {username!r} is taken")
        user = User(new_random_id("u"), username, password_hash, now_ms)
        self._users[user.user_id] = user
        self._by_name[username.casefold()] = user.user_id
        return user

    async def user_by_name(self, username: str) -> User | None:
        uid = self._by_name.get(username.casefold())
        return self._users[uid] if uid else None

    async def existing_users(self, user_ids: Collection[str]) -> set[str]:
        return {u for u in user_ids if u in self._users}

    async def create_channel(
        self, kind: ChannelKind, name: str | None, creator: str, members: Collection[str], *, now_ms: int,
    ) -> tuple[Channel, bool]:
        everyone = {creator, *members}
        key = direct_key(*everyone) if kind == "direct" and len(everyone) == 2 else None
        if key and key in self._direct:
            return self._channels[self._direct[key]], False
        channel = Channel(new_random_id("c"), kind, name, creator, now_ms)
        self._channels[channel.channel_id] = channel
        if key:
            self._direct[key] = channel.channel_id
        for u in everyone:
            await self.add_member(channel.channel_id, u, now_ms=now_ms)
        return channel, True

    async def get_channel(self, channel_id: str) -> Channel | None:
        return self._channels.get(channel_id)

    async def add_member(self, channel_id: str, user_id: str, *, now_ms: int) -> bool:
        if user_id in self._members[channel_id]:
            return False
        self._members[channel_id].add(user_id)
        self._channels_of[user_id].add(channel_id)
        return True

    async def remove_member(self, channel_id: str, user_id: str) -> bool:
        if user_id not in self._members[channel_id]:
            return False
        self._members[channel_id].discard(user_id)
        self._channels_of[user_id].discard(channel_id)
        return True

    async def members(self, channel_id: str) -> list[str]:
        return sorted(self._members.get(channel_id, ()))

    async def channels_of(self, user_id: str) -> list[Channel]:
        chans = [self._channels[c] for c in self._channels_of.get(user_id, ())]
        return sorted(chans, key=lambda c: (c.created_ms, c.channel_id))

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        return frozenset(self._channels_of.get(user_id, ()))

    async def memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(c, u) for c, u in pairs if u in self._members.get(c, ())}

    async def shares_channel(self, a: str, b: str) -> bool:
        return bool(self._channels_of.get(a, set()) & self._channels_of.get(b, set()))

    async def close(self) -> None:
        return None


_store_check: MessageStore = MemoryMessageStore()
_directory_check: Directory = MemoryDirectory()
