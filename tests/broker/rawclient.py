"""A blocking MQTT 3.1.1 client on a raw socket, for tests that must see every flag on the wire.

It does nothing behind the test's back: no automatic PUBACK, no keep-alive pings, no reconnects.
Every expectation that is not met raises ``AssertionError`` with what was seen instead, so a test
that is expected to fail on plain amqtt fails for the stated reason and not for a harness error.

Every byte comes from :mod:`mqchat.mqtt.codec`. The few builders here (:func:`connect_raw`,
:func:`publish`, :func:`subscribe`, :func:`unsubscribe`) put the codec's primitives together so a
test can also send what no well-behaved client would (QoS 3, packet id 0, wrong fixed-header flags).
"""

from __future__ import annotations

import contextlib
import socket
import time

from mqchat.mqtt import codec
from mqchat.mqtt.codec import Publish


class Closed(Exception):
    """The server closed the connection (EOF or reset) while a packet was expected."""


# -- packets a test may want malformed ------------------------------------------------------------


def connect_raw(payload: bytes, *, protocol: bytes = b"MQTT", level: int = 4, flags: int = 0x02,
                keepalive: int = 60) -> bytes:
    """A CONNECT with every header field under the caller's control; ``payload`` is sent as is."""
    variable = codec.encode_string(protocol) + bytes([level, flags]) + keepalive.to_bytes(2, "big")
    return codec.packet(codec.CONNECT << 4, variable + payload)


def publish(topic: str | bytes, payload: bytes = b"", *, qos: int = 0, packet_id: int = 1,
            retain: bool = False, dup: bool = False) -> bytes:
    """A PUBLISH written as given: ``qos`` may be 3, ``packet_id`` 0, ``dup`` set at QoS 0 and
    ``topic`` bytes that are not UTF-8 (``packet_id`` is only sent when ``qos`` is above 0)."""
    return codec.encode_publish(codec.encode_topic(topic), payload, qos, retain, packet_id, dup)


def subscribe(packet_id: int, filters: list[tuple[str | bytes, int]], *, first_byte: int = 0x82) -> bytes:
    """A SUBSCRIBE written as given: the requested-QoS byte may be 3 or have reserved bits set."""
    body = packet_id.to_bytes(2, "big") + b"".join(codec.encode_string(f) + bytes([q]) for f, q in filters)
    return codec.packet(first_byte, body)


def unsubscribe(packet_id: int, filters: list[str | bytes], *, first_byte: int = 0xA2) -> bytes:
    """An UNSUBSCRIBE written as given (any fixed-header flags, any filter bytes)."""
    return codec.packet(first_byte, packet_id.to_bytes(2, "big") + b"".join(codec.encode_string(f) for f in filters))


# -- reading ------------------------------------------------------------------------------------


class PacketReader:
    """Reads packets from one socket, keeping partial data across timeouts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = codec.FrameReader()
        self.ready: list[tuple[int, bytes]] = []

    def read(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next packet: ``(first byte, body)``.

        Raises:
            Closed: the connection ended (EOF or ECONNRESET) before a complete packet.
            TimeoutError: no complete packet within ``timeout`` seconds (partial data is kept).
        """
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete packet within {timeout}s ({self.frames.buffered} bytes buffered)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                raise Closed("connection reset") from None
            if not chunk:
                raise Closed("EOF")
            self.ready += self.frames.feed(chunk)
        return self.ready.pop(0)


def parse_publish(first: int, body: bytes) -> Publish:
    """Decode a PUBLISH from the server (``packet_id`` is 0 at QoS 0)."""
    if first >> 4 != codec.PUBLISH:
        raise ValueError(f"not a PUBLISH: first byte {first:#04x}, body {body[:40]!r}")
    return codec.decode_publish(first & 0x0F, body, strict=False)


def wait_closed(sock: socket.socket, within: float) -> bytes:
    """Read until the server closes the connection; returns what it sent before closing.

    Raises:
        TimeoutError: still open after ``within`` seconds (with what was received so far).
    """
    deadline = time.monotonic() + within
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"connection still open after {within}s (server sent {got[:60]!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def describe(first: int, body: bytes) -> str:
    name = codec.PACKET_NAMES.get(first >> 4, f"type {first >> 4}")
    if first >> 4 == codec.PUBLISH:
        return repr(parse_publish(first, body))
    return f"{name} (first byte {first:#04x}, body {body[:40].hex()})"


def open_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a connection the server has already closed (that is what many tests expect)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def assert_closed(sock: socket.socket, within: float, *, what: str, allowed: bytes = b"") -> float:
    """Assert the server closes ``sock`` within ``within`` seconds, sending nothing but ``allowed``.

    Returns the seconds it took.
    """
    start = time.monotonic()
    try:
        got = wait_closed(sock, within)
    except TimeoutError as exc:
        raise AssertionError(f"{what}: the server did not close the connection within {within}s ({exc})") from None
    assert got == allowed, f"{what}: the server sent {got[:80]!r} before closing; expected {allowed!r}"
    return time.monotonic() - start


class RawClient:
    """One connection: CONNECT on construction, then explicit packets."""

    def __init__(self, port: int, client_id: str, *, clean: bool = True, keepalive: int = 60,
                 username: str | None = None, password: str | None = None,
                 will: tuple[str, bytes, int, bool] | None = None, expect_rc: int = 0) -> None:
        self.client_id = client_id
        self.sock = open_socket(port)
        self.reader = PacketReader(self.sock)
        self._next_id = 0
        self._stash: list[tuple[int, bytes]] = []  # PUBLISHes read while waiting for an acknowledgement
        self.sock.sendall(codec.encode_connect(client_id, username=username, password=password, keepalive=keepalive,
                                                 will=will, clean_session=clean))
        first, body = self.read(what="CONNACK")
        assert (first, len(body)) == (0x20, 2), f"{client_id}: expected CONNACK, got {describe(first, body)}"
        self.session_present = bool(body[0] & 0x01)
        self.return_code = body[1]
        assert self.return_code == expect_rc, (
            f"{client_id}: CONNACK return code {self.return_code:#04x}, expected {expect_rc:#04x}")

    def packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 5.0, *, what: str = "a packet") -> tuple[int, bytes]:
        """The next packet; AssertionError if the connection closes or nothing comes."""
        try:
            return self.reader.read(timeout)
        except Closed as exc:
            raise AssertionError(f"{self.client_id}: connection closed ({exc}) while waiting for {what}") from None
        except TimeoutError:
            raise AssertionError(f"{self.client_id}: nothing received within {timeout}s (waiting for {what})") from None

    def _next_reply(self, timeout: float, what: str) -> tuple[int, bytes]:
        """The next packet that is not a PUBLISH; PUBLISHes read meanwhile are kept for later."""
        deadline = time.monotonic() + timeout
        while True:
            first, body = self.read(max(0.01, deadline - time.monotonic()), what=what)
            if first >> 4 != codec.PUBLISH:
                return first, body
            self._stash.append((first, body))

    def _next_publish(self, timeout: float) -> tuple[int, bytes]:
        if self._stash:
            return self._stash.pop(0)
        return self.read(timeout, what="PUBLISH")

    def subscribe(self, filters: list[tuple[str, int]], timeout: float = 5.0) -> list[int]:
        """SUBSCRIBE and return the SUBACK's return codes."""
        pid = self.packet_id()
        self.send(codec.encode_subscribe(pid, filters))
        first, body = self._next_reply(timeout, "SUBACK")
        assert first == 0x90, f"{self.client_id}: expected SUBACK, got {describe(first, body)}"
        assert int.from_bytes(body[:2], "big") == pid, f"{self.client_id}: SUBACK for another packet id"
        return list(body[2:])

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """PUBLISH; at QoS 1 wait for the PUBACK."""
        pid = self.packet_id() if qos else 0
        self.send(codec.encode_publish(codec.encode_topic(topic), payload, qos, retain, pid))
        if qos == 1:
            first, body = self._next_reply(5.0, "PUBACK")
            assert (first, int.from_bytes(body, "big")) == (0x40, pid), (
                f"{self.client_id}: expected PUBACK {pid}, got {describe(first, body)}")

    def recv_publish(self, timeout: float = 5.0, *, ack: bool = False) -> Publish:
        """The next packet, which must be a PUBLISH; ``ack`` sends its PUBACK."""
        first, body = self._next_publish(timeout)
        assert first >> 4 == codec.PUBLISH, f"{self.client_id}: expected PUBLISH, got {describe(first, body)}"
        message = parse_publish(first, body)
        if ack and message.qos == 1:
            self.puback(message.packet_id)
        return message

    def puback(self, packet_id: int) -> None:
        self.send(codec.encode_ack(codec.PUBACK, packet_id))

    def collect(self, for_s: float, *, ack: bool = True) -> list[Publish]:
        """Every PUBLISH that arrives within ``for_s`` seconds (acked if ``ack``)."""
        got: list[Publish] = []
        deadline = time.monotonic() + for_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                first, body = self._stash.pop(0) if self._stash else self.reader.read(left)
            except TimeoutError:
                break
            except Closed as exc:
                raise AssertionError(f"{self.client_id}: connection closed ({exc}) while collecting; "
                                     f"got {got}") from None
            assert first >> 4 == codec.PUBLISH, f"{self.client_id}: expected PUBLISH, got {describe(first, body)}"
            message = parse_publish(first, body)
            if ack and message.qos == 1:
                self.puback(message.packet_id)
            got.append(message)
        return got

    def expect_nothing(self, for_s: float) -> None:
        got = self.collect(for_s, ack=True)
        assert got == [], f"{self.client_id}: expected no message, got {got}"

    def ping(self, timeout: float = 5.0) -> None:
        """PINGREQ → PINGRESP: the connection is alive and served."""
        self.send(codec.PINGREQ_BYTES)
        first, body = self._next_reply(timeout, "PINGRESP")
        assert first == 0xD0, f"{self.client_id}: expected PINGRESP, got {describe(first, body)}"

    def disconnect(self) -> None:
        """A clean DISCONNECT, then close."""
        send_quietly(self.sock, codec.DISCONNECT_BYTES)
        self.close()

    def drop(self) -> None:
        """Close the socket without DISCONNECT (a lost connection: the will is published)."""
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_serving(port: int, tag: str) -> None:
    """A normal client can still connect, subscribe, publish and receive its own message."""
    topic = f"serving/{tag}"
    try:
        client = RawClient(port, f"serving-{tag}"[:23])
    except OSError as exc:
        raise AssertionError(f"the broker no longer accepts a normal client: {exc!r}") from None
    with client:
        assert client.subscribe([(topic, 1)]) == [1], "the broker no longer grants a plain subscription"
        client.publish(topic, b"still here", qos=1)
        message = client.recv_publish(ack=True)
        assert (message.topic, message.payload) == (topic, b"still here")
        client.disconnect()
