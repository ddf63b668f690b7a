"""A lean asyncio MQTT 3.1.1 client for our own services (bridge, workers), on the shared codec.

An :class:`asyncio.Protocol`: no paho, no task per connection, no thread. Every packet is encoded
and decoded by :mod:`mqchat.mqtt.codec`; the keep-alive is one ``call_later`` timer; everything
written in one turn of the event loop leaves in one ``transport.write`` (a batch of publishes, the
PUBACKs for a read of incoming messages)::

    connect()             ──CONNECT────▶ broker ──CONNACK──▶ session present (or ConnectRefused)
    subscribe()           ──SUBSCRIBE──▶        ──SUBACK───▶ granted QoS (any 0x80: SubscribeRefused)
    publish_many(items)   ──PUBLISH x n─▶       ──PUBACK x n─▶ returns once every one is acknowledged
    async for m in messages ◀──PUBLISH──        ◀──PUBACK── when the handler has accepted ``m``
    keep-alive timer      ──PINGREQ────▶        ──PINGRESP─▶ nothing heard for a whole interval: lost

**Outgoing window.** At most ``max_inflight`` QoS 1 publishes wait for their PUBACK; the next
publish waits for a free slot (and while the transport's write buffer is over its high-water
mark). Publishes leave in call order, so MQTT's per-topic order from one publisher holds.

**Incoming acknowledgement.** A QoS 1 message is acknowledged once its handler accepts it: with
``manual_ack=False`` when the ``async for`` loop asks for the next message (the body of the loop
finished with it), with ``manual_ack=True`` when the caller calls :meth:`Client.ack`. A message
never accepted (the loop raised, the connection ended) is never acknowledged. When more than
``max_queued`` received messages wait for the consumer, the client stops reading the socket.

Errors::

    MqttError
     ├── ConnectRefused        CONNACK return code != 0 (``code``: 1..5)
     ├── SubscribeRefused      SUBACK refused a filter (``filters``: the refused ones)
     └── ConnectionLost        also a ConnectionError: the connection ended (or never existed);
          │                    every pending publish / subscribe / connect fails with it, and the
          │                    ``async for`` over :attr:`Client.messages` raises it
          └── BrokerProtocolError  the broker broke MQTT 3.1.1 (``reason``); the client closed

A connection that ended is not re-established by the client: the caller decides when
(:meth:`Client.connect` may be called again on the same object).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl as ssl_module
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, cast

from mqchat.mqtt import codec
from mqchat.mqtt.codec import ProtocolError

logger = logging.getLogger(__name__)

CONNACK_REASONS: Final = codec.CONNACK_REASONS


class MqttError(Exception):
    """Base of this module's errors."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a non-zero return code.

    Attributes:
        code: the CONNACK return code (1..5, see :data:`CONNACK_REASONS`).
    """

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"connection refused: {code} ({CONNACK_REASONS.get(code, 'unknown')})")


class SubscribeRefused(MqttError):
    """The broker refused (SUBACK 0x80) at least one filter of a SUBSCRIBE.

    Attributes:
        filters: the refused filters.
        granted: the return code per filter of the SUBSCRIBE, in order.
    """

    def __init__(self, filters: list[str], granted: list[int]) -> None:
        self.filters = filters
        self.granted = granted
        super().__init__(f"subscription refused: {', '.join(filters)}")


class ConnectionLost(MqttError, ConnectionError):
    """The connection ended: network loss, broker close, keep-alive timeout, :meth:`Client.abort`,
    or never connected."""


class BrokerProtocolError(ConnectionLost):
    """The broker sent bytes that break MQTT 3.1.1; the client closed the connection.

    Attributes:
        reason: the rule broken.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the broker broke MQTT 3.1.1: {reason}")


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class Message:
    """A PUBLISH received from the broker (QoS 0 or 1)."""

    __slots__ = ("_conn", "_pending_ack", "dup", "packet_id", "payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int,
                 conn: int) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self._conn = conn
        self._pending_ack = qos > 0

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, qos={self.qos}, {len(self.payload)} bytes)"


class _Countdown:
    """One future for many PUBACKs (a :meth:`Client.publish_many` call)."""

    __slots__ = ("fut", "remaining")

    def __init__(self, fut: asyncio.Future[None], remaining: int) -> None:
        self.fut = fut
        self.remaining = remaining


_Waiter = asyncio.Future[object] | _Countdown


class _Protocol(asyncio.Protocol):
    """The transport's callbacks, forwarded to the client (kept apart so the client's surface stays small)."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client._connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._client._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._connection_lost(exc)

    def pause_writing(self) -> None:
        self._client._pause_writing()

    def resume_writing(self) -> None:
        self._client._resume_writing()


class Client:
    """One MQTT 3.1.1 connection at a time; ``async with client:`` connects and disconnects.

    Args:
        host: broker host.
        port: broker port.
        client_id: the CONNECT client identifier.
        username: sent in CONNECT when not None.
        password: sent in CONNECT when not None.
        keepalive: seconds (0: none). A PINGREQ goes out every ``keepalive`` seconds; when nothing
            at all has come back by the next one, the connection is treated as lost.
        clean_session: the CONNECT clean-session flag.
        will: published by the broker if the connection ends without DISCONNECT.
        ssl: a TLS context (None: plain TCP); ``server_hostname`` defaults to ``host``.
        max_inflight: QoS 1 publishes awaiting PUBACK at once (1..65535).
        max_queued: received messages waiting for the consumer before the socket is not read.
        manual_ack: acknowledge QoS 1 messages only through :meth:`ack` (see the module docstring).
        connect_timeout: seconds for TCP (and TLS) connect plus CONNACK.
    """

    def __init__(self, host: str, port: int, *, client_id: str, username: str | None = None,
                 password: str | None = None, keepalive: int = 60, clean_session: bool = True,
                 will: Will | None = None, ssl: ssl_module.SSLContext | None = None,
                 server_hostname: str | None = None, max_inflight: int = 1000, max_queued: int = 10_000,
                 manual_ack: bool = False, connect_timeout: float = 10.0) -> None:
        if not 0 <= keepalive <= 0xFFFF:
            raise ValueError(f"keepalive {keepalive} out of range 0..65535")
        if not 1 <= max_inflight <= 0xFFFF:
            raise ValueError(f"max_inflight {max_inflight} out of range 1..65535")
        if max_queued < 1:
            raise ValueError(f"max_queued {max_queued} must be at least 1")
        if will is not None and will.qos not in (0, 1, 2):
            raise ValueError(f"will QoS {will.qos}")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.manual_ack = manual_ack
        self.connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._conn = 0
        """Connection generation: a message can only be acknowledged on the connection it came on."""
        self._buf = bytearray()
        self._connack: asyncio.Future[bool] | None = None
        self._closed: asyncio.Future[ConnectionLost | None] | None = None
        self._lost: ConnectionLost | None = None
        self._closing_reason: ConnectionLost | None = None
        self._disconnecting = False
        self._pending: dict[int, _Waiter] = {}
        self._inflight = 0
        self._next_id = 1
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._writable: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        self._heard = False
        self._inbox: collections.deque[Message] = collections.deque()
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    # ------------------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """CONNACK accepted and the connection not ended."""
        return (self._transport is not None and self._connack is not None and self._connack.done()
                and not self._connack.cancelled() and self._connack.exception() is None)

    @property
    def closed(self) -> asyncio.Future[ConnectionLost | None]:
        """Resolves when the current connection ends: None after :meth:`disconnect`, else why."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        return self._closed

    async def connect(self) -> bool:
        """Open the connection, send CONNECT, wait for CONNACK. Again after a loss: a reconnect.

        Returns:
            The CONNACK session-present flag.

        Raises:
            ConnectRefused: CONNACK with a non-zero return code (the connection is closed).
            BrokerProtocolError: the broker's answer broke MQTT 3.1.1.
            ConnectionLost: the connection ended before CONNACK.
            TimeoutError: no CONNACK within ``connect_timeout`` (the connection is closed).
            OSError: the TCP (or TLS) connection could not be made.
        """
        if self._transport is not None:
            raise RuntimeError("already connected")
        loop = self._loop = asyncio.get_running_loop()
        self._conn += 1
        self._closed = loop.create_future()
        self._lost = None
        self._closing_reason = None
        self._disconnecting = False
        self._buf.clear()
        self._inbox.clear()
        self._out.clear()
        self._ping_outstanding = False
        self._next_id = 1
        self._connack = loop.create_future()
        hostname = (self.server_hostname or self.host) if self.ssl is not None else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: _Protocol(self), self.host, self.port, ssl=self.ssl,
                                             server_hostname=hostname)
                return await self._connack
        except BaseException as exc:
            if self._transport is not None:
                if self._closing_reason is None:
                    self._closing_reason = ConnectionLost(f"connect failed: {exc!r}")
                self._transport.abort()
            raise

    async def disconnect(self) -> None:
        """Send DISCONNECT (the will is not published) and wait until the connection is closed."""
        transport = self._transport
        if transport is None:
            return
        closed = self.closed
        self._disconnecting = True
        self._flush()
        if not transport.is_closing():
            transport.write(codec.DISCONNECT_BYTES)
            transport.close()
        await asyncio.shield(closed)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a lost network would (the broker publishes the will)."""
        if self._transport is not None:
            self._closing_reason = ConnectionLost("aborted by the client")
            self._transport.abort()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            await self.disconnect()
        else:
            with contextlib.suppress(MqttError, OSError):
                await self.disconnect()

    # ---------------------------------------------------------------------------- subscriptions

    async def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        """Subscribe to ``(filter, qos)`` pairs (``$share/{group}/...`` filters too); QoS 0 or 1.

        Returns:
            The granted QoS per filter, in order.

        Raises:
            ValueError: no filter, or a QoS other than 0 and 1 (this client does not do QoS 2).
            SubscribeRefused: the broker refused a filter (SUBACK 0x80).
            ConnectionLost: the connection ended before SUBACK.
        """
        for flt, qos in filters:
            if qos not in (0, 1):
                raise ValueError(f"requested QoS {qos} for {flt!r} (0 or 1)")
        packet_id, fut = self._new_pending()
        try:
            self._write(codec.encode_subscribe(packet_id, filters))
        except BaseException:
            self._pending.pop(packet_id, None)
            raise
        granted = cast(list[int], await fut)
        refused = [flt for (flt, _), code in zip(filters, granted, strict=False) if code == codec.SUBACK_FAILURE]
        if refused or len(granted) != len(filters):
            raise SubscribeRefused(refused or [f for f, _ in filters], granted)
        return granted

    async def unsubscribe(self, *filters: str) -> None:
        """Unsubscribe and wait for UNSUBACK.

        Raises:
            ValueError: no filter.
            ConnectionLost: the connection ended before UNSUBACK.
        """
        packet_id, fut = self._new_pending()
        try:
            self._write(codec.encode_unsubscribe(packet_id, filters))
        except BaseException:
            self._pending.pop(packet_id, None)
            raise
        await fut

    # --------------------------------------------------------------------------------- publish

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish one message: QoS 0 returns once handed to the transport, QoS 1 on its PUBACK.

        Raises:
            ValueError: a QoS other than 0 and 1, or a topic over 65,535 bytes.
            ConnectionLost: not connected, or the connection ended before the PUBACK.
        """
        await self.publish_many(((topic, payload),), qos=qos, retain=retain)

    async def publish_many(self, items: Iterable[tuple[str, bytes]], *, qos: int = 1, retain: bool = False) -> None:
        """Publish ``(topic, payload)`` pairs in order, pipelined: each is written as soon as the
        in-flight window has room, and the call returns once every one is acknowledged (QoS 1) or
        written (QoS 0). Those written in one turn of the event loop leave in one system call.

        Raises:
            ValueError: a QoS other than 0 and 1, or a topic over 65,535 bytes.
            ConnectionLost: not connected, or the connection ended before every PUBACK (some of
                the messages may have reached the broker).
        """
        if qos not in (0, 1):
            raise ValueError(f"QoS {qos} (0 or 1)")
        flags = 0x01 if retain else 0
        if qos == 0:
            for topic, payload in items:
                if self._writable is not None:
                    await asyncio.shield(self._writable)
                self._write(codec.encode_publish(codec.encode_topic(topic), payload, 0, retain))
            return
        loop = self._loop
        if self._transport is None or loop is None:
            raise ConnectionLost("not connected")
        countdown = _Countdown(loop.create_future(), 0)
        encode, encode_topic, first = codec.encode_remaining_length, codec.encode_topic, 0x32 | flags
        pending = self._pending
        for topic, payload in items:
            if self._inflight >= self.max_inflight or self._slot_waiters or self._writable is not None:
                await self._wait_slot()
            transport = self._transport
            if transport is None or transport.is_closing():
                if countdown.fut.done() and not countdown.fut.cancelled():
                    countdown.fut.exception()  # retrieved: the loss is raised below
                raise self._lost or ConnectionLost("not connected")
            packet_id = self._next_packet_id()
            topic_bytes = encode_topic(topic)
            self._out.append(b"".join((bytes((first,)), encode(len(topic_bytes) + 2 + len(payload)), topic_bytes,
                                       packet_id.to_bytes(2, "big"), payload)))
            if self._flush_handle is None:
                self._flush_handle = loop.call_soon(self._flush)
            pending[packet_id] = countdown
            countdown.remaining += 1
            self._inflight += 1
        if countdown.remaining:
            await countdown.fut

    async def _wait_slot(self) -> None:
        """Wait, in line, until the window has room and the transport takes writes."""
        loop = self._loop
        assert loop is not None
        waiters = self._slot_waiters
        fut: asyncio.Future[None] = loop.create_future()
        waiters.append(fut)
        try:
            while True:
                if self._transport is None:
                    raise self._lost or ConnectionLost("not connected")
                if waiters[0] is fut and self._inflight < self.max_inflight and self._writable is None:
                    return
                if fut.done():  # woken, but the window filled again: wait in the same place
                    fresh: asyncio.Future[None] = loop.create_future()
                    waiters[waiters.index(fut)] = fresh
                    fut = fresh
                await fut
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
            self._wake_slot()

    def _wake_slot(self) -> None:
        if self._slot_waiters:
            head = self._slot_waiters[0]
            if not head.done():
                head.set_result(None)

    # -------------------------------------------------------------------------------- messages

    @property
    def messages(self) -> _Messages:
        """Received messages, in order, for ``async for`` (one consumer at a time: a message goes
        to whichever loop asks first).

        The iteration raises :class:`ConnectionLost` when the connection ends (messages received
        and not yet taken are dropped: they were never acknowledged) and stops after :meth:`disconnect`.
        """
        return _Messages(self)

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` (QoS 1: PUBACK; QoS 0: nothing). Idempotent; a message of a
        connection that has ended is not acknowledged (the broker no longer expects it)."""
        if message._pending_ack:
            message._pending_ack = False
            if message._conn == self._conn and self._transport is not None:
                self._write_quiet(codec.encode_ack(codec.PUBACK, message.packet_id))

    async def _next_message(self) -> Message:
        while True:
            if self._inbox:
                message = self._inbox.popleft()
                if self._reading_paused and len(self._inbox) <= self.max_queued // 2:
                    self._reading_paused = False
                    if self._transport is not None:
                        self._transport.resume_reading()
                return message
            if self._transport is None:
                if self._lost is not None:
                    raise self._lost
                raise StopAsyncIteration
            assert self._loop is not None
            self._inbox_waiter = self._loop.create_future()
            try:
                await self._inbox_waiter
            finally:
                self._inbox_waiter = None

    # ------------------------------------------------------------------------------- internals

    def _next_packet_id(self) -> int:
        pending = self._pending
        packet_id = self._next_id
        if packet_id in pending:
            if len(pending) >= 0xFFFF:
                raise MqttError("all 65535 packet ids are in use")
            while packet_id in pending:
                packet_id = packet_id % 0xFFFF + 1
        self._next_id = packet_id % 0xFFFF + 1
        return packet_id

    def _new_pending(self) -> tuple[int, asyncio.Future[object]]:
        if self._transport is None or self._loop is None:
            raise self._lost or ConnectionLost("not connected")
        packet_id = self._next_packet_id()
        fut: asyncio.Future[object] = self._loop.create_future()
        self._pending[packet_id] = fut
        return packet_id, fut

    def _write(self, data: bytes) -> None:
        """Queue ``data`` for the write at the end of this turn of the event loop."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._lost or ConnectionLost("not connected")
        self._out.append(data)
        if self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._flush)

    def _write_quiet(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionLost):
            self._write(data)

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        if not out:
            return
        self._out = []
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        sock = self._transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        will = self.will
        self._transport.write(codec.encode_connect(
            self.client_id, username=self.username, password=self.password, keepalive=self.keepalive,
            clean_session=self.clean_session,
            will=(will.topic, will.payload, will.qos, will.retain) if will is not None else None))

    def _connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for handle in (self._ping_timer, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._ping_timer = self._flush_handle = None
        self._out.clear()
        reason = self._closing_reason
        if reason is None and (exc is not None or not self._disconnecting):
            reason = ConnectionLost(f"connection lost: {exc}" if exc else "connection closed by the broker")
            reason.__cause__ = exc
        self._lost = reason
        failure = reason if reason is not None else ConnectionLost("disconnected")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(failure)
        pending, self._pending = self._pending, {}
        self._inflight = 0
        for waiter in {id(w): w for w in pending.values()}.values():
            fut = waiter.fut if isinstance(waiter, _Countdown) else waiter
            if not fut.done():
                fut.set_exception(failure)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        for waiter_fut in self._slot_waiters:
            if not waiter_fut.done():
                waiter_fut.set_result(None)
        self._inbox.clear()
        self._reading_paused = False
        if self._inbox_waiter is not None and not self._inbox_waiter.done():
            self._inbox_waiter.set_result(None)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(reason)

    def _pause_writing(self) -> None:
        if self._writable is None and self._loop is not None:
            self._writable = self._loop.create_future()

    def _resume_writing(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None
            self._wake_slot()

    def _fail(self, reason: ConnectionLost) -> None:
        logger.warning("%s: %s; closing the connection", self.client_id, reason)
        self._closing_reason = reason
        if self._transport is not None:
            self._transport.abort()

    def _ping(self) -> None:
        self._ping_timer = None
        if self._transport is None or self._loop is None:
            return
        if self._ping_outstanding and not self._heard:
            self._fail(ConnectionLost(f"no PINGRESP (nor anything else) within keep-alive {self.keepalive}s"))
            return
        self._ping_outstanding = True
        self._heard = False
        self._write_quiet(codec.PINGREQ_BYTES)
        self._ping_timer = self._loop.call_later(self.keepalive, self._ping)

    def _data_received(self, data: bytes) -> None:
        self._heard = True
        buf = self._buf
        if buf:
            buf += data
            source: bytes | bytearray = buf
        else:
            source = data
        delivered = len(self._inbox)
        try:
            packets, used = codec.split_packets(source)
            for first, body in packets:
                self._handle(first, body)
                if self._transport is None or self._closing_reason is not None:
                    return
        except ProtocolError as exc:
            self._fail(BrokerProtocolError(str(exc)))
            return
        if source is buf:
            del buf[:used]
        elif used < len(data):
            buf += data[used:]
        if len(self._inbox) != delivered:
            if self._inbox_waiter is not None and not self._inbox_waiter.done():
                self._inbox_waiter.set_result(None)
            if len(self._inbox) >= self.max_queued and not self._reading_paused and self._transport is not None:
                self._reading_paused = True
                self._transport.pause_reading()

    def _handle(self, first: int, body: bytes) -> None:
        kind, flags = first >> 4, first & 0x0F
        connack = self._connack
        if connack is None or not connack.done():
            if kind != codec.CONNACK:
                raise ProtocolError(f"{codec.PACKET_NAMES.get(kind, hex(first))} before CONNACK")
            self._on_connack(flags, body)
            return
        if kind == codec.PUBLISH:
            p = codec.decode_publish(flags, body, strict=False)
            if p.qos == 2:
                raise ProtocolError("QoS 2 PUBLISH (this client subscribes at QoS 0 or 1 only)")
            if p.qos and p.packet_id == 0:
                raise ProtocolError("PUBLISH with packet identifier 0")
            self._inbox.append(Message(p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, self._conn))
        elif kind == codec.PUBACK:
            self._on_puback(codec.decode_packet_id("PUBACK", flags, body))
        elif kind == codec.SUBACK:
            packet_id, granted = codec.decode_suback(flags, body)
            self._resolve(packet_id, granted)
        elif kind == codec.UNSUBACK:
            self._resolve(codec.decode_packet_id("UNSUBACK", flags, body), None)
        elif kind == codec.PINGRESP:
            codec.check_empty("PINGRESP", flags, body)
            self._ping_outstanding = False
        elif kind == codec.CONNACK:
            raise ProtocolError("a second CONNACK")
        else:
            raise ProtocolError(f"unexpected {codec.PACKET_NAMES.get(kind, 'packet')} (first byte 0x{first:02x})")

    def _on_puback(self, packet_id: int) -> None:
        waiter = self._pending.pop(packet_id, None)
        if waiter is None:
            logger.debug("%s: PUBACK for packet id %d, which is not in flight", self.client_id, packet_id)
            return
        if isinstance(waiter, _Countdown):
            self._inflight -= 1
            waiter.remaining -= 1
            if not waiter.remaining and not waiter.fut.done():
                waiter.fut.set_result(None)
            if self._slot_waiters:
                self._wake_slot()
        else:  # a SUBACK / UNSUBACK was expected for this id
            self._pending[packet_id] = waiter
            raise ProtocolError(f"PUBACK for packet id {packet_id}, which is a (UN)SUBSCRIBE")

    def _resolve(self, packet_id: int, value: object) -> None:
        waiter = self._pending.pop(packet_id, None)
        if isinstance(waiter, _Countdown):
            self._pending[packet_id] = waiter
            raise ProtocolError(f"SUBACK/UNSUBACK for packet id {packet_id}, which is a PUBLISH")
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    def _on_connack(self, flags: int, body: bytes) -> None:
        session_present, code = codec.decode_connack(flags, body)
        connack = self._connack
        assert connack is not None
        if code:
            refused = ConnectRefused(code)
            self._closing_reason = ConnectionLost(str(refused))
            connack.set_exception(refused)
            if self._transport is not None:
                self._transport.close()
            return
        connack.set_result(session_present)
        if self.keepalive > 0 and self._loop is not None:
            self._ping_timer = self._loop.call_later(self.keepalive, self._ping)


class _Messages:
    """``async for message in client.messages``; see :attr:`Client.messages`."""

    __slots__ = ("_client", "_last")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._last: Message | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        client = self._client
        last, self._last = self._last, None
        if last is not None and not client.manual_ack:
            client.ack(last)  # the loop came back for more: the body accepted ``last``
        message = await client._next_message()
        self._last = message
        return message

