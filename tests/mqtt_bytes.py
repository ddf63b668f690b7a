"""Hand-built MQTT 3.1.1 packets, for tests that must control the wire (silent clients, raw wills)."""

from __future__ import annotations


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
