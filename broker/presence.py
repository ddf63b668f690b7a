"""Presence plugin (native, :mod:`broker.plugin_api`): a lease in Redis for every live device connection.

::

    CONNECT ────────▶ connect(user, device|conn)      ┐
    PUBLISH presence/{me}/{my device} {"status"} ──▶ status  ├─▶ one ordered queue ─▶ Redis (Lua, pipelined)
    DISCONNECT / lost connection ─▶ disconnect         │                          └─▶ presence:changes stream
    every lease_ttl / 3 ─▶ refresh all live leases, in slices ┘

Events go through one queue drained by one task: Redis sees them in the order they happened.
Leases are keyed per connection, so a reconnect and a late disconnect of the old connection cannot
clash. A crashed broker refreshes nothing; its leases expire and the workers' sweeper publishes
offline. Writes are coalesced: one pipelined round trip (of at most 500 events) per drain, never
one per heartbeat; refreshes are spread evenly over their period. The aggregate is published by
the workers' presence publisher, in change order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import msgspec

from broker.plugin_api import (
    AppMessage,
    BrokerStarted,
    ClientConnected,
    ClientDisconnected,
    Closable,
    MessageReceived,
)
from broker.plugins import PRINCIPAL
from broker.session import Session
from mqchat import auth, topics
from mqchat.config import RedisSettings
from mqchat.ids import new_random_id
from mqchat.schema import PresencePayload
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import PresenceOp, RedisState

logger = logging.getLogger(__name__)

CONN = "mqchat.conn"
#: Most presence events written to Redis in one pipeline.
WRITE_BATCH_MAX = 500
#: Lease refreshes are spread over their period in slices this far apart.
REFRESH_STEP_S = 0.1

class PresencePlugin:
    """Presence leases of device connections.

    Args:
        redis: where the leases go (``redis.url`` must be set).
        lease_ttl_ms: lease lifetime (``broker.presence_lease_ms``); refreshed every third of it.

    Raises:
        ValueError: ``redis.url`` is not set.
    """

    def __init__(self, redis: RedisSettings, *, lease_ttl_ms: int) -> None:
        if not redis.url:
            raise ValueError("the presence plugin needs redis.url")
        self._redis = RedisClient.from_settings(redis)
        self._state = RedisState(self._redis)
        self._ttl = lease_ttl_ms
        self._queue: asyncio.Queue[tuple[str, str, PresenceOp, str]] = asyncio.Queue()
        self._live: dict[str, tuple[str, str]] = {}  # client id → (user, device|conn)
        self._tasks: list[asyncio.Task[None]] = []

    def _ensure_running(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.get_running_loop().create_task(self._write_loop(), name="broker.presence.write"),
                           asyncio.get_running_loop().create_task(self._refresh_loop(),
                                                                  name="broker.presence.refresh")]

    async def on_broker_started(self) -> None:
        self._ensure_running()

    async def on_client_connected(self, session: Session) -> None:
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal) or principal.is_service:
            return
        member = f"{principal.device_id}|{new_random_id('k')}"
        session.attributes[CONN] = member
        self._live[session.client_id] = (principal.user_id, member)
        self._queue.put_nowait((principal.user_id, member, "connect", "online"))
        self._ensure_running()

    async def on_client_disconnected(self, session: Session) -> None:
        principal = session.attributes.get(PRINCIPAL)
        member = session.attributes.get(CONN)
        if not isinstance(principal, auth.Principal) or member is None:
            return
        if self._live.get(session.client_id) == (principal.user_id, member):
            del self._live[session.client_id]
        self._queue.put_nowait((principal.user_id, member, "disconnect", ""))

    async def on_message_received(self, session: Session, message: AppMessage) -> None:
        topic = message.topic
        if not topic.startswith(topics.PRESENCE + "/"):
            return
        live = self._live.get(session.client_id)
        if live is None:
            return
        user, member = live
        if topic != topics.device_presence(user, member.split("|")[0]):
            return
        try:
            payload = msgspec.json.decode(message.data, type=PresencePayload)
        except (msgspec.DecodeError, TypeError):
            return  # a malformed presence payload changes nothing
        if payload.status in ("online", "away"):
            self._queue.put_nowait((user, member, "status", payload.status))

    async def _write_loop(self) -> None:
        delay = 0.1
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < WRITE_BATCH_MAX:
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self._state.presence_events(batch, now_ms=time.time_ns() // 1_000_000, ttl_ms=self._ttl)
                    delay = 0.1
                    for _ in batch:
                        self._queue.task_done()
                    break
                except Exception:
                    logger.exception("presence write of %d events failed; retrying in %.1fs", len(batch), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _refresh_loop(self) -> None:
        """Refresh every live lease once per third of its lifetime, spread evenly over that period
        in small slices: 10,000 leases refreshed at once would be one Redis pipeline of 10,000
        commands, and a pause in deliveries while it is written."""
        period_s = self._ttl / 3000
        while True:
            live = list(self._live.items())
            slices = max(1, min(len(live), round(period_s / REFRESH_STEP_S)))
            per_slice = -(-len(live) // slices)
            for start in range(0, max(len(live), 1), max(per_slice, 1)):
                await asyncio.sleep(period_s / slices)
                for client_id, (user, member) in live[start : start + per_slice]:
                    if self._live.get(client_id) == (user, member):  # still connected
                        self._queue.put_nowait((user, member, "refresh", ""))

    async def close(self) -> None:
        # Leases of connections still open are left to expire: the broker is going away, and a
        # replacement node's clients reconnect and take new leases.
        for task in self._tasks:
            if task.get_name() == "broker.presence.refresh":
                task.cancel()
        if self._tasks:  # let the last disconnects reach Redis, so those users go offline at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 2)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.close()


if TYPE_CHECKING:  # static conformance: mypy checks the plugin against the protocols it implements

    def _conforms(p: PresencePlugin) -> tuple[BrokerStarted, ClientConnected, ClientDisconnected, MessageReceived,
                                              Closable]:
        return p, p, p, p, p
