"""MQTT 3.1.1 packets as the server reads and writes them, validated to the letter of the spec.

Every rule a client can break raises :class:`ProtocolError`; the connection answers it by closing
the network connection [MQTT-4.8.0-1]. The spec statement behind each check is cited beside it.
Nothing here does I/O: :class:`FrameReader` cuts a byte stream into packets, the ``decode_*``
functions turn a packet body into fields, and the ``encode_*`` functions build server packets.
"""

from __future__ import annotations

from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

#: CONNACK return codes (§3.2.2.3).
ACCEPTED = 0x00
REFUSED_PROTOCOL_VERSION = 0x01
REFUSED_IDENTIFIER = 0x02
REFUSED_UNAVAILABLE = 0x03
REFUSED_BAD_CREDENTIALS = 0x04
REFUSED_NOT_AUTHORIZED = 0x05
#: SUBACK failure return code (§3.9.3).
SUBACK_FAILURE = 0x80



class ProtocolError(Exception):
    """The client broke MQTT 3.1.1; the reason names the rule."""


class UnsupportedProtocol(Exception):
    """A CONNECT for a protocol level this server does not speak (MQTT 3.1, MQTT 5): answered with
    CONNACK 0x01 before closing [MQTT-3.1.2-2]."""

    def __init__(self, level: int) -> None:
        super().__init__(f"protocol level {level} (only 4, MQTT 3.1.1, is supported)")
        self.level = level


class FrameReader:
    """Cuts a byte stream into ``(first byte, body)`` packets.

    A packet whose remaining length says it is larger than ``max_packet_bytes`` is refused as soon
    as its fixed header is read, so its body is never buffered.
    """

    __slots__ = ("_buf", "max_packet_bytes")

    def __init__(self, max_packet_bytes: int) -> None:
        self._buf = bytearray()
        self.max_packet_bytes = max_packet_bytes

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return the packets it completes (possibly none)."""
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            value, mult, i, complete = 0, 1, pos + 1, False
            while i < end:
                b = buf[i]
                i += 1
                value += (b & 0x7F) * mult
                if not b & 0x80:
                    complete = True
                    break
                if i - pos - 1 >= 4:  # a fifth length byte would follow [MQTT-2.2.3]
                    raise ProtocolError("remaining length is longer than four bytes")
                mult *= 128
            if not complete:
                break  # the length itself is not complete yet
            size = value + (i - pos)
            if size > self.max_packet_bytes:
                raise ProtocolError(f"packet of {size} bytes is over the limit of {self.max_packet_bytes}")
            if end - i < value:
                break
            out.append((buf[pos], bytes(buf[i : i + value])))
            pos = i + value
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


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


@dataclass(slots=True)
class Connect:
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
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int


def decode_publish(flags: int, body: bytes) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH QoS 3")  # [MQTT-3.3.1-4]
    dup = bool(flags & 0x08)
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


def decode_packet_id(kind: str, flags: int, body: bytes, *, required_flags: int = 0) -> int:
    """PUBACK / PUBREC / PUBREL / PUBCOMP: a packet identifier and nothing else."""
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
    """PINGREQ / DISCONNECT: no flags, no body."""
    if flags:
        raise ProtocolError(f"{kind} fixed-header flags must be 0")
    if body:
        raise ProtocolError(f"{kind} must have no body")


# -- encoding (server → client) -----------------------------------------------------------------


def remaining_length(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_connack(session_present: bool, code: int) -> bytes:
    return bytes((0x20, 2, 1 if session_present and code == ACCEPTED else 0, code))


def encode_ack(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP / UNSUBACK."""
    return bytes(((kind << 4) | (0x02 if kind == PUBREL else 0), 2, packet_id >> 8, packet_id & 0xFF))


def encode_suback(packet_id: int, codes: list[int]) -> bytes:
    return bytes((0x90,)) + remaining_length(2 + len(codes)) + bytes((packet_id >> 8, packet_id & 0xFF, *codes))


PINGRESP_BYTES = bytes((0xD0, 0))


def encode_topic(topic: str) -> bytes:
    raw = topic.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_publish(topic_bytes: bytes, payload: bytes, qos: int, retain: bool, packet_id: int = 0,
                   dup: bool = False) -> bytes:
    """A PUBLISH; ``topic_bytes`` is :func:`encode_topic`'s output (shared by a fan-out's copies)."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    if qos:
        n = len(topic_bytes) + 2 + len(payload)
        return b"".join((bytes((first,)), remaining_length(n), topic_bytes,
                         bytes((packet_id >> 8, packet_id & 0xFF)), payload))
    return b"".join((bytes((first,)), remaining_length(len(topic_bytes) + len(payload)), topic_bytes, payload))
