"""Hand-built MQTT 3.1.1 packets, for tests that must control the wire (silent clients, raw wills)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


def _str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect(client_id: str, *, username: str | None = None, password: str | None = None, keepalive: int = 60,
            will: tuple[str, bytes, int, bool] | None = None, clean: bool = True) -> bytes:
    """A CONNECT packet; ``will`` is ``(topic, payload, qos, retain)``."""
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    variable = _str("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    body = variable + payload
    return bytes([0x10]) + _remaining_length(len(body)) + body


# --- lower-level builders and a blocking reader, for raw-socket protocol tests (tests/broker/) ---

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 0x2, 0x3, 0x4, 0x5, 0x6, 0x7
SUBACK, UNSUBACK, PINGRESP = 0x9, 0xB, 0xD


def remaining_length(n: int) -> bytes:
    """The variable-length encoding of a remaining length (1 to 4 bytes for 0..268,435,455)."""
    return _remaining_length(n)


def mqtt_string(value: str | bytes) -> bytes:
    """A length-prefixed string field; ``bytes`` go on the wire unchecked (for invalid UTF-8)."""
    return _str(value)


def packet(first_byte: int, body: bytes) -> bytes:
    """A control packet: fixed header byte, remaining length, then ``body``."""
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def connect_raw(payload: bytes, *, protocol: bytes = b"MQTT", level: int = 4, flags: int = 0x02,
                keepalive: int = 60) -> bytes:
    """A CONNECT with every header field under the caller's control; ``payload`` is sent as is."""
    variable = _str(protocol) + bytes([level, flags]) + keepalive.to_bytes(2, "big")
    return packet(0x10, variable + payload)


def publish(topic: str | bytes, payload: bytes = b"", *, qos: int = 0, packet_id: int | None = None,
            retain: bool = False, dup: bool = False) -> bytes:
    """A PUBLISH; ``qos`` may be 3 and ``packet_id`` 0 (for protocol-violation tests).

    ``packet_id`` defaults to 1 when ``qos`` is above 0."""
    first = 0x30 | (0x08 if dup else 0) | ((qos & 0x3) << 1) | (0x01 if retain else 0)
    body = _str(topic)
    if qos:
        body += (1 if packet_id is None else packet_id).to_bytes(2, "big")
    return packet(first, body + payload)


def subscribe(packet_id: int, filters: list[tuple[str | bytes, int]], *, first_byte: int = 0x82) -> bytes:
    """A SUBSCRIBE; the requested-QoS byte is sent as given (so 3 or reserved bits can be tested)."""
    body = packet_id.to_bytes(2, "big") + b"".join(_str(f) + bytes([q]) for f, q in filters)
    return packet(first_byte, body)


def unsubscribe(packet_id: int, filters: list[str | bytes], *, first_byte: int = 0xA2) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_str(f) for f in filters)
    return packet(first_byte, body)


def puback(packet_id: int) -> bytes:
    return packet(0x40, packet_id.to_bytes(2, "big"))


def pingreq() -> bytes:
    return b"\xc0\x00"


def disconnect() -> bytes:
    return b"\xe0\x00"


class Closed(Exception):
    """The server closed the connection (EOF or reset) while a packet was expected."""


def read_packet(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """Read one control packet: ``(first byte, body)``.

    Raises:
        Closed: the connection ended (EOF or ECONNRESET).
        TimeoutError: nothing complete arrived within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout

    def take(n: int) -> bytes:
        out = b""
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete packet within {timeout}s (got {out!r} so far)")
            sock.settimeout(left)
            try:
                chunk = sock.recv(n - len(out))
            except TimeoutError:
                raise TimeoutError(f"no complete packet within {timeout}s (got {out!r} so far)") from None
            except ConnectionResetError:
                raise Closed("connection reset") from None
            if not chunk:
                raise Closed("EOF")
            out += chunk
        return out

    first = take(1)[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = take(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, take(length)


class PacketReader:
    """Reads packets from one socket, keeping partial data across timeouts (unlike
    :func:`read_packet`, which may leave a packet half read when it times out)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _frame(self) -> tuple[int, bytes] | None:
        length, shift = 0, 0
        for i in range(1, 5):
            if i >= len(self.buffer):
                return None
            byte = self.buffer[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            raise ValueError(f"remaining length over 4 bytes from the server: {bytes(self.buffer[:8])!r}")
        end = i + 1 + length
        if len(self.buffer) < end:
            return None
        first, body = self.buffer[0], bytes(self.buffer[i + 1 : end])
        del self.buffer[:end]
        return first, body

    def read(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next packet: ``(first byte, body)``.

        Raises:
            Closed: the connection ended (EOF or ECONNRESET) before a complete packet.
            TimeoutError: no complete packet within ``timeout`` seconds (partial data is kept).
        """
        deadline = time.monotonic() + timeout
        while (frame := self._frame()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete packet within {timeout}s (have {bytes(self.buffer[:40])!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                raise Closed("connection reset") from None
            if not chunk:
                raise Closed("EOF")
            self.buffer += chunk
        return frame


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


def parse_publish(first: int, body: bytes) -> Publish:
    """Decode a PUBLISH read with :func:`read_packet`."""
    if first >> 4 != PUBLISH:
        raise ValueError(f"not a PUBLISH: first byte {first:#04x}, body {body[:40]!r}")
    qos = (first >> 1) & 0x3
    n = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + n].decode()
    rest = body[2 + n :]
    packet_id = None
    if qos:
        packet_id, rest = int.from_bytes(rest[:2], "big"), rest[2:]
    return Publish(topic, rest, qos, bool(first & 0x01), bool(first & 0x08), packet_id)


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
