"""A lean asyncio MQTT 3.1.1 client, for simulating thousands of devices from one process.

Built on :class:`asyncio.Protocol` with a hand-written codec, because a device simulator spends
most of its CPU in the client: no stream reader/writer pair, no task per connection (the
keep-alive is one ``call_later`` timer), one callback per received packet. It is an external
client: it talks to any broker over TCP and imports nothing from the server packages.

::

    MqttClient.connect() ──CONNECT──▶ broker ──CONNACK──▶ session_present (or ConnectRefused)
    publish(qos=1)       ──PUBLISH──▶        ──PUBACK───▶ the returned future resolves
    subscribe()          ──SUBSCRIBE─▶       ──SUBACK───▶ granted QoS per filter (0x80: refused)
    on_message(Message)  ◀──PUBLISH──        ◀──PUBACK── sent after on_message returns (QoS 1)
    keep-alive timer     ──PINGREQ──▶        ──PINGRESP─▶ none within keep-alive: ConnectionLost

Errors::

    MqttError
     ├── ConnectRefused       CONNACK return code != 0 (``code``: 1..5); terminal for that CONNECT
     └── ConnectionLost       also a ConnectionError (so an OSError): the connection ended; every
                              pending publish / subscribe future fails with it

Every byte is encoded and decoded by :mod:`mqchat.mqtt.codec`, the core's MQTT codec, which the
broker reads them with too (it is shared code, not a server internal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, cast

from mqchat.mqtt import codec
from mqchat.mqtt.codec import ProtocolError

logger = logging.getLogger(__name__)

CONNACK_REASONS: Final = codec.CONNACK_REASONS
"""CONNACK return codes (MQTT 3.1.1 §3.2.2.3) and what they mean."""


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


class ConnectionLost(MqttError, ConnectionError):
    """The connection ended (network loss, server close, missing PINGRESP, or :meth:`MqttClient.abort`)."""


@dataclass(slots=True)
class Message:
    """A PUBLISH received from the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


# ---------------------------------------------------------------------------------------- client


class _Protocol(asyncio.Protocol):
    """The transport's callbacks, forwarded to the client (kept apart so the client's surface stays small)."""

    __slots__ = ("_client",)

    def __init__(self, client: MqttClient) -> None:
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


class MqttClient:
    """One MQTT 3.1.1 connection.

    Args:
        client_id: the CONNECT client identifier.
        username: sent in CONNECT when not None.
        password: sent in CONNECT when not None.
        keepalive: seconds; a PINGREQ is sent every ``keepalive`` seconds and the connection is
            treated as lost when its PINGRESP has not come back by the next one (0: no pings).
        clean_session: the CONNECT clean-session flag.
        will: ``(topic, payload, qos, retain)``, published by the broker if the connection ends
            without DISCONNECT (see :meth:`abort`).
        on_message: called with each PUBLISH received, in order, on the event loop; for QoS 1 the
            PUBACK is sent when it returns. An exception it raises is logged and the message acked.
    """

    def __init__(self, *, client_id: str, username: str | None = None, password: str | None = None,
                 keepalive: int = 60, clean_session: bool = True,
                 will: tuple[str, bytes, int, bool] | None = None,
                 on_message: Callable[[Message], None] | None = None) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._connack: asyncio.Future[bool] | None = None
        self._closed: asyncio.Future[BaseException | None] | None = None
        self._pending: dict[int, asyncio.Future[object]] = {}
        self._qos2_out: set[int] = set()
        """Outgoing QoS 2 packet ids past PUBREC (waiting for PUBCOMP)."""
        self._qos2_in: set[int] = set()
        """Incoming QoS 2 packet ids delivered and not yet released (PUBREL)."""
        self._next_id = 1
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        self._writable: asyncio.Future[None] | None = None
        self._closing_reason: BaseException | None = None
        """Why the connection is being closed by this side (None: by the broker, or by disconnect())."""
        self._disconnecting = False
        self._corked: list[bytes] | None = None
        """Packets held back by :meth:`batch` (or while a read is handled), written as one."""

    # ------------------------------------------------------------------------------------ public

    @property
    def closed(self) -> asyncio.Future[BaseException | None]:
        """Resolves when the connection ends: None after :meth:`disconnect`, else the :class:`ConnectionLost`."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        return self._closed

    @property
    def connected(self) -> bool:
        """CONNACK accepted and the connection not ended."""
        return (self._transport is not None and self._connack is not None and self._connack.done()
                and not self._connack.cancelled() and self._connack.exception() is None)

    # The CONNACK wait is bounded by default, like the TCP connect: a simulator must not hang on a silent port.
    async def connect(self, host: str, port: int, *, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Open the TCP connection, send CONNECT and wait for CONNACK.

        May be called again once the previous connection has ended (a reconnect).

        Returns:
            The CONNACK session-present flag.

        Raises:
            ConnectRefused: CONNACK with a non-zero return code (the connection is closed).
            TimeoutError: no CONNACK within ``timeout`` seconds (the connection is closed).
            OSError: the TCP connection failed, or ended before CONNACK (:class:`ConnectionLost`).
        """
        if self._transport is not None:
            raise RuntimeError("already connected")
        loop = self._loop = asyncio.get_running_loop()
        if self._closed is None or self._closed.done():
            self._closed = loop.create_future()
        self._buf.clear()
        self._ping_outstanding = False
        self._closing_reason = None
        self._disconnecting = False
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: _Protocol(self), host, port)
                return await self._connack
        except BaseException as exc:
            if self._transport is not None:
                if self._closing_reason is None:
                    self._closing_reason = ConnectionLost(f"connect failed: {exc!r}")
                self._transport.abort()
            raise

    async def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        """Subscribe to ``(filter, qos)`` pairs.

        Returns:
            The granted QoS per filter, in order (0x80: refused).

        Raises:
            ConnectionLost: the connection ended before SUBACK.
        """
        packet_id, fut = self._new_pending()
        self._write(codec.encode_subscribe(packet_id, filters))
        granted = await fut
        assert isinstance(granted, list)
        return granted

    async def unsubscribe(self, *filters: str) -> None:
        """Unsubscribe and wait for UNSUBACK.

        Raises:
            ConnectionLost: the connection ended before UNSUBACK.
        """
        packet_id, fut = self._new_pending()
        self._write(codec.encode_unsubscribe(packet_id, filters))
        await fut

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish; QoS 0 returns once written, QoS 1 when PUBACK arrives, QoS 2 when PUBCOMP does.

        Waits first while the transport's write buffer is over its high-water mark.

        Raises:
            ConnectionLost: the connection ended before the acknowledgement.
        """
        if self._writable is not None:
            await asyncio.shield(self._writable)
        fut = self.publish_nowait(topic, payload, qos, retain)
        if fut is not None:
            await fut

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0,
                       retain: bool = False) -> asyncio.Future[None] | None:
        """Write a PUBLISH now, without waiting (no back-pressure).

        Returns:
            For QoS 1 and 2, a future resolved by PUBACK / PUBCOMP (failed with
            :class:`ConnectionLost` if the connection ends first); None for QoS 0.

        Raises:
            ConnectionLost: not connected.
        """
        if qos == 0:
            self._write(codec.encode_publish(codec.encode_topic(topic), payload, 0, retain))
            return None
        if qos not in (1, 2):
            raise ValueError(f"QoS {qos}")
        packet_id, fut = self._new_pending()
        try:
            self._write(codec.encode_publish(codec.encode_topic(topic), payload, qos, retain, packet_id))
        except ConnectionLost:
            # nothing was sent: the caller gets the error now, not a future failed later that
            # nobody holds
            del self._pending[packet_id]
            fut.cancel()
            raise
        return fut  # type: ignore[return-value]  # resolved with None by PUBACK / PUBCOMP

    async def disconnect(self) -> None:
        """Send DISCONNECT, close the connection and wait until it is closed (no will is published)."""
        transport = self._transport
        if transport is None:
            return
        closed = self.closed
        self._disconnecting = True
        if self._corked is not None:  # inside batch(): what was batched goes first
            self._uncork()
        self._write_quiet(codec.DISCONNECT_BYTES)
        transport.close()
        await asyncio.shield(closed)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Send every packet written inside the block in one write at its end (one system call
        for many PUBLISHes). Acknowledgements for a batch of received packets are sent this way too.
        """
        if self._corked is not None:  # nested: the outer block flushes
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            self._uncork()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a lost network would: the broker publishes the will.

        :attr:`closed` then resolves with a :class:`ConnectionLost`.
        """
        if self._transport is not None:
            self._closing_reason = ConnectionLost("aborted by the client")
            self._transport.abort()

    # --------------------------------------------------------------------------------- internals

    def _new_pending(self) -> tuple[int, asyncio.Future[object]]:
        if self._transport is None or self._loop is None:
            raise ConnectionLost("not connected")
        pending = self._pending
        packet_id = self._next_id
        if packet_id in pending:
            if len(pending) >= 0xFFFF:
                raise MqttError("all 65535 packet ids are in use")
            while packet_id in pending:
                packet_id = packet_id % 0xFFFF + 1
        self._next_id = packet_id % 0xFFFF + 1
        fut: asyncio.Future[object] = self._loop.create_future()
        pending[packet_id] = fut
        return packet_id, fut

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("not connected")
        if self._corked is not None:
            self._corked.append(data)
        else:
            transport.write(data)

    def _write_quiet(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._corked is not None:
                self._corked.append(data)
            else:
                # uvloop: a transport whose socket failed can be closed before it says it is closing
                with contextlib.suppress(RuntimeError):
                    transport.write(data)

    def _uncork(self) -> None:
        out, self._corked = self._corked, None
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport.write(codec.encode_connect(self.client_id, username=self.username, password=self.password,
                                       keepalive=self.keepalive, clean_session=self.clean_session, will=self.will))

    def _connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        reason = self._closing_reason
        if reason is None and (exc is not None or not self._disconnecting):
            reason = ConnectionLost(f"connection lost: {exc}" if exc else "connection closed by the broker")
            reason.__cause__ = exc
        lost = reason if reason is not None else ConnectionLost("disconnected")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(lost)
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(lost)
        self._qos2_out.clear()
        self._qos2_in.clear()
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

    def _fail(self, reason: BaseException) -> None:
        logger.warning("%s: %s; closing the connection", self.client_id, reason)
        self._closing_reason = reason if isinstance(reason, ConnectionLost) else ConnectionLost(str(reason))
        if self._transport is not None:
            self._transport.abort()

    def _ping(self) -> None:
        self._ping_timer = None
        if self._transport is None:
            return
        if self._ping_outstanding:
            self._fail(ConnectionLost(f"no PINGRESP within {self.keepalive}s"))
            return
        self._ping_outstanding = True
        self._write_quiet(codec.PINGREQ_BYTES)
        assert self._loop is not None
        self._ping_timer = self._loop.call_later(self.keepalive, self._ping)

    def _data_received(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            source: bytes | bytearray = buf
        else:
            source = data
        corked = self._corked is None
        if corked:  # the acks for everything in this read go out in one write
            self._corked = []
        try:
            packets, used = codec.split_packets(source)
            for first, body in packets:
                self._handle(first, body)
                if self._transport is None:
                    return
        except ProtocolError as exc:
            self._fail(exc)
            return
        finally:
            if corked:
                self._uncork()
        if source is buf:
            del buf[:used]
        elif used < len(data):
            buf += data[used:]

    def _handle(self, first: int, body: bytes) -> None:
        kind, flags = first >> 4, first & 0x0F
        if kind == codec.PUBLISH:
            p = codec.decode_publish(flags, body, strict=False)
            packet_id = p.packet_id
            if p.qos == 2:
                if packet_id in self._qos2_in:
                    self._write_quiet(codec.encode_ack(codec.PUBREC, packet_id))
                    return  # a redelivery of a message already handed over
                self._qos2_in.add(packet_id)
            if self.on_message is not None:
                try:
                    self.on_message(Message(p.topic, p.payload, p.qos, p.retain, p.dup))
                except Exception:
                    logger.exception("%s: on_message failed for a message on %s", self.client_id, p.topic)
            if p.qos == 1:
                self._write_quiet(codec.encode_ack(codec.PUBACK, packet_id))
            elif p.qos == 2:
                self._write_quiet(codec.encode_ack(codec.PUBREC, packet_id))
            return
        if kind in (codec.PUBACK, codec.PUBCOMP, codec.UNSUBACK):
            packet_id = codec.decode_packet_id(codec.PACKET_NAMES[kind], flags, body)
            if kind == codec.PUBCOMP:
                self._qos2_out.discard(packet_id)
            self._resolve(packet_id, None)
        elif kind == codec.PUBREC:
            packet_id = codec.decode_packet_id("PUBREC", flags, body)
            self._qos2_out.add(packet_id)
            self._write_quiet(codec.encode_ack(codec.PUBREL, packet_id))
        elif kind == codec.PUBREL:
            packet_id = codec.decode_packet_id("PUBREL", flags, body, required_flags=0x02)
            self._qos2_in.discard(packet_id)
            self._write_quiet(codec.encode_ack(codec.PUBCOMP, packet_id))
        elif kind == codec.SUBACK:
            packet_id, granted = codec.decode_suback(flags, body)
            self._resolve(packet_id, granted)
        elif kind == codec.PINGRESP:
            codec.check_empty("PINGRESP", flags, body)
            self._ping_outstanding = False
        elif kind == codec.CONNACK:
            self._on_connack(flags, body)
        else:
            raise ProtocolError(f"unexpected packet type 0x{first:02x}")

    def _resolve(self, packet_id: int, value: object) -> None:
        fut = self._pending.pop(packet_id, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _on_connack(self, flags: int, body: bytes) -> None:
        session_present, code = codec.decode_connack(flags, body)
        connack = self._connack
        if connack is None or connack.done():
            raise ProtocolError("unexpected CONNACK")
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
