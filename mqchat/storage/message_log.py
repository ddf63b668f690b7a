"""The message log: a durable, bounded, replayable Redis stream of "message changed" notices.

::

    bridge (after the acks) ──XADD──▶ messages:log ──(group search-indexer)──▶ search indexer
                                         (capped at ~1M entries)              (other groups: any consumer)

Each entry names one message: ``op`` (``new``, ``edit``, ``delete``), ``id``, ``channel``,
``epoch``, ``seq``. It carries no text: a consumer reads what the message store holds *now* for
that message, so replaying an entry, or applying it late after newer ones, writes the current
state again (docs/search.md, "Feeding the index"). Consumers read with a consumer group each, at
their own pace, and take over the pending entries of a dead consumer with XAUTOCLAIM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from mqchat.storage.base import StoredMessage
from mqchat.storage.keys import MESSAGE_LOG_MAXLEN, SEARCH_GROUP
from mqchat.storage.redis_client import RedisClient

LogOp = Literal["new", "edit", "delete"]
OPS: frozenset[str] = frozenset({"new", "edit", "delete"})


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One log entry: "this message changed" (``op`` says how, for consumers that care)."""

    op: LogOp
    id: int
    channel: str
    epoch: int
    seq: int

    @classmethod
    def of(cls, m: StoredMessage, op: LogOp = "new") -> MessageEvent:
        return cls(op=op, id=m.id, channel=m.channel, epoch=m.epoch, seq=m.seq)

    def fields(self) -> dict[str, str]:
        """The entry's fields, as Redis returns them (strings)."""
        return {"op": self.op, "id": str(self.id), "channel": self.channel, "epoch": str(self.epoch),
                "seq": str(self.seq)}

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> MessageEvent | None:
        """The event, or ``None`` for an entry this version cannot read (skipped, never fatal)."""
        try:
            op = f["op"]
            if op not in OPS:
                return None
            return cls(op=cast(LogOp, op), id=int(f["id"]), channel=f["channel"], epoch=int(f["epoch"]),
                       seq=int(f["seq"]))
        except (KeyError, ValueError):
            return None


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for entry_id, fields in reply or []:
        if fields is None:  # trimmed while pending
            continue
        out.append((_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
    return out


class MessageLog:
    """The ``messages:log`` stream on one Redis (not closed here: its owner closes the client).

    Args:
        redis: the process's Redis.
        group: the consumer group this reader belongs to (one per kind of consumer).
    """

    def __init__(self, redis: RedisClient, group: str = SEARCH_GROUP) -> None:
        self._redis = redis
        self._r = redis.driver
        self._key = redis.keys.message_log
        self.group = group

    # --- writing (the bridge) ----------------------------------------------------------------------

    async def append(self, events: Sequence[MessageEvent]) -> None:
        """Append ``events`` in order, in one round trip (one script call per 500 events)."""
        await self._redis.append_stream(self._key, [e.fields() for e in events], maxlen=MESSAGE_LOG_MAXLEN)

    async def append_messages(self, messages: Sequence[StoredMessage], op: LogOp = "new") -> None:
        """One ``op`` event per message (the bridge's follow-up for new messages)."""
        await self.append([MessageEvent.of(m, op) for m in messages])

    # --- reading (a consumer group) ----------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group (reading from the start of what the log keeps) if missing; idempotent."""
        await self._redis.ensure_group(self._key, self.group)

    async def read(self, consumer: str, *, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries never delivered to the group, waiting up to ``block_ms``."""
        reply = await self._redis.call(self._r.xreadgroup(self.group, consumer, {self._key: ">"}, count=count,
                                                          block=block_ms))
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, entries in reply or []:
            out.extend(_entries(entries))
        return out

    async def claim(self, consumer: str, *, min_idle_ms: int, count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries pending longer than ``min_idle_ms`` with any consumer (one that died), now ours."""
        claimed: list[tuple[str, dict[str, str]]] = []
        start = "0-0"
        for _ in range(100):
            reply = await self._redis.call(self._r.xautoclaim(self._key, self.group, consumer, min_idle_ms, start,
                                                              count=count))
            start = _s(reply[0])
            claimed.extend(_entries(reply[1]))
            if start == "0-0" or len(claimed) >= count:
                break
        return claimed

    async def touch(self, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of entries still being worked on, so nobody claims them."""
        if ids:
            await self._redis.call(self._r.xclaim(self._key, self.group, consumer, 0, list(ids), justid=True))

    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self._redis.call(self._r.xack(self._key, self.group, *ids))

    async def lag(self) -> int:
        """Entries of the log not yet delivered to the group (0 when unknown)."""
        groups = await self._redis.call(self._r.xinfo_groups(self._key))
        for g in groups:
            if _s(g["name"]) == self.group:
                lag = g.get("lag")
                return int(lag) if lag is not None else 0
        return 0

    async def length(self) -> int:
        return int(await self._redis.call(self._r.xlen(self._key)))

    # --- replay (``mqchat reindex``) ----------------------------------------------------------------

    async def last_id(self) -> str:
        """The id of the newest entry (``0-0`` when the log is empty): a replay starts after it."""
        reply = await self._redis.call(self._r.xrevrange(self._key, count=1))
        return _s(reply[0][0]) if reply else "0-0"

    async def entries_after(self, entry_id: str, *, count: int) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries newer than ``entry_id``, oldest first (no consumer group involved)."""
        return _entries(await self._redis.call(self._r.xrange(self._key, min=f"({entry_id}", count=count)))
