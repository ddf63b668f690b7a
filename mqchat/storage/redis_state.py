"""Presence, read state and fan-out jobs in Redis, over a :class:`~mqchat.storage.redis_client.RedisClient`.

Key names and lifetimes are in :mod:`mqchat.storage.keys`; the Lua scripts, each with a KEYS/ARGV
header, are in ``mqchat/storage/lua/``. Every multi-key change is one script, so it is atomic;
batched work is pipelined (lease refreshes: one round trip for many) or one script call for many
items (the bridge's read-marker moves, ``read_markers.lua``, one call per hash slot on a cluster;
its push jobs, ``stream_append.lua``): one command to pack instead of one per message.

Presence is sharded (:data:`~mqchat.storage.keys.PRESENCE_SHARDS`): a user's connections and
aggregate live with their shard's lease set and change stream under one hash tag, so the update
script is atomic on a Redis Cluster too. The sweeper runs the expiry script once per shard, and the
publisher reads every shard's change stream: a change's id is ``{shard}/{stream entry id}``, changes
of one user keep their order (one user, one shard), changes of different shards have none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio.client import Pipeline

from mqchat.storage.base import (
    FanoutQueue,
    PresenceStore,
    ReadMarker,
    ReadStateStore,
    SlowModeClaim,
    SlowModeGate,
    StoredMessage,
    UserPresence,
)
from mqchat.storage.keys import (
    CHANGES_MAXLEN,
    MENTIONS_TTL_S,
    PRESENCE_GROUP,
    PRESENCE_SHARDS,
    PUSH_JOBS_MAXLEN,
    presence_shard,
)
from mqchat.storage.redis_client import RedisClient

PresenceOp = Literal["connect", "refresh", "status", "disconnect"]

PRESENCE_UPDATE = "presence_update.lua"
PRESENCE_EXPIRE = "presence_expire.lua"
READ_MARKER = "read_marker.lua"
READ_MARKERS = "read_markers.lua"
STREAM_APPEND = "stream_append.lua"
#: Items per script call of the batched writes (bounds how long one call holds Redis).
SCRIPT_BATCH = 500
SLOW_MODE = "slow_mode.lua"
#: On a Redis Cluster the shards' change streams cannot be read by one blocking command (they are
#: in different slots): the publisher polls them all this often while nothing comes.
CHANGES_POLL_S = 0.05


def _marker(raw: bytes | str | None) -> ReadMarker | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    epoch, seq = text.split(":")
    return ReadMarker(int(epoch), int(seq))


class RedisState:
    """:class:`PresenceStore`, :class:`ReadStateStore` and :class:`FanoutQueue` on one Redis.

    Args:
        redis: the process's Redis (not closed here: its owner closes it).
    """

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._r = redis.driver
        self.keys = redis.keys

    # --- presence --------------------------------------------------------------------------------

    def _update_args(self, user: str, member: str, op: PresenceOp, status: str, now_ms: int,
                     ttl_ms: int) -> tuple[list[str], list[Any]]:
        k, shard = self.keys, presence_shard(user)
        return ([k.leases(shard), k.conns(user), k.user_presence(user), k.changes(shard)],
                [user, member, op, status, now_ms + ttl_ms, now_ms, CHANGES_MAXLEN])

    async def presence_event(self, user: str, member: str, op: PresenceOp, *, now_ms: int, ttl_ms: int,
                             status: str = "online") -> str:
        """Apply one connection event (``member`` is ``{device}|{conn}``); returns the user's aggregate."""
        keys, args = self._update_args(user, member, op, status, now_ms, ttl_ms)
        result = await self._redis.run_script(PRESENCE_UPDATE, keys, args)
        return result.decode() if isinstance(result, bytes) else str(result)

    async def _pipelined_scripts(self, name: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)`` in one round trip (EVALSHA; the script is
        loaded again only if Redis lost it, e.g. after a restart); returns each call's result."""
        def build(pipe: Pipeline) -> None:
            for keys, args in calls:
                self._redis.queue_script(pipe, name, keys, args)

        return await self._redis.pipelined(build, scripts=[name])

    async def presence_events(self, events: Sequence[tuple[str, str, PresenceOp, str]], *, now_ms: int,
                              ttl_ms: int) -> None:
        """Apply many ``(user, member, op, status)`` events, in order, in one round trip."""
        if events:
            await self._pipelined_scripts(PRESENCE_UPDATE, [self._update_args(u, m, op, st, now_ms, ttl_ms)
                                                            for u, m, op, st in events])

    async def expire_leases(self, *, now_ms: int, limit: int = 1000) -> int:
        """Remove leases that expired before ``now_ms`` (at most ``limit`` per shard); returns how many."""
        k = self.keys
        removed = await self._pipelined_scripts(PRESENCE_EXPIRE, [
            ([k.leases(s), k.changes(s)], [k.presence_shard_prefix(s), now_ms, limit, CHANGES_MAXLEN])
            for s in range(PRESENCE_SHARDS)])
        return sum(int(n) for n in removed)

    async def presence_of(self, users: Collection[str]) -> dict[str, UserPresence]:
        wanted = list(dict.fromkeys(users))

        def build(pipe: Pipeline) -> None:
            for u in wanted:
                pipe.hmget(self.keys.user_presence(u), "status", "last_seen")

        rows = await self._redis.pipelined(build)
        out: dict[str, UserPresence] = {}
        for u, (status, seen) in zip(wanted, rows, strict=True):
            out[u] = UserPresence(status.decode() if status else "offline", int(seen) if seen else None)
        return out

    async def presence_versions(self, users: Collection[str]) -> dict[str, int]:
        """The version of each user's current aggregate (0 if none): a change entry with a lower
        ``ver`` has been superseded by a later one."""
        wanted = list(dict.fromkeys(users))

        def build(pipe: Pipeline) -> None:
            for u in wanted:
                pipe.hget(self.keys.user_presence(u), "ver")

        rows = await self._redis.pipelined(build)
        return {u: int(v) if v else 0 for u, v in zip(wanted, rows, strict=True)}

    async def ensure_change_group(self) -> None:
        for shard in range(PRESENCE_SHARDS):
            await self._redis.ensure_group(self.keys.changes(shard), PRESENCE_GROUP)

    async def read_changes(self, consumer: str, *, count: int = 500, block_ms: int = 1000,
                           pending: bool = False) -> list[tuple[str, dict[str, str]]]:
        """Next presence changes for the publisher, shard after shard (each shard's oldest first), at
        most ``count`` per shard, waiting up to ``block_ms`` for one. ``pending``: re-read unacked ones.

        Ids are ``{shard}/{entry id}``, for :meth:`ack_changes`.
        """
        start = "0" if pending else ">"
        if not self._redis.cluster:
            # One server: one command reads every shard's stream, blocking until any has news.
            streams = {self.keys.changes(s): start for s in range(PRESENCE_SHARDS)}
            reply = await self._redis.call(self._r.xreadgroup(PRESENCE_GROUP, consumer, streams,  # type: ignore[arg-type]
                                                              count=count, block=None if pending else block_ms))
            return self._changes(reply)

        # A cluster: the streams are in different slots, so one non-blocking read per shard (one
        # pipeline, split by node), again every CHANGES_POLL_S until something comes or time is up.
        def build(pipe: Pipeline) -> None:
            for s in range(PRESENCE_SHARDS):
                pipe.xreadgroup(PRESENCE_GROUP, consumer, {self.keys.changes(s): start}, count=count)

        deadline = time.monotonic() + block_ms / 1000
        while True:
            replies = await self._redis.pipelined(build)
            out = self._changes([stream for reply in replies for stream in reply or []])
            left = deadline - time.monotonic()
            if out or pending or left <= 0:
                return out
            await asyncio.sleep(min(CHANGES_POLL_S, left))

    def _changes(self, reply: Any) -> list[tuple[str, dict[str, str]]]:
        shards = {self.keys.changes(s).encode(): s for s in range(PRESENCE_SHARDS)}
        out: list[tuple[str, dict[str, str]]] = []
        for stream, entries in reply or []:
            shard = shards[stream if isinstance(stream, bytes) else stream.encode()]
            for entry_id, fields in entries:
                out.append((f"{shard}/{entry_id.decode()}", {k.decode(): v.decode() for k, v in fields.items()}))
        return out

    async def ack_changes(self, ids: Sequence[str]) -> None:
        """Acknowledge changes by the ids :meth:`read_changes` gave."""
        by_shard: dict[int, list[str]] = {}
        for change_id in ids:
            shard, _, entry_id = change_id.partition("/")
            by_shard.setdefault(int(shard), []).append(entry_id)

        def build(pipe: Pipeline) -> None:
            for shard, entry_ids in by_shard.items():
                pipe.xack(self.keys.changes(shard), PRESENCE_GROUP, *entry_ids)

        if by_shard:
            await self._redis.pipelined(build)

    async def set_online(self, user: str, channels: Collection[str], online: bool) -> None:
        """Add or remove ``user`` from each channel's online set."""
        await self.set_online_many([(user, channels, online)])

    async def set_online_many(self, updates: Sequence[tuple[str, Collection[str], bool]]) -> None:
        """Apply many ``(user, channels, online)`` updates in one round trip."""

        def build(pipe: Pipeline) -> None:
            for user, channels, online in updates:
                for c in channels:
                    (pipe.sadd if online else pipe.srem)(self.keys.online(c), user)

        await self._redis.pipelined(build)

    async def online_count(self, channel: str) -> int:
        return int(await self._redis.call(self._r.scard(self.keys.online(channel))))

    # --- read state ------------------------------------------------------------------------------

    async def mark_read(self, user: str, channel: str, epoch: int, seq: int) -> ReadMarker:
        result = await self._redis.run_script(READ_MARKER, [self.keys.read(user), self.keys.mentions(user, channel)],
                                              [channel, epoch, seq])
        return ReadMarker(int(result[0]), int(result[1]))

    async def mark_read_many(self, markers: Sequence[tuple[str, str, int, int]]) -> None:
        """Move many ``(user, channel, epoch, seq)`` markers forward, in order, in one round trip.

        The markers are first collapsed per ``(user, channel)`` (consecutive ones of one epoch keep
        the highest seq: the same end state as applying them one by one), then sent as one
        ``read_markers.lua`` call per :data:`SCRIPT_BATCH` items (on a Redis Cluster, per hash slot
        of the users' tags), all in one pipeline.
        """
        if not markers:
            return
        runs: dict[tuple[str, str], list[list[int]]] = {}
        for user, channel, epoch, seq in markers:
            pair = runs.setdefault((user, channel), [])
            if pair and pair[-1][0] == epoch:
                pair[-1][1] = max(pair[-1][1], seq)
            else:
                pair.append([epoch, seq])
        items = [(user, channel, epoch, seq) for (user, channel), pair in runs.items() for epoch, seq in pair]
        calls = [self._read_markers_args(group[i:i + SCRIPT_BATCH])
                 for group in self._redis.slot_groups(items, lambda item: self.keys.read(item[0]))
                 for i in range(0, len(group), SCRIPT_BATCH)]
        await self._pipelined_scripts(READ_MARKERS, calls)

    def _read_markers_args(self, items: Sequence[tuple[str, str, int, int]]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one ``read_markers.lua`` call."""
        keys: list[str] = []
        for user, channel, _, _ in items:
            keys += (self.keys.read(user), self.keys.mentions(user, channel))
        return keys, [msgspec.json.encode([[channel, epoch, seq] for _, channel, epoch, seq in items])]

    async def read_markers(self, user: str, channels: Collection[str]) -> dict[str, ReadMarker | None]:
        wanted = list(dict.fromkeys(channels))
        if not wanted:
            return {}
        rows = await self._redis.call(self._r.hmget(self.keys.read(user), wanted))
        return {c: _marker(v) for c, v in zip(wanted, rows, strict=True)}

    async def add_mentions(self, mentions: Sequence[tuple[str, str, int]]) -> None:
        """Record ``(user, channel, seq)`` mentions in one round trip."""

        def build(pipe: Pipeline) -> None:
            for user, channel, seq in mentions:
                key = self.keys.mentions(user, channel)
                pipe.zadd(key, {str(seq): seq})
                pipe.expire(key, MENTIONS_TTL_S)

        await self._redis.pipelined(build)

    async def mention_counts(self, user: str, read_seqs: dict[str, int]) -> dict[str, int]:
        """Mentions above each channel's read seq."""
        if not read_seqs:
            return {}

        def build(pipe: Pipeline) -> None:
            for channel, seq in read_seqs.items():
                pipe.zcount(self.keys.mentions(user, channel), f"({seq}", "+inf")

        rows = await self._redis.pipelined(build)
        return {c: int(n) for c, n in zip(read_seqs, rows, strict=True)}

    # --- fan-out jobs ----------------------------------------------------------------------------

    async def enqueue_fanout(self, messages: Sequence[StoredMessage], *, bodies: bool = True) -> None:
        """One push fan-out job per new message, in order, in one round trip (see :class:`FanoutQueue`)."""
        await self._redis.append_stream(self.keys.push_jobs, [fanout_job(m, body=bodies) for m in messages],
                                        maxlen=PUSH_JOBS_MAXLEN)

    # --- slow mode ---------------------------------------------------------------------------------

    async def claim_slow_mode(self, claims: Sequence[SlowModeClaim], *, now_ms: int) -> list[int]:
        """See :class:`SlowModeGate`: one script per claim, all in one round trip (Redis keeps the
        time: ``now_ms`` is not used)."""
        if not claims:
            return []
        def build(pipe: Pipeline) -> None:
            for c in claims:
                self._redis.queue_script(pipe, SLOW_MODE, [self.keys.slow_mode(c.channel, c.user)],
                                         [c.cmid, c.interval_ms])

        return [int(r) for r in await self._redis.pipelined(build, scripts=[SLOW_MODE])]



def fanout_job(m: StoredMessage, *, body: bool = True) -> dict[str, str]:
    """The fields of a fan-out job: enough to decide and build a notification without a store read.
    ``body=False`` (privacy mode): the text never enters Redis (an empty body is stored)."""
    return {"id": str(m.id), "channel": m.channel, "epoch": str(m.epoch), "seq": str(m.seq), "sender": m.sender,
            "device": m.device, "ts": str(m.ts), "kind": m.kind, "body": m.body if body else ""}


def _conformance(state: RedisState) -> tuple[PresenceStore, ReadStateStore, FanoutQueue, SlowModeGate]:
    """Static conformance: mypy checks RedisState against the protocols."""
    return state, state, state, state
