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

The codec functions (``encode_*``, :func:`split_packets`) are pure and usable on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, cast

logger = logging.getLogger(__name__)

# Fixed-header first bytes (type << 4 | flags) of the packets a client sends or receives.
CONNECT: Final = 0x10
CONNACK: Final = 0x20
PUBLISH: Final = 0x30
PUBACK: Final = 0x40
PUBREC: Final = 0x50
PUBREL: Final = 0x62  # PUBREL, SUBSCRIBE and UNSUBSCRIBE carry the reserved flags 0b0010
PUBCOMP: Final = 0x70
SUBSCRIBE: Final = 0x82
SUBACK: Final = 0x90
UNSUBSCRIBE: Final = 0xA2
UNSUBACK: Final = 0xB0
PINGREQ: Final = 0xC0
PINGRESP: Final = 0xD0
DISCONNECT: Final = 0xE0

MAX_REMAINING_LENGTH: Final = 268_435_455
"""The largest remaining length four bytes can encode (MQTT 3.1.1 §2.2.3)."""

#: CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
CONNACK_REASONS: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_PINGREQ_BYTES: Final = bytes([PINGREQ, 0])
_DISCONNECT_BYTES: Final = bytes([DISCONNECT, 0])


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


class ProtocolError(MqttError):
    """The peer sent bytes that are not MQTT 3.1.1 (the client closes the connection)."""


@dataclass(slots=True)
class Message:
    """A PUBLISH received from the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


# ----------------------------------------------------------------------------------------- codec


def encode_remaining_length(n: int) -> bytes:
    """The variable-length "remaining length" of a fixed header.

    Raises:
        ValueError: ``n`` is negative or above :data:`MAX_REMAINING_LENGTH`.
    """
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range")
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((first, n)) + body
    return bytes((first,)) + encode_remaining_length(n) + body


def _str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def encode_connect(client_id: str, *, username: str | None = None, password: str | None = None,
                   keepalive: int = 60, clean_session: bool = True,
                   will: tuple[str, bytes, int, bool] | None = None) -> bytes:
    """A CONNECT packet (protocol level 4); ``will`` is ``(topic, payload, qos, retain)``."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive} out of range")
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        if qos not in (0, 1, 2):
            raise ValueError(f"will QoS {qos}")
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    return _packet(CONNECT, b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big") + payload)


def encode_publish(topic: str | bytes, payload: bytes, *, qos: int = 0, retain: bool = False, dup: bool = False,
                   packet_id: int = 0) -> bytes:
    """A PUBLISH packet; ``packet_id`` is required (1..65535) for QoS 1 and 2, ignored for QoS 0."""
    raw = topic.encode() if isinstance(topic, str) else topic
    first = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    head = len(raw).to_bytes(2, "big") + raw
    if qos:
        if not 0 < packet_id <= 0xFFFF:
            raise ValueError(f"packet id {packet_id} out of range")
        head += packet_id.to_bytes(2, "big")
    n = len(head) + len(payload)
    if n < 128:
        return bytes((first, n)) + head + payload
    return bytes((first,)) + encode_remaining_length(n) + head + payload


def encode_ack(first: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP / UNSUBACK: a fixed header and a packet id."""
    return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))


def encode_subscribe(packet_id: int, filters: tuple[tuple[str, int], ...]) -> bytes:
    """A SUBSCRIBE packet for ``(filter, qos)`` pairs."""
    body = packet_id.to_bytes(2, "big") + b"".join(_str(f) + bytes((q,)) for f, q in filters)
    return _packet(SUBSCRIBE, body)


def encode_unsubscribe(packet_id: int, filters: tuple[str, ...]) -> bytes:
    """An UNSUBSCRIBE packet."""
    return _packet(UNSUBSCRIBE, packet_id.to_bytes(2, "big") + b"".join(_str(f) for f in filters))


def split_packets(buf: bytes | bytearray,
                  max_length: int = MAX_REMAINING_LENGTH) -> tuple[list[tuple[int, bytes]], int]:
    """The complete packets at the start of ``buf``, as ``(first byte, body)``, and how many bytes they took.

    An incomplete packet at the end is left for the next call (with more bytes appended).

    Raises:
        ProtocolError: a remaining length longer than four bytes or above ``max_length``.
    """
    packets: list[tuple[int, bytes]] = []
    pos = 0
    end = len(buf)
    while end - pos >= 2:
        first = buf[pos]
        length = buf[pos + 1]
        i = pos + 2
        if length & 0x80:
            length &= 0x7F
            shift = 7
            while True:
                if i >= end:
                    return packets, pos
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than four bytes")
        if length > max_length:
            raise ProtocolError(f"packet of {length} bytes is over the limit of {max_length}")
        if end - i < length:
            break
        packets.append((first, bytes(buf[i : i + length])))
        pos = i + length
    return packets, pos


def decode_publish(first: int, body: bytes) -> tuple[Message, int]:
    """A PUBLISH body → the message and its packet id (0 for QoS 0).

    Raises:
        ProtocolError: a malformed packet.
    """
    qos = (first >> 1) & 0x03
    if qos == 3 or len(body) < 2:
        raise ProtocolError("malformed PUBLISH")
    n = (body[0] << 8) | body[1]
    start = 2 + n
    packet_id = 0
    if qos:
        if len(body) < start + 2:
            raise ProtocolError("malformed PUBLISH")
        packet_id = (body[start] << 8) | body[start + 1]
        start += 2
    elif len(body) < start:
        raise ProtocolError("malformed PUBLISH")
    try:
        topic = body[2 : 2 + n].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("PUBLISH topic is not UTF-8") from exc
    return Message(topic, body[start:], qos, bool(first & 0x01), bool(first & 0x08)), packet_id


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
        self._write(encode_subscribe(packet_id, filters))
        granted = await fut
        assert isinstance(granted, list)
        return granted

    async def unsubscribe(self, *filters: str) -> None:
        """Unsubscribe and wait for UNSUBACK.

        Raises:
            ConnectionLost: the connection ended before UNSUBACK.
        """
        packet_id, fut = self._new_pending()
        self._write(encode_unsubscribe(packet_id, filters))
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
            self._write(encode_publish(topic, payload, retain=retain))
            return None
        if qos not in (1, 2):
            raise ValueError(f"QoS {qos}")
        packet_id, fut = self._new_pending()
        try:
            self._write(encode_publish(topic, payload, qos=qos, retain=retain, packet_id=packet_id))
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
        self._write_quiet(_DISCONNECT_BYTES)
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
        self._transport.write(encode_connect(self.client_id, username=self.username, password=self.password,
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
        self._write_quiet(_PINGREQ_BYTES)
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
            packets, used = split_packets(source)
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
        kind = first & 0xF0
        if kind == PUBLISH:
            msg, packet_id = decode_publish(first, body)
            if msg.qos == 2:
                if packet_id in self._qos2_in:
                    self._write_quiet(encode_ack(PUBREC, packet_id))
                    return  # a redelivery of a message already handed over
                self._qos2_in.add(packet_id)
            if self.on_message is not None:
                try:
                    self.on_message(msg)
                except Exception:
                    logger.exception("%s: on_message failed for a message on %s", self.client_id, msg.topic)
            if msg.qos == 1:
                self._write_quiet(encode_ack(PUBACK, packet_id))
            elif msg.qos == 2:
                self._write_quiet(encode_ack(PUBREC, packet_id))
            return
        if kind in (PUBACK, PUBCOMP, UNSUBACK):
            packet_id = self._packet_id(body)
            if kind == PUBCOMP:
                self._qos2_out.discard(packet_id)
            self._resolve(packet_id, None)
        elif kind == PUBREC:
            packet_id = self._packet_id(body)
            self._qos2_out.add(packet_id)
            self._write_quiet(encode_ack(PUBREL, packet_id))
        elif kind == PUBREL & 0xF0:
            packet_id = self._packet_id(body)
            self._qos2_in.discard(packet_id)
            self._write_quiet(encode_ack(PUBCOMP, packet_id))
        elif kind == SUBACK:
            self._resolve(self._packet_id(body), list(body[2:]))
        elif kind == PINGRESP:
            self._ping_outstanding = False
        elif kind == CONNACK:
            self._on_connack(body)
        else:
            raise ProtocolError(f"unexpected packet type 0x{first:02x}")

    @staticmethod
    def _packet_id(body: bytes) -> int:
        if len(body) < 2:
            raise ProtocolError("packet id missing")
        return (body[0] << 8) | body[1]

    def _resolve(self, packet_id: int, value: object) -> None:
        fut = self._pending.pop(packet_id, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _on_connack(self, body: bytes) -> None:
        if len(body) != 2:
            raise ProtocolError("malformed CONNACK")
        connack = self._connack
        if connack is None or connack.done():
            raise ProtocolError("unexpected CONNACK")
        code = body[1]
        if code:
            refused = ConnectRefused(code)
            self._closing_reason = ConnectionLost(str(refused))
            connack.set_exception(refused)
            if self._transport is not None:
                self._transport.close()
            return
        connack.set_result(bool(body[0] & 0x01))
        if self.keepalive > 0 and self._loop is not None:
            self._ping_timer = self._loop.call_later(self.keepalive, self._ping)
