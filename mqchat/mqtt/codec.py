"""MQTT 3.1.1 packets, encoded and decoded; pure functions, no I/O.

One codec for both ends of a connection:

- **Framing.** :func:`split_packets` cuts bytes into ``(first byte, body)`` packets;
  :class:`FrameReader` keeps the partial packet between reads. The control packet type is
  ``first >> 4`` (the constants :data:`CONNECT` .. :data:`DISCONNECT`), the flags ``first & 0x0F``.
- **What a server reads** (client packets), validated to the letter of the spec, each check beside
  the statement it enforces: :func:`decode_connect`, :func:`decode_publish`, :func:`decode_subscribe`,
  :func:`decode_unsubscribe`, :func:`decode_packet_id`, :func:`check_empty`. Every rule a client
  can break raises :class:`ProtocolError`; a server answers it by closing the network connection
  [MQTT-4.8.0-1].
- **What a server writes:** :func:`encode_connack`, :func:`encode_suback`, :func:`encode_ack`,
  :func:`encode_publish`, :data:`PINGRESP_BYTES`.
- **What a client writes:** :func:`encode_connect`, :func:`encode_subscribe`,
  :func:`encode_unsubscribe`, :func:`encode_publish`, :func:`encode_ack`, :data:`PINGREQ_BYTES`,
  :data:`DISCONNECT_BYTES`.
- **What a client reads:** :func:`decode_connack`, :func:`decode_suback`, :func:`decode_packet_id`,
  and :func:`decode_publish` with ``strict=False`` (the checks that only protect a server from its
  clients are skipped; malformed packets are still refused).

The primitives :func:`packet` and :func:`encode_string` write fields exactly as given (``bytes``
go on the wire unchecked), so tests can build the packets a hostile client would send.

Errors::

    ProtocolError           the peer broke MQTT 3.1.1 (the reason names the rule)
    UnsupportedProtocol     a CONNECT for another protocol level (answered with CONNACK 0x01)
    ValueError              an encoder was given a value the wire cannot carry
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

#: Control packet type → name (§2.2.1), for messages and logs.
PACKET_NAMES: Final = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBREC: "PUBREC",
    PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
}

#: CONNACK return codes (§3.2.2.3).
ACCEPTED = 0x00
REFUSED_PROTOCOL_VERSION = 0x01
REFUSED_IDENTIFIER = 0x02
REFUSED_UNAVAILABLE = 0x03
REFUSED_BAD_CREDENTIALS = 0x04
REFUSED_NOT_AUTHORIZED = 0x05
CONNACK_REASONS: Final = {
    REFUSED_PROTOCOL_VERSION: "unacceptable protocol version",
    REFUSED_IDENTIFIER: "identifier rejected",
    REFUSED_UNAVAILABLE: "server unavailable",
    REFUSED_BAD_CREDENTIALS: "bad user name or password",
    REFUSED_NOT_AUTHORIZED: "not authorized",
}
#: SUBACK failure return code (§3.9.3).
SUBACK_FAILURE = 0x80

MAX_REMAINING_LENGTH: Final = 268_435_455
"""The largest remaining length four bytes can encode (§2.2.3)."""
MAX_PACKET_BYTES: Final = 1 + 4 + MAX_REMAINING_LENGTH
"""The largest packet MQTT 3.1.1 can frame: fixed header byte, four length bytes, the body."""


class ProtocolError(Exception):
    """The peer broke MQTT 3.1.1; the reason names the rule."""


class UnsupportedProtocol(Exception):
    """A CONNECT for a protocol level this server does not speak (MQTT 3.1, MQTT 5): answered with
    CONNACK 0x01 before closing [MQTT-3.1.2-2]."""

    def __init__(self, level: int) -> None:
        super().__init__(f"protocol level {level} (only 4, MQTT 3.1.1, is supported)")
        self.level = level


# -- framing ------------------------------------------------------------------------------------


def split_packets(buf: bytes | bytearray,
                  max_packet_bytes: int = MAX_PACKET_BYTES) -> tuple[list[tuple[int, bytes]], int]:
    """The complete packets at the start of ``buf``, as ``(first byte, body)``, and how many bytes they took.

    An incomplete packet at the end is left for the next call (with more bytes appended). A packet
    whose remaining length makes it larger than ``max_packet_bytes`` (fixed header included) is
    refused as soon as its fixed header is read, so its body is never waited for.

    Raises:
        ProtocolError: a remaining length longer than four bytes, or a packet over the limit.
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
                    return packets, pos  # the length itself is not complete yet
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:  # a fifth length byte would follow [MQTT-2.2.3]
                    raise ProtocolError("remaining length is longer than four bytes")
        size = length + (i - pos)
        if size > max_packet_bytes:
            raise ProtocolError(f"packet of {size} bytes is over the limit of {max_packet_bytes}")
        if end - i < length:
            break
        packets.append((first, bytes(buf[i : i + length])))
        pos = i + length
    return packets, pos


class FrameReader:
    """Cuts a byte stream into ``(first byte, body)`` packets (:func:`split_packets` with a buffer).

    A packet whose remaining length says it is larger than ``max_packet_bytes`` is refused as soon
    as its fixed header is read, so its body is never buffered.
    """

    __slots__ = ("_buf", "max_packet_bytes")

    def __init__(self, max_packet_bytes: int = MAX_PACKET_BYTES) -> None:
        self._buf = bytearray()
        self.max_packet_bytes = max_packet_bytes

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return the packets it completes (possibly none).

        Raises:
            ProtocolError: see :func:`split_packets`.
        """
        buf = self._buf
        buf += data
        packets, used = split_packets(buf, self.max_packet_bytes)
        if used:
            del buf[:used]
        return packets

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held for the next :meth:`feed`."""
        return len(self._buf)


# -- field readers (strict) ---------------------------------------------------------------------


def _string(body: bytes, pos: int, what: str) -> tuple[str, int]:
    """A UTF-8 string field at ``pos``; returns it and the position after it."""
    if pos + 2 > len(body):
        raise ProtocolError(f"{what}: truncated length")
    n = (body[pos] << 8) | body[pos + 1]
    pos += 2
    if pos + n > len(body):
        raise ProtocolError(f"{what}: truncated string")
    raw = body[pos : pos + n]
    try:
        text = raw.decode("utf-8")  # strict: also refuses encoded surrogates [MQTT-1.5.3-1]
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what}: invalid UTF-8") from exc
    if "\x00" in text:
        raise ProtocolError(f"{what}: contains U+0000")  # [MQTT-1.5.3-2]
    return text, pos + n


def _binary(body: bytes, pos: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise ProtocolError(f"{what}: truncated length")
    n = (body[pos] << 8) | body[pos + 1]
    pos += 2
    if pos + n > len(body):
        raise ProtocolError(f"{what}: truncated data")
    return body[pos : pos + n], pos + n


def _u16(body: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(body):
        raise ProtocolError(f"{what}: truncated")
    return (body[pos] << 8) | body[pos + 1]


# -- client → server packets, decoded (strict) --------------------------------------------------


@dataclass(slots=True)
class Connect:
    """A decoded CONNECT."""

    client_id: str
    clean_session: bool
    keep_alive: int
    username: str | None
    password: str | None
    will_topic: str | None
    will_message: bytes | None
    will_qos: int
    will_retain: bool
    protocol_name: str
    protocol_level: int


def decode_connect(flags: int, body: bytes) -> Connect:
    """A CONNECT body → its fields.

    Raises:
        ProtocolError: any rule broken (the connection is closed without CONNACK).
        UnsupportedProtocol: a well-formed CONNECT for another protocol level.
    """
    if flags:
        raise ProtocolError("CONNECT fixed-header flags must be 0")  # [MQTT-2.2.2-2]
    name, pos = _string(body, 0, "protocol name")
    if pos >= len(body):
        raise ProtocolError("CONNECT: truncated before protocol level")
    level = body[pos]
    if name not in ("MQTT", "MQIsdp"):
        raise ProtocolError(f"protocol name {name!r}")  # [MQTT-3.1.2-1] may close without CONNACK
    if level != 4 or name != "MQTT":
        raise UnsupportedProtocol(level)
    if pos + 4 > len(body):
        raise ProtocolError("CONNECT: truncated variable header")
    cflags = body[pos + 1]
    keep_alive = (body[pos + 2] << 8) | body[pos + 3]
    pos += 4
    if cflags & 0x01:
        raise ProtocolError("CONNECT reserved flag is set")  # [MQTT-3.1.2-3]
    clean = bool(cflags & 0x02)
    will = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = bool(cflags & 0x40)
    has_username = bool(cflags & 0x80)
    if not will and (will_qos or will_retain):
        raise ProtocolError("will QoS or retain set without the will flag")  # [MQTT-3.1.2-11/13/15]
    if will_qos == 3:
        raise ProtocolError("will QoS 3")  # [MQTT-3.1.2-14]
    if has_password and not has_username:
        raise ProtocolError("password flag without username flag")  # [MQTT-3.1.2-22]
    client_id, pos = _string(body, pos, "client identifier")
    will_topic = will_message = None
    if will:
        will_topic, pos = _string(body, pos, "will topic")
        check_topic_name(will_topic)
        will_message, pos = _binary(body, pos, "will message")
    username = password = None
    if has_username:
        username, pos = _string(body, pos, "user name")
    if has_password:
        raw, pos = _binary(body, pos, "password")
        try:
            password = raw.decode("utf-8")
        except UnicodeDecodeError:
            password = raw.decode("latin-1")  # binary data is allowed; plugins get a str either way
    if pos != len(body):
        raise ProtocolError("CONNECT has bytes after its payload")
    return Connect(client_id, clean, keep_alive, username, password, will_topic, will_message, will_qos,
                   will_retain, name, level)


def check_topic_name(topic: str) -> None:
    """A topic a message is published to: non-empty, no wildcards [MQTT-4.7.3-1, MQTT-3.3.2-2]."""
    if not topic:
        raise ProtocolError("empty topic name")
    if "+" in topic or "#" in topic:
        raise ProtocolError(f"wildcard in topic name {topic!r}")


def check_topic_filter(flt: str) -> None:
    """A subscription filter: non-empty; ``#`` only as a whole last level, ``+`` only as a whole level
    [MQTT-4.7.1-2, MQTT-4.7.1-3, MQTT-4.7.3-1]."""
    if not flt:
        raise ProtocolError("empty topic filter")
    if "+" not in flt and "#" not in flt:
        return
    levels = flt.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != last)) or ("+" in level and level != "+"):
            raise ProtocolError(f"malformed wildcard in topic filter {flt!r}")


@dataclass(slots=True)
class Publish:
    """A decoded PUBLISH; ``packet_id`` is 0 at QoS 0."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int


def decode_publish(flags: int, body: bytes, *, strict: bool = True) -> Publish:
    """A PUBLISH body → the message. ``flags`` may be the whole first byte (only its low bits are read).

    Args:
        flags: the fixed-header flags (DUP, QoS, RETAIN).
        body: the packet after the fixed header.
        strict: a server reading a client's PUBLISH: every rule is checked. With False (a client
            reading the server's), a malformed packet (QoS 3, truncated, a topic that is not
            UTF-8) is still refused, but the topic's content, the DUP flag and the packet id are
            taken as sent.

    Raises:
        ProtocolError: the rule broken.
    """
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH QoS 3")  # [MQTT-3.3.1-4]
    dup = bool(flags & 0x08)
    if strict:
        if dup and qos == 0:
            raise ProtocolError("PUBLISH DUP set on QoS 0")  # [MQTT-3.3.1-2]
        topic, pos = _string(body, 0, "topic name")
        check_topic_name(topic)
        packet_id = 0
        if qos:
            packet_id = _u16(body, pos, "packet identifier")
            if packet_id == 0:
                raise ProtocolError("packet identifier 0")  # [MQTT-2.3.1-1]
            pos += 2
        return Publish(topic, body[pos:], qos, bool(flags & 0x01), dup, packet_id)
    if len(body) < 2:
        raise ProtocolError("PUBLISH: truncated topic length")
    pos = 2 + ((body[0] << 8) | body[1])
    packet_id = 0
    if qos:
        if len(body) < pos + 2:
            raise ProtocolError("PUBLISH: truncated before the packet identifier")
        packet_id = (body[pos] << 8) | body[pos + 1]
    elif len(body) < pos:
        raise ProtocolError("PUBLISH: truncated topic")
    try:
        topic = body[2:pos].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("PUBLISH topic is not UTF-8") from exc
    return Publish(topic, body[pos + 2 if qos else pos :], qos, bool(flags & 0x01), dup, packet_id)


def decode_packet_id(kind: str, flags: int, body: bytes, *, required_flags: int = 0) -> int:
    """PUBACK / PUBREC / PUBREL / PUBCOMP / UNSUBACK: a packet identifier and nothing else.

    Raises:
        ProtocolError: other flags than ``required_flags`` (0b0010 for PUBREL), another length,
            or packet identifier 0.
    """
    if flags != required_flags:
        raise ProtocolError(f"{kind} fixed-header flags must be {required_flags:#06b}")  # [MQTT-2.2.2-2]
    if len(body) != 2:
        raise ProtocolError(f"{kind} must be 2 bytes long")
    packet_id = (body[0] << 8) | body[1]
    if packet_id == 0:
        raise ProtocolError("packet identifier 0")
    return packet_id


def _subscription_header(kind: str, flags: int, body: bytes) -> int:
    """SUBSCRIBE / UNSUBSCRIBE: flags 0b0010 and a non-zero packet identifier; returns it."""
    if flags != 0x02:
        raise ProtocolError(f"{kind} fixed-header flags must be 0b0010")
    packet_id = _u16(body, 0, "packet identifier")
    if packet_id == 0:
        raise ProtocolError("packet identifier 0")
    return packet_id


def decode_subscribe(flags: int, body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """A SUBSCRIBE → its packet identifier and ``(filter, requested QoS)`` pairs.

    Raises:
        ProtocolError: the rule broken.
    """
    packet_id = _subscription_header("SUBSCRIBE", flags, body)  # [MQTT-3.8.1-1]
    pos, out = 2, []
    while pos < len(body):
        flt, pos = _string(body, pos, "topic filter")
        check_topic_filter(flt)
        if pos >= len(body):
            raise ProtocolError("SUBSCRIBE: filter without requested QoS")
        qos = body[pos]
        pos += 1
        if qos > 2:  # also covers the reserved upper bits [MQTT-3-8.3-4]
            raise ProtocolError(f"SUBSCRIBE requested QoS byte {qos:#04x}")
        out.append((flt, qos))
    if not out:
        raise ProtocolError("SUBSCRIBE without a topic filter")  # [MQTT-3.8.3-3]
    return packet_id, out


def decode_unsubscribe(flags: int, body: bytes) -> tuple[int, list[str]]:
    """An UNSUBSCRIBE → its packet identifier and filters.

    Raises:
        ProtocolError: the rule broken.
    """
    packet_id = _subscription_header("UNSUBSCRIBE", flags, body)  # [MQTT-3.10.1-1]
    pos, out = 2, []
    while pos < len(body):
        flt, pos = _string(body, pos, "topic filter")
        check_topic_filter(flt)
        out.append(flt)
    if not out:
        raise ProtocolError("UNSUBSCRIBE without a topic filter")  # [MQTT-3.10.3-2]
    return packet_id, out


def check_empty(kind: str, flags: int, body: bytes) -> None:
    """PINGREQ / PINGRESP / DISCONNECT: no flags, no body."""
    if flags:
        raise ProtocolError(f"{kind} fixed-header flags must be 0")
    if body:
        raise ProtocolError(f"{kind} must have no body")


# -- server → client packets, decoded -----------------------------------------------------------


def decode_connack(flags: int, body: bytes) -> tuple[bool, int]:
    """A CONNACK → ``(session present, return code)``.

    Raises:
        ProtocolError: flags set, another length, or reserved acknowledge flags set.
    """
    if flags:
        raise ProtocolError("CONNACK fixed-header flags must be 0")  # [MQTT-2.2.2-2]
    if len(body) != 2:
        raise ProtocolError("CONNACK must be 2 bytes long")
    if body[0] & 0xFE:
        raise ProtocolError("CONNACK reserved acknowledge flags are set")  # §3.2.2.1
    return bool(body[0] & 0x01), body[1]


def decode_suback(flags: int, body: bytes) -> tuple[int, list[int]]:
    """A SUBACK → its packet identifier and the return code per filter (0..2 granted, 0x80 refused).

    Raises:
        ProtocolError: flags set, no return code, or a return code that is none of those.
    """
    if flags:
        raise ProtocolError("SUBACK fixed-header flags must be 0")  # [MQTT-2.2.2-2]
    if len(body) < 3:
        raise ProtocolError("SUBACK without a return code")
    codes = list(body[2:])
    for code in codes:
        if code > 2 and code != SUBACK_FAILURE:
            raise ProtocolError(f"SUBACK return code {code:#04x}")  # [MQTT-3.9.3-2]
    return (body[0] << 8) | body[1], codes


# -- encoding -----------------------------------------------------------------------------------


def encode_remaining_length(n: int) -> bytes:
    """The variable-length "remaining length" of a fixed header (1 to 4 bytes).

    Raises:
        ValueError: ``n`` is negative or above :data:`MAX_REMAINING_LENGTH`.
    """
    if 0 <= n < 128:
        return bytes((n,))
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    """A control packet: the fixed header byte ``first`` (type << 4 | flags), the remaining length, ``body``."""
    n = len(body)
    if n < 128:
        return bytes((first, n)) + body
    return bytes((first,)) + encode_remaining_length(n) + body


def encode_string(value: str | bytes) -> bytes:
    """A length-prefixed string field. ``bytes`` go on the wire as given (not checked for UTF-8).

    Raises:
        ValueError: longer than 65,535 bytes.
    """
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError(f"string field of {len(raw)} bytes (at most 65535)")
    return len(raw).to_bytes(2, "big") + raw


#: A topic name field; encode it once and share it between a fan-out's copies of a PUBLISH.
encode_topic = encode_string


def encode_connect(client_id: str, *, username: str | None = None, password: str | bytes | None = None,
                   keepalive: int = 60, clean_session: bool = True,
                   will: tuple[str, bytes, int, bool] | None = None) -> bytes:
    """A CONNECT packet (protocol level 4, "MQTT").

    Args:
        client_id: the client identifier.
        username: sent when not None.
        password: sent when not None.
        keepalive: seconds, 0..65535.
        clean_session: the clean-session flag.
        will: ``(topic, payload, qos, retain)``.

    Raises:
        ValueError: keep-alive or will QoS out of range, or a field over 65,535 bytes.
    """
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive} out of range 0..65535")
    flags = 0x02 if clean_session else 0
    payload = encode_string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        if qos not in (0, 1, 2):
            raise ValueError(f"will QoS {qos}")
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += encode_string(topic) + encode_string(message)
    if username is not None:
        flags |= 0x80
        payload += encode_string(username)
    if password is not None:
        flags |= 0x40
        payload += encode_string(password)
    return packet(CONNECT << 4, b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big") + payload)


def encode_connack(session_present: bool, code: int) -> bytes:
    """A CONNACK; session present is only ever sent with :data:`ACCEPTED` [MQTT-3.2.2-4]."""
    return bytes((0x20, 2, 1 if session_present and code == ACCEPTED else 0, code))


def encode_publish(topic_bytes: bytes, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0,
                   dup: bool = False) -> bytes:
    """A PUBLISH; ``topic_bytes`` is :func:`encode_topic`'s output (shared by a fan-out's copies).

    This is on every message's path, so the values are written as given and not checked:
    ``qos`` must be 0..2 and ``packet_id`` 1..65535 when ``qos`` is above 0.
    """
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    if qos:
        n = len(topic_bytes) + 2 + len(payload)
        return b"".join((bytes((first,)), encode_remaining_length(n), topic_bytes,
                         bytes((packet_id >> 8, packet_id & 0xFF)), payload))
    return b"".join((bytes((first,)), encode_remaining_length(len(topic_bytes) + len(payload)), topic_bytes,
                     payload))


def encode_ack(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP / UNSUBACK for ``packet_id`` (PUBREL gets its flags 0b0010)."""
    return bytes(((kind << 4) | (0x02 if kind == PUBREL else 0), 2, packet_id >> 8, packet_id & 0xFF))


def _check_packet_id(packet_id: int) -> bytes:
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet id {packet_id} out of range 1..65535")
    return packet_id.to_bytes(2, "big")


def encode_subscribe(packet_id: int, filters: Iterable[tuple[str, int]]) -> bytes:
    """A SUBSCRIBE for ``(filter, requested QoS)`` pairs.

    Raises:
        ValueError: no filter, a QoS other than 0..2, or a packet id out of 1..65535.
    """
    parts = [_check_packet_id(packet_id)]
    for flt, qos in filters:
        if qos not in (0, 1, 2):
            raise ValueError(f"requested QoS {qos} for {flt!r}")
        parts += (encode_string(flt), bytes((qos,)))
    if len(parts) == 1:
        raise ValueError("SUBSCRIBE needs at least one filter")
    return packet((SUBSCRIBE << 4) | 0x02, b"".join(parts))


def encode_unsubscribe(packet_id: int, filters: Iterable[str]) -> bytes:
    """An UNSUBSCRIBE.

    Raises:
        ValueError: no filter, or a packet id out of 1..65535.
    """
    parts = [_check_packet_id(packet_id), *(encode_string(f) for f in filters)]
    if len(parts) == 1:
        raise ValueError("UNSUBSCRIBE needs at least one filter")
    return packet((UNSUBSCRIBE << 4) | 0x02, b"".join(parts))


def encode_suback(packet_id: int, codes: list[int]) -> bytes:
    """A SUBACK with one return code per filter (granted QoS, or :data:`SUBACK_FAILURE`)."""
    return packet(SUBACK << 4, bytes((packet_id >> 8, packet_id & 0xFF, *codes)))


PINGREQ_BYTES: Final = bytes((PINGREQ << 4, 0))
PINGRESP_BYTES: Final = bytes((PINGRESP << 4, 0))
DISCONNECT_BYTES: Final = bytes((DISCONNECT << 4, 0))
