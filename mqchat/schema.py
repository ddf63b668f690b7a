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
``empty_body``           a ``text`` or ``edit`` whose body is empty or only white space
``missing_field``        a field the ``kind`` needs is absent (e.g. ``target`` of an ``edit``)
``field_not_allowed``    a field the ``kind`` does not take (e.g. ``emoji`` on a ``text``)
``invalid_target``       ``target``, ``reply_to`` or ``thread`` is not a seq (an integer >= 1)
``invalid_emoji``        ``emoji`` is not a short Unicode emoji sequence nor a ``:shortcode:``
=======================  ===================================================================

A ``file`` send that decodes is then checked by the bridge against its upload
(:func:`mqchat.objects.policy.check_file_send`: ``upload_not_found``, ``upload_not_yours``,
``upload_incomplete``, ``upload_expired``, ``upload_used``).

Kinds (:data:`KINDS`): ``text`` (optionally ``reply_to`` and/or ``thread``), ``file`` (an
``upload`` id and an optional caption in ``body``; the stream and history carry it with an
:class:`Attachment`, docs/attachments.md), and the events that
change an earlier message, each naming it by ``target``: ``edit`` (new ``body``), ``delete``,
``reaction`` (``emoji``, ``op``), ``pin``, ``unpin``. Targets, ``reply_to`` and ``thread`` are
**seqs** in the channel's current epoch, not Snowflake ids: the seq is what every device already
keys its copy of the channel by (gap-free, the same on every device), it is channel-relative (an
event cannot name another channel's message: an unknown seq is just ``not_found``), and it is the
primary key of history in every backend, so the bridge checks a batch's targets with one range
read. :data:`KIND_FIELDS` says which optional fields each kind takes; a new kind adds one entry
there.

Outbound payloads (stream messages, acks) carry ``"v": 1``. Version 1 is the only one so far; a
new version adds a new decoder here and keeps the old one until clients have moved.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

import msgspec

from mqchat.errors import SchemaError

VERSION = 1
#: Largest accepted send payload in bytes (the raw MQTT payload).
MAX_PAYLOAD_BYTES = 16 * 1024
#: Longest accepted message body, in characters (code points).
MAX_BODY_CHARS = 4000
CMID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

#: For each kind: the fields it requires and the optional ones it accepts (besides ``cmid``,
#: ``kind`` and ``v``). Anything else present is ``field_not_allowed``.
KIND_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "text": (frozenset({"body"}), frozenset({"reply_to", "thread"})),
    "file": (frozenset({"upload"}), frozenset({"body", "reply_to", "thread"})),
    "edit": (frozenset({"target", "body"}), frozenset()),
    "delete": (frozenset({"target"}), frozenset()),
    "reaction": (frozenset({"target", "emoji", "op"}), frozenset()),
    "pin": (frozenset({"target"}), frozenset()),
    "unpin": (frozenset({"target"}), frozenset()),
}
#: Message kinds this version accepts.
KINDS = frozenset(KIND_FIELDS)
#: Kinds that carry new content: they count toward unread, badges, mentions and pushes. Every
#: other kind changes an earlier message and counts for nothing (docs/protocol.md, *Unread counts*).
COUNTING_KINDS = frozenset({"text", "file"})
#: Kinds that carry an attachment (``upload`` on the send, ``attachment`` on the stream and in history).
FILE_KINDS = frozenset({"file"})
#: Kinds whose ``target`` names the message they change.
TARGETED_KINDS = frozenset({"edit", "delete", "reaction", "pin", "unpin"})
#: Most distinct emoji on one message; an ``add`` of another one is refused (``too_many_reactions``).
MAX_REACTION_EMOJI = 20
#: Longest emoji: code points of a Unicode sequence (flags, ZWJ families, skin tones fit), or
#: characters of a ``:shortcode:`` including the colons.
MAX_EMOJI_CODEPOINTS = 16
MAX_SHORTCODE_CHARS = 34
SHORTCODE_RE = re.compile(r":[a-z0-9_+-]{1,32}:")
_OPTIONAL = ("body", "target", "emoji", "op", "reply_to", "thread", "upload")


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """What a device publishes on ``in/{user}/{device}/{channel}`` (and ``POST .../messages`` takes)."""

    cmid: str
    kind: str
    body: str | None = None
    target: int | None = None
    emoji: str | None = None
    op: Literal["add", "remove"] | None = None
    reply_to: int | None = None
    thread: int | None = None
    upload: str | None = None
    """A ``file`` send's completed upload (``upload_id`` of ``POST /v1/uploads``)."""
    v: int = VERSION


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    retry_after_ms: int | None = None
    """For waits (``timed_out``, ``slow_mode``): when the send may succeed again."""


class Ack(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="v", tag=VERSION):
    """What the bridge publishes on ``dev/{user}/{device}/ack``; ``"v": 1`` is always written (the tag)."""

    cmid: str | None
    channel: str
    ok: bool
    id: str | None = None
    seq: int | None = None
    epoch: int | None = None
    error: ErrorBody | None = None


class Attachment(msgspec.Struct, frozen=True, omit_defaults=True):
    """The attachment of a ``file`` message, on the stream and in history (docs/attachments.md).

    Made from the upload record when the message is sent or read
    (:func:`mqchat.objects.policy.attachment`), never stored with the message: the URLs are signed
    and expire at ``url_expires`` (seconds since the epoch). A client that needs the file later asks
    ``GET /v1/uploads/{id}/download`` (members only) or reads history again. ``width``/``height``
    only for images; ``thumbnail_url``/``thumbnail_type`` once the workers made the thumbnail.
    """

    id: str
    filename: str
    content_type: str
    size: int
    url: str
    url_expires: int
    width: int | None = None
    height: int | None = None
    thumbnail_url: str | None = None
    thumbnail_type: str | None = None


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
    target: int | None = None
    emoji: str | None = None
    op: str | None = None
    reply_to: int | None = None
    thread: int | None = None
    attachment: Attachment | None = None
    """On ``file`` messages: the file, with fresh signed URLs (None once the message is deleted)."""
    count_seq: int = 0
    """How many counting events (:data:`COUNTING_KINDS`) the channel's epoch has up to and
    including this one: unread = last count_seq - count_seq at the read marker."""
    v: int = VERSION


class ReactionOut(msgspec.Struct, frozen=True):
    emoji: str
    count: int
    me: bool
    """Whether the user asking reacted with this emoji."""


class MessageStateOut(msgspec.Struct, frozen=True):
    """A message's state folded from the stream as of the answer (see :mod:`mqchat.fold`)."""

    body: str
    edited_ts: int | None
    deleted: bool
    pinned: bool
    reactions: list[ReactionOut]
    reply_count: int
    last_reply_ts: int | None


class HistoryMessage(ChannelMessage, frozen=True):
    """An event as history returns it: the stream payload plus, on messages (not on the events
    that change them), ``state``: the message's folded state now."""

    state: MessageStateOut | None = None


class PresencePayload(msgspec.Struct, frozen=True):
    """A device's status on ``presence/{user}/{device}`` (its heartbeat and last will too).

    ``conn`` names the connection (chosen by the device at each CONNECT, the same in its will):
    with an external broker it makes the presence lease, so a late will of an old connection
    cannot end a newer one. The embedded broker names connections itself and ignores it.
    """

    status: Literal["online", "away", "offline"]
    ts: int
    conn: str | None = None


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
    fields = KIND_FIELDS.get(req.kind)
    if fields is None:
        raise SchemaError("unknown_kind", f"kind {req.kind!r} is not one of {sorted(KINDS)}")
    required, optional = fields
    present = {name for name in _OPTIONAL if getattr(req, name) is not None}
    if missing := required - present:
        raise SchemaError("missing_field", f"a {req.kind} needs {', '.join(sorted(missing))}")
    if extra := present - required - optional:
        raise SchemaError("field_not_allowed", f"a {req.kind} does not take {', '.join(sorted(extra))}")
    for name in ("target", "reply_to", "thread"):
        value = getattr(req, name)
        if value is not None and value < 1:
            raise SchemaError("invalid_target", f"{name} must be a seq (an integer >= 1), not {value}")
    if req.kind in NONEMPTY_BODY_KINDS and (req.body is None or not req.body.strip()):
        raise SchemaError("empty_body", f"a {req.kind} needs a body with some text")
    if req.body is not None and len(req.body) > MAX_BODY_CHARS:
        raise SchemaError("body_too_long", f"body is {len(req.body)} characters; the limit is {MAX_BODY_CHARS}")
    if req.emoji is not None and not valid_emoji(req.emoji):
        raise SchemaError("invalid_emoji", "emoji must be one short Unicode emoji sequence (at most "
                          f"{MAX_EMOJI_CODEPOINTS} code points) or a :shortcode: of [a-z0-9_+-]")
    return req


#: Kinds whose body must carry text (an empty message or edit is refused with ``empty_body``).
NONEMPTY_BODY_KINDS = frozenset({"text", "edit"})

_EMOJI_JOINERS = frozenset({0x200D, 0xFE0E, 0xFE0F, 0x20E3})
_KEYCAP_BASES = frozenset("0123456789#*")


def valid_emoji(emoji: str) -> bool:
    """Whether ``emoji`` is a reaction this version accepts.

    Two formats: a ``:shortcode:`` (``SHORTCODE_RE``, e.g. ``:party_parrot:``, for custom emoji),
    or one short Unicode emoji sequence: at most :data:`MAX_EMOJI_CODEPOINTS` code points, at
    least one a pictographic symbol (category ``So``), the others symbols, skin-tone modifiers,
    ZWJ, variation selectors, tag characters (subdivision flags) or keycap bases. Letters, spaces,
    punctuation and control characters are refused, so a reaction can never carry text.
    """
    if emoji.startswith(":"):
        return len(emoji) <= MAX_SHORTCODE_CHARS and SHORTCODE_RE.fullmatch(emoji) is not None
    if not 0 < len(emoji) <= MAX_EMOJI_CODEPOINTS:
        return False
    pictographs = 0
    for ch in emoji:
        cp, cat = ord(ch), unicodedata.category(ch)
        if cat == "So":
            pictographs += 1
        elif not (cp in _EMOJI_JOINERS or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F
                  or ch in _KEYCAP_BASES):
            return False
    return pictographs > 0 or (emoji[0] in _KEYCAP_BASES and emoji.endswith("\u20e3"))


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
