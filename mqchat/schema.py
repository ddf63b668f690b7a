"""Wire payloads (UTF-8 JSON objects) and their strict decoding.

Inbound payloads are decoded once, at the edge, into typed structs; anything that does not fit is
rejected with a :class:`~mqchat.errors.SchemaError` whose ``code`` goes back to the device in an
error ack. The codes are part of the contract (docs/protocol.md):

=======================  ===================================================================
code                     meaning
=======================  ===================================================================
``payload_too_large``    the raw payload exceeds :data:`MAX_PAYLOAD_BYTES`
``malformed``            not UTF-8 JSON, not an object, or a field has the wrong type
``unknown_field``        a field this version does not define
``unsupported_version``  ``v`` is not a version this server speaks
``unknown_kind``         ``kind`` is not one of :data:`KINDS`
``body_too_long``        ``body`` exceeds :data:`MAX_BODY_CHARS` characters
``invalid_cmid``         ``cmid`` missing, empty, longer than 64 or outside ``[A-Za-z0-9_.:-]``
=======================  ===================================================================

Outbound payloads (stream messages, acks) carry ``"v": 1``. Version 1 is the only one so far; a
new version adds a new decoder here and keeps the old one until clients have moved.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from mqchat.errors import SchemaError

VERSION = 1
#: Largest accepted send payload in bytes (the raw MQTT payload).
MAX_PAYLOAD_BYTES = 16 * 1024
#: Longest accepted message body, in characters (code points).
MAX_BODY_CHARS = 4000
#: Message kinds this version accepts.
KINDS = frozenset({"text"})
CMID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a device publishes on ``in/{user}/{device}/{channel}``."""

    cmid: str
    kind: str
    body: str
    v: int = VERSION


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    retry_after_ms: int | None = None
    """For waits (``timed_out``, ``slow_mode``): when the send may succeed again."""


class Ack(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the bridge publishes on ``dev/{user}/{device}/ack``."""

    cmid: str | None
    channel: str
    ok: bool
    id: str | None = None
    seq: int | None = None
    epoch: int | None = None
    error: ErrorBody | None = None
    v: int = VERSION


class ChannelMessage(msgspec.Struct, frozen=True):
    """A message as published on ``ch/{channel}`` and returned by history.

    ``id`` is the Snowflake as a decimal string: JSON numbers above 2^53 lose precision in
    JavaScript and many mobile JSON parsers.
    """

    id: str
    seq: int
    epoch: int
    channel: str
    sender: str
    device: str
    cmid: str
    ts: int
    kind: str
    body: str
    v: int = VERSION


class PresencePayload(msgspec.Struct, frozen=True):
    status: Literal["online", "away", "offline"]
    ts: int


#: How a message body mentions a user: ``<@{user_id}>`` (rendered by clients as the user's name).
MENTION_RE = re.compile(r"<@([A-Za-z0-9_-]{1,64})>")
#: Most distinct users one message can mention (the rest are ignored for counts).
MAX_MENTIONS = 50


def mentions(body: str) -> list[str]:
    """The users a body mentions, in order of first appearance, at most :data:`MAX_MENTIONS`."""
    return list(dict.fromkeys(MENTION_RE.findall(body)))[:MAX_MENTIONS]


_send_decoder = msgspec.json.Decoder(SendRequest)
_encoder = msgspec.json.Encoder()


def decode_send(raw: bytes) -> SendRequest:
    """Decode and validate a send payload.

    Raises:
        SchemaError: with one of the codes in the module table.
    """
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise SchemaError("payload_too_large", f"payload is {len(raw)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        req = _send_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Object contains unknown field"):
            raise SchemaError("unknown_field", text) from None
        raise SchemaError("malformed", text) from None
    except msgspec.DecodeError as exc:
        raise SchemaError("malformed", f"not a UTF-8 JSON object: {exc}") from None
    if req.v != VERSION:
        raise SchemaError("unsupported_version", f"payload version {req.v} is not supported; use {VERSION}")
    if CMID_RE.fullmatch(req.cmid) is None:
        raise SchemaError("invalid_cmid", "cmid must be 1-64 characters from [A-Za-z0-9_.:-]")
    if req.kind not in KINDS:
        raise SchemaError("unknown_kind", f"kind {req.kind!r} is not one of {sorted(KINDS)}")
    if len(req.body) > MAX_BODY_CHARS:
        raise SchemaError("body_too_long", f"body is {len(req.body)} characters; the limit is {MAX_BODY_CHARS}")
    return req


def salvage_cmid(raw: bytes) -> str | None:
    """Best-effort ``cmid`` from a payload that failed :func:`decode_send`, so the error ack can
    name the message it refuses. Returns ``None`` when there is nothing trustworthy to echo."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        return None
    try:
        obj: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    cmid = obj.get("cmid") if isinstance(obj, dict) else None
    return cmid if isinstance(cmid, str) and CMID_RE.fullmatch(cmid) else None


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def decode_ack(raw: bytes) -> Ack:
    return msgspec.json.decode(raw, type=Ack)


def decode_channel_message(raw: bytes) -> ChannelMessage:
    return msgspec.json.decode(raw, type=ChannelMessage)
