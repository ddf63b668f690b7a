"""A reference device as an app developer would write it: HTTP for accounts and channels, MQTT
(aiomqtt) for the rest.

Used by the end-to-end tests and the benchmarks (the simulator has its own lean client stack).
It follows the client rules in docs/protocol.md: sends carry a ``cmid`` and are retried with the
same ``cmid`` until acked; the ack, not the PUBACK, is what says a message is safe. Presence as the
protocol asks (docs/protocol.md#presence): a last will ``offline`` naming the connection, ``online``
after CONNECT, the same status again every ``presence_refresh_ms`` when login asks for a heartbeat,
and ``offline`` before a clean DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import aiomqtt

from harness.http import ApiError as ApiError
from harness.http import Http
from mqchat import schema, topics

logger = logging.getLogger(__name__)

#: paho does not disable Nagle; without this, back-to-back small packets wait on delayed ACKs (~40 ms).
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


@dataclass(frozen=True, slots=True)
class Session:
    """What login returns."""

    token: str
    user_id: str
    device_id: str
    mqtt_host: str
    mqtt_port: int
    presence_refresh_ms: int | None = None
    """Presence heartbeat period from login (an external broker); None: no heartbeat needed."""


class Api:
    """The HTTP API, as a client sees it: every error answer raises :class:`ApiError`, none is retried."""

    def __init__(self, base_url: str) -> None:
        self._http = Http(base_url, timeout_s=30)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, token: str | None = None, *, json: Any = None,
                    params: dict[str, Any] | None = None) -> Any:
        return await self._http.call(method, path, token, attempts=1, json=json, params=params)

    async def create_user(self, username: str, password: str) -> str:
        doc = await self._call("POST", "/v1/users", json={"username": username, "password": password})
        return str(doc["user_id"])

    async def login(self, username: str, password: str, device_id: str) -> Session:
        doc = await self._call("POST", "/v1/login",
                               json={"username": username, "password": password, "device_id": device_id})
        return Session(doc["token"], doc["user_id"], doc["device_id"], doc["mqtt"]["host"], doc["mqtt"]["port"],
                       doc["mqtt"].get("presence_refresh_ms"))

    async def create_channel(self, token: str, kind: str, members: list[str], name: str | None = None) -> str:
        body: dict[str, Any] = {"kind": kind, "members": members}
        if name is not None:
            body["name"] = name
        doc = await self._call("POST", "/v1/channels", token, json=body)
        return str(doc["channel_id"])

    async def add_member(self, token: str, channel_id: str, user_id: str) -> None:
        await self._call("POST", f"/v1/channels/{channel_id}/members", token, json={"user_id": user_id})

    async def remove_member(self, token: str, channel_id: str, user_id: str) -> None:
        await self._call("DELETE", f"/v1/channels/{channel_id}/members/{user_id}", token)

    async def history(self, token: str, channel_id: str, **params: int) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call("GET", f"/v1/channels/{channel_id}/messages", token, params=params)
        return doc


@dataclass
class Device:
    """One connected device.

    Args:
        session: from :meth:`Api.login`.
        host, port: the broker (defaults to what login advertised).
        ack_timeout_s: how long :meth:`send` waits for an ack before retrying with the same cmid.
    """

    session: Session
    host: str | None = None
    port: int | None = None
    ack_timeout_s: float = 5.0
    received: dict[str, list[schema.ChannelMessage]] = field(default_factory=lambda: defaultdict(list))
    receive_times: dict[str, float] = field(default_factory=dict)
    """Monotonic arrival time by message id (for latency measurements)."""
    _client: aiomqtt.Client | None = None
    _reader: asyncio.Task[None] | None = None
    _waiting: dict[str, asyncio.Future[schema.Ack]] = field(default_factory=dict)
    _cmids: itertools.count[int] = field(default_factory=itertools.count)
    _cmid_prefix: str = field(default_factory=lambda: secrets.token_hex(4))
    _conn: str = ""
    _status: Literal["online", "away"] = "online"
    _heartbeat: asyncio.Task[None] | None = None

    @property
    def user_id(self) -> str:
        return self.session.user_id

    @property
    def client(self) -> aiomqtt.Client:
        assert self._client is not None, "device is not connected"
        return self._client

    def presence_payload(self, status: Literal["online", "away", "offline"]) -> bytes:
        """This connection's status payload (``conn`` names the connection, as the will does)."""
        return schema.encode(schema.PresencePayload(status=status, ts=time.time_ns() // 1_000_000, conn=self._conn))

    async def __aenter__(self) -> Self:
        s = self.session
        self._conn = secrets.token_hex(6)  # a new connection id per CONNECT, in the will and every status
        will = aiomqtt.Will(topics.device_presence(s.user_id, s.device_id),
                            schema.encode(schema.PresencePayload(status="offline", ts=0, conn=self._conn)),
                            qos=1, retain=True)
        self._client = aiomqtt.Client(
            self.host or s.mqtt_host, self.port or s.mqtt_port, identifier=f"{s.user_id}:{s.device_id}",
            username=s.user_id, password=s.token, clean_session=True, keepalive=30, max_inflight_messages=500,
            socket_options=NODELAY, will=will,
        )
        await self._client.__aenter__()
        await self._client.subscribe(topics.ack(s.user_id, s.device_id), qos=1)
        self._reader = asyncio.create_task(self._read(), name=f"device.{s.device_id}.read")
        await self.set_status("online")
        if s.presence_refresh_ms:
            self._heartbeat = asyncio.create_task(self._beat(s.presence_refresh_ms / 1000),
                                                  name=f"device.{s.device_id}.presence")
        return self

    async def set_status(self, status: Literal["online", "away"]) -> None:
        """Publish ``online`` or ``away`` (retained) on this device's presence topic; the heartbeat repeats it."""
        self._status = status
        await self.client.publish(topics.device_presence(self.session.user_id, self.session.device_id),
                                  self.presence_payload(status), qos=1, retain=True)

    async def _beat(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            with contextlib.suppress(aiomqtt.MqttError):
                await self.set_status(self._status)

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._heartbeat, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):  # no will on a clean DISCONNECT: say it first
                await self._client.publish(topics.device_presence(self.session.user_id, self.session.device_id),
                                           self.presence_payload("offline"), qos=1, retain=True)
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def join(self, channel_id: str) -> None:
        """Subscribe to a channel's stream (the broker refuses non-members)."""
        await self.client.subscribe(topics.stream(channel_id), qos=1)

    async def _read(self) -> None:
        async for msg in self.client.messages:
            payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
            topic = msg.topic.value
            if topic.startswith(topics.DEVICE + "/"):
                ack = schema.decode_ack(payload)
                fut = self._waiting.pop(ack.cmid or "", None)
                if fut is not None and not fut.done():
                    fut.set_result(ack)
            elif topic.startswith(topics.STREAM + "/"):
                m = schema.decode_channel_message(payload)
                self.received[m.channel].append(m)
                self.receive_times[m.id] = time.monotonic()

    def next_cmid(self) -> str:
        """A fresh client message id: unique per device connection object, as a real app's outbox
        makes them (a counter alone would repeat after a restart and be deduplicated)."""
        return f"{self.session.device_id}-{self._cmid_prefix}-{next(self._cmids)}"

    async def publish_raw(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)

    async def send(self, channel_id: str, body: str, *, cmid: str | None = None, kind: str = "text",
                   retries: int = 3) -> schema.Ack:
        """Send and wait for the ack, retrying with the same cmid if none comes."""
        cmid = cmid or self.next_cmid()
        payload = schema.encode(schema.SendRequest(cmid=cmid, kind=kind, body=body))
        return await self.send_payload(channel_id, cmid, payload, retries=retries)

    async def send_payload(self, channel_id: str, cmid: str, payload: bytes, *, retries: int = 3) -> schema.Ack:
        topic = topics.send(self.session.user_id, self.session.device_id, channel_id)
        for attempt in range(retries + 1):
            fut: asyncio.Future[schema.Ack] = asyncio.get_running_loop().create_future()
            self._waiting[cmid] = fut
            await self.client.publish(topic, payload, qos=1)
            try:
                return await asyncio.wait_for(fut, self.ack_timeout_s)
            except TimeoutError:
                logger.info("no ack for %s (attempt %d); retrying", cmid, attempt + 1)
        raise TimeoutError(f"no ack for cmid {cmid} after {retries + 1} attempts")
