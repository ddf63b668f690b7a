"""The bridge's broker connection, over either MQTT client (``bridge.mqtt_client``).

- ``"lean"``: :class:`mqchat.mqtt.client.Client`, an :class:`asyncio.Protocol` on the shared codec:
  a batch's publishes are written in one system call and answered by one countdown.
- ``"aiomqtt"``: aiomqtt over paho, kept so both can be measured in one benchmark run
  (``python -m bench.pipeline --bridge-client``) and as a fallback.

Both behave the same for the bridge: QoS 1 everywhere; a received send is acknowledged to the
broker (PUBACK) once the bridge has taken it (with lean, when the consume loop comes back for the
next one; aiomqtt acknowledges on receipt); the sender's own ack (``dev/...``) is published by the
pipeline only after the message is durable: that ack is the promise a device relies on (it
retries with the same cmid until it gets one). The broker's PUBACK is deliberately not held until
the write: with a clean session a lost bridge's unacknowledged sends are dropped by the broker
anyway, and holding it would cap the intake at the broker's in-flight window per batch. A full
queue (``bridge.queue_max``) does hold the PUBACKs back, and then the reading of the socket.
Every connection failure is raised as one of :data:`LINK_ERRORS`, which the bridge answers by
reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import aiomqtt

from mqchat.config import Settings
from mqchat.mqtt import client as lean

#: What a lost or refused broker connection raises, with either client.
LINK_ERRORS: tuple[type[Exception], ...] = (aiomqtt.MqttError, lean.MqttError)
#: paho does not disable Nagle; without this, back-to-back small publishes wait on delayed ACKs (~40 ms).
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
#: Publishes in flight at once on the bridge's connection (a few batches' worth).
MAX_INFLIGHT = 1000


class BrokerLink(Protocol):
    """One connected broker session of the bridge."""

    async def subscribe(self, filters: Sequence[str]) -> None:
        """Subscribe to ``filters`` at QoS 1."""
        ...

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        """``(topic, payload)`` of every message received, in order; ends with a link error."""
        ...

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish at QoS 1, on the wire in the order given; returns once all are acknowledged."""
        ...

    async def unsubscribe(self, flt: str) -> None: ...


class LeanLink:
    """:class:`BrokerLink` over :class:`mqchat.mqtt.client.Client`."""

    def __init__(self, client: lean.Client) -> None:
        self.client = client

    async def subscribe(self, filters: Sequence[str]) -> None:
        await self.client.subscribe(*((f, 1) for f in filters))

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        # Asking the client for the next message acknowledges the previous one: the consume
        # loop has handed it to the sequencer's queue.
        async for message in self.client.messages:
            yield message.topic, message.payload

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self.client.publish_many(items, qos=1)

    async def unsubscribe(self, flt: str) -> None:
        await self.client.unsubscribe(flt)


class AiomqttLink:
    """:class:`BrokerLink` over aiomqtt (paho): all publishes of a call are handed to paho before any
    PUBACK is awaited, so they are pipelined and keep their order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def subscribe(self, filters: Sequence[str]) -> None:
        for flt in filters:
            await self.client.subscribe(flt, qos=1)

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        async for message in self.client.messages:
            payload = message.payload
            yield message.topic.value, (bytes(payload) if isinstance(payload, (bytes, bytearray))
                                        else str(payload).encode())

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        await asyncio.gather(*(self.client.publish(t, p, qos=1) for t, p in items))

    async def unsubscribe(self, flt: str) -> None:
        await self.client.unsubscribe(flt)


@contextlib.asynccontextmanager
async def open_link(settings: Settings, credentials: tuple[str, str, str],
                    pending_threshold: int) -> AsyncIterator[BrokerLink]:
    """Connect to the broker with the client ``bridge.mqtt_client`` names; disconnect on exit.

    Args:
        settings: ``mqtt.host``, ``mqtt.port``, ``mqtt.keepalive_s`` and ``bridge.mqtt_client``.
        credentials: ``(client id, username, password)``.
        pending_threshold: aiomqtt only: publishes in flight before it logs a warning.

    Raises:
        aiomqtt.MqttError | mqchat.mqtt.client.MqttError: the connection failed (see :data:`LINK_ERRORS`).
    """
    client_id, username, password = credentials
    if settings.bridge.mqtt_client == "aiomqtt":
        client = aiomqtt.Client(
            settings.mqtt.host, settings.mqtt.port, identifier=client_id, username=username, password=password,
            keepalive=settings.mqtt.keepalive_s, clean_session=True, max_inflight_messages=MAX_INFLIGHT,
            socket_options=NODELAY,
        )
        # A batch pipelines hundreds of publishes by design; aiomqtt would log a warning for each
        # one past 10 in flight (measurable CPU at load, and noise).
        client.pending_calls_threshold = pending_threshold
        async with client:
            yield AiomqttLink(client)
        return
    lean_client = lean.Client(settings.mqtt.host, settings.mqtt.port, client_id=client_id, username=username,
                              password=password, keepalive=settings.mqtt.keepalive_s, clean_session=True,
                              max_inflight=MAX_INFLIGHT, max_queued=settings.bridge.queue_max)
    try:
        await lean_client.connect()
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, lean.MqttError):
            raise
        raise lean.ConnectionLost(f"cannot connect to {settings.mqtt.host}:{settings.mqtt.port}: {exc!r}") from exc
    try:
        yield LeanLink(lean_client)
    finally:
        with contextlib.suppress(lean.MqttError, OSError):
            await lean_client.disconnect()
