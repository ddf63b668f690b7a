"""User events (``user/{user}/events``): read markers and membership changes, for every device of
a user. Published by the API over MQTT; best effort (devices also learn the same facts from the
inbox and sync calls), so a broker outage never fails an HTTP request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Protocol

import aiomqtt
import msgspec

from mqchat import topics

logger = logging.getLogger(__name__)

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class EventSink(Protocol):
    async def user_event(self, user_id: str, event: dict[str, Any]) -> None:
        """Deliver ``event`` (with a ``type`` field) to every device of ``user_id``."""
        ...


class MqttEventSink:
    """Publishes events at QoS 1 through one service connection kept open in the background."""

    def __init__(self, host: str, port: int, *, client_id: str, username: str, password: str) -> None:
        self._args: dict[str, Any] = {"hostname": host, "port": port, "identifier": client_id,
                                      "username": username, "password": password, "socket_options": NODELAY}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._encoder = msgspec.json.Encoder()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="api.events.connection")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _keep_connected(self) -> None:
        delay = 0.2
        while True:
            try:
                async with aiomqtt.Client(**self._args) as client:
                    self._client = client
                    self._connected.set()
                    delay = 0.2
                    async for _ in client.messages:  # returns when the connection drops
                        pass
            except aiomqtt.MqttError as exc:
                logger.warning("event connection to the broker lost (%s); retrying in %.1fs", exc, delay)
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def user_event(self, user_id: str, event: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), 2)
            assert self._client is not None
            await self._client.publish(topics.user_events(user_id), self._encoder.encode(event), qos=1, timeout=5)
        except (TimeoutError, aiomqtt.MqttError, AssertionError) as exc:
            logger.warning("user event %s for %s not delivered: %r", event.get("type"), user_id, exc)
