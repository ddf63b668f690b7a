"""The API's MQTT side, one service connection to the broker:

* user events (``user/{user}/events``): read markers and membership changes, for every device of
  a user; best effort (devices also learn the same facts from the inbox and sync calls), so a
  broker outage never fails those HTTP requests;
* the REST send (:class:`SendPath`): ``POST /v1/channels/{id}/messages`` publishes the payload on
  the device's own ``in/{user}/{device}/{channel}`` topic, exactly as the device would, and waits
  for the bridge's ack on ``dev/{user}/{device}/ack`` (subscribed for the time of the request,
  shared by concurrent requests of one device). So an HTTP send takes the very path of an MQTT
  send: the same bridge, order, idempotency by ``cmid`` and error codes. The device's own MQTT
  connection, if any, sees the ack too (an ack for a cmid it does not hold: ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Protocol

import aiomqtt
import msgspec

from mqchat import schema, topics
from mqchat.errors import InvalidTopic

logger = logging.getLogger(__name__)

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class EventSink(Protocol):
    async def user_event(self, user_id: str, event: dict[str, Any]) -> None:
        """Deliver ``event`` (with a ``type`` field) to every device of ``user_id``."""
        ...


class SendPath(Protocol):
    async def send(self, user: str, device: str, channel: str, cmid: str, payload: bytes,
                   timeout_s: float) -> schema.Ack:
        """Publish a validated send payload as ``user``'s ``device`` and return the bridge's ack.

        Raises:
            TimeoutError: no ack within ``timeout_s`` (nor a broker connection).
        """
        ...


class MqttEventSink:
    """Publishes events at QoS 1, and sends on behalf of devices (:class:`SendPath`), through one
    service connection kept open in the background."""

    def __init__(self, host: str, port: int, *, client_id: str, username: str, password: str) -> None:
        self._args: dict[str, Any] = {"hostname": host, "port": port, "identifier": client_id,
                                      "username": username, "password": password, "socket_options": NODELAY}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._encoder = msgspec.json.Encoder()
        # ack topic -> number of requests waiting on it; (user, device, channel, cmid) -> waiters
        self._ack_topics: dict[str, int] = {}
        self._waiters: dict[tuple[str, str, str, str], list[asyncio.Future[schema.Ack]]] = {}

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
                    for topic in list(self._ack_topics):  # requests still waiting from before a reconnect
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self._connected.set()
                    delay = 0.2
                    async for message in client.messages:  # returns when the connection drops
                        self._on_ack(str(message.topic), message.payload)
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

    def _on_ack(self, topic: str, payload: Any) -> None:
        try:
            parsed = topics.parse(topic)
            ack = schema.decode_ack(bytes(payload))
        except (InvalidTopic, msgspec.DecodeError, TypeError):
            return
        if not isinstance(parsed, topics.Ack) or ack.cmid is None:
            return
        for waiter in self._waiters.pop((parsed.user, parsed.device, ack.channel, ack.cmid), []):
            if not waiter.done():
                waiter.set_result(ack)

    async def send(self, user: str, device: str, channel: str, cmid: str, payload: bytes,
                   timeout_s: float) -> schema.Ack:
        key = (user, device, channel, cmid)
        topic = topics.ack(user, device)
        waiter: asyncio.Future[schema.Ack] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        self._ack_topics[topic] = self._ack_topics.get(topic, 0) + 1
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
                assert self._client is not None
                if self._ack_topics[topic] == 1:
                    await self._client.subscribe(topic, qos=1)  # SUBACK first: the ack cannot pass us by
                await self._client.publish(topics.send(user, device, channel), payload, qos=1)
                return await waiter
        except aiomqtt.MqttError as exc:
            raise TimeoutError(f"broker connection failed: {exc}") from exc
        finally:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]
            self._ack_topics[topic] -= 1
            if not self._ack_topics[topic]:
                del self._ack_topics[topic]
                client = self._client
                if client is not None:
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        await client.unsubscribe(topic, timeout=2)
