"""Presence publisher and lease sweeper."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

import msgspec
from prometheus_client import Counter

from mqchat import topics
from mqchat.storage.base import Directory
from mqchat.storage.redis_state import RedisState

logger = logging.getLogger(__name__)

PUBLISHED = Counter("mqchat_presence_changes_published_total", "User presence changes published.")
EXPIRED = Counter("mqchat_presence_leases_expired_total", "Presence leases expired by the sweeper.")

SWEEP_INTERVAL_S = 1.0


class Publisher(Protocol):
    async def publish_retained(self, topic: str, payload: bytes) -> None: ...


class UserPresenceMessage(msgspec.Struct, frozen=True):
    """Payload of ``presence/{user}``."""

    status: str
    last_seen: int
    v: int = 1


async def publish_changes(state: RedisState, directory: Directory, publisher: Publisher, consumer: str,
                          entries: Sequence[tuple[str, dict[str, str]]]) -> None:
    """Publish one batch of changes, in order, then acknowledge it.

    The publishes are handed to the MQTT client in stream order before any PUBACK is awaited, so
    they are pipelined and keep their order; the online sets take the last status of each user.
    """
    encoder = msgspec.json.Encoder()
    await asyncio.gather(*(
        publisher.publish_retained(topics.user_presence(change["user"]), encoder.encode(
            UserPresenceMessage(status=change["status"], last_seen=int(change["last_seen"]))))
        for _entry_id, change in entries
    ))
    final = {change["user"]: change["status"] != "offline" for _entry_id, change in entries}
    channels = await asyncio.gather(*(directory.channel_ids_of(user) for user in final))
    await state.set_online_many([(user, chans, online) for (user, online), chans in zip(final.items(), channels,
                                                                                          strict=True)])
    await state.ack_changes([entry_id for entry_id, _ in entries])
    PUBLISHED.inc(len(entries))


async def run_publisher(state: RedisState, directory: Directory, publisher: Publisher, consumer: str) -> None:
    """Forever: first what a previous run left unacknowledged, then new changes."""
    await state.ensure_change_group()
    pending = await state.read_changes(consumer, pending=True, count=10_000)
    if pending:
        logger.info("republishing %d presence changes left by a previous run", len(pending))
        await publish_changes(state, directory, publisher, consumer, pending)
    while True:
        entries = await state.read_changes(consumer, block_ms=1000)
        if entries:
            await publish_changes(state, directory, publisher, consumer, entries)


async def run_sweeper(state: RedisState, *, interval_s: float = SWEEP_INTERVAL_S) -> None:
    """Forever: expire leases that nobody refreshed."""
    while True:
        now = time.time_ns() // 1_000_000
        while (removed := await state.expire_leases(now_ms=now)) > 0:
            logger.info("expired %d presence leases", removed)
            EXPIRED.inc(removed)
        await asyncio.sleep(interval_s)
