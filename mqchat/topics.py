"""The mqchat topic grammar: the one module that builds and parses MQTT topics.

=====================================  ==============  ===========================================
topic                                  publisher       meaning
=====================================  ==============  ===========================================
``in/{user}/{device}/{channel}``       device          send a message (QoS 1)
``ch/{channel}``                       bridge          the channel's ordered stream
``dev/{user}/{device}/ack``            bridge          send acknowledgements for one device
``user/{user}/events``                 server          read markers, membership, unread updates
``presence/{user}/{device}``           device/broker   device presence, retained, also the last will
``presence/{user}``                    server          user presence, retained
``typing/{channel}/{user}``            device          typing indicator (QoS 0)
``auth/{user}/{device}``               device          in-band token refresh: the new access token,
                                                       consumed by the embedded broker, never
                                                       delivered or retained
=====================================  ==============  ===========================================

Every id segment follows :data:`mqchat.ids.ID_RE`, so a segment can never contain ``/``, ``+``,
``#`` or ``$``. Parsing is strict: anything that is not exactly one of the shapes above raises
:class:`~mqchat.errors.InvalidTopic`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mqchat.errors import InvalidTopic
from mqchat.ids import check_id, is_valid_id

SEND = "in"
STREAM = "ch"
DEVICE = "dev"
USER = "user"
PRESENCE = "presence"
TYPING = "typing"
AUTH = "auth"

#: Filter the bridge subscribes to for every send.
SEND_FILTER = f"{SEND}/+/+/+"
#: Every device's status topic (``presence/{user}/{device}``): what the workers' presence ingester reads.
DEVICE_PRESENCE_FILTER = f"{PRESENCE}/+/+"


def send(user: str, device: str, channel: str) -> str:
    return f"{SEND}/{check_id('user', user)}/{check_id('device', device)}/{check_id('channel', channel)}"


def stream(channel: str) -> str:
    return f"{STREAM}/{check_id('channel', channel)}"


def ack(user: str, device: str) -> str:
    return f"{DEVICE}/{check_id('user', user)}/{check_id('device', device)}/ack"


def user_events(user: str) -> str:
    return f"{USER}/{check_id('user', user)}/events"


def device_presence(user: str, device: str) -> str:
    return f"{PRESENCE}/{check_id('user', user)}/{check_id('device', device)}"


def user_presence(user: str) -> str:
    return f"{PRESENCE}/{check_id('user', user)}"


def typing(channel: str, user: str) -> str:
    return f"{TYPING}/{check_id('channel', channel)}/{check_id('user', user)}"


def token_refresh(user: str, device: str) -> str:
    """Where a connected device hands the broker its renewed access token (docs/protocol.md)."""
    return f"{AUTH}/{check_id('user', user)}/{check_id('device', device)}"


def typing_filter(channel: str) -> str:
    """Filter for every member's typing indicator in one channel."""
    return f"{TYPING}/{check_id('channel', channel)}/+"


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription (``$share/{group}/{filter}``) for brokers that support it."""
    return f"$share/{check_id('group', group)}/{topic_filter}"


FORWARD_ROOT = "bridge/fwd/"
"""Sends one bridge forwards to the owner of their channel (services only; see bridge/ownership.py)."""


def forward_topic(bridge_id: str, send_topic: str) -> str:
    """Where a send for ``bridge_id``'s channels is forwarded (the send's topic after the root)."""
    return f"{FORWARD_ROOT}{bridge_id}/{send_topic}"


def forward_filter(bridge_id: str) -> str:
    """What ``bridge_id`` subscribes to for sends forwarded to it."""
    return f"{FORWARD_ROOT}{bridge_id}/in/+/+/+"


def unforward(topic: str) -> str | None:
    """The send topic inside a forwarding topic; ``None`` for any other topic."""
    if not topic.startswith(FORWARD_ROOT):
        return None
    _, sep, send_topic = topic[len(FORWARD_ROOT):].partition("/")
    return send_topic if sep else None


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    user: str
    device: str
    channel: str


@dataclass(frozen=True, slots=True)
class Stream:
    channel: str


@dataclass(frozen=True, slots=True)
class Ack:
    user: str
    device: str


@dataclass(frozen=True, slots=True)
class UserEvents:
    user: str


@dataclass(frozen=True, slots=True)
class DevicePresence:
    user: str
    device: str


@dataclass(frozen=True, slots=True)
class UserPresence:
    user: str


@dataclass(frozen=True, slots=True)
class Typing:
    channel: str
    user: str | None
    """``None`` for the per-channel filter ``typing/{channel}/+``."""


Topic = Send | Stream | Ack | UserEvents | DevicePresence | UserPresence | Typing


def _ids(topic: str, parts: list[str]) -> None:
    for part in parts:
        if not is_valid_id(part):
            raise InvalidTopic(topic, f"segment {part!r} is not a valid id")


def parse(topic: str) -> Topic:
    """Parse a concrete topic (no wildcards).

    Raises:
        InvalidTopic: the topic is not one of the shapes in the module table.
    """
    if not topic or len(topic) > 512:
        raise InvalidTopic(topic, "empty or longer than 512 characters")
    parts = topic.split("/")
    head, rest = parts[0], parts[1:]
    match head, len(rest):
        case "in", 3:
            _ids(topic, rest)
            return Send(rest[0], rest[1], rest[2])
        case "ch", 1:
            _ids(topic, rest)
            return Stream(rest[0])
        case "dev", 3 if rest[2] == "ack":
            _ids(topic, rest[:2])
            return Ack(rest[0], rest[1])
        case "user", 2 if rest[1] == "events":
            _ids(topic, rest[:1])
            return UserEvents(rest[0])
        case "presence", 2:
            _ids(topic, rest)
            return DevicePresence(rest[0], rest[1])
        case "presence", 1:
            _ids(topic, rest)
            return UserPresence(rest[0])
        case "typing", 2:
            _ids(topic, rest)
            return Typing(rest[0], rest[1])
    raise InvalidTopic(topic, "not an mqchat topic")


def parse_filter(topic_filter: str) -> Topic:
    """Parse a subscription filter a device may use.

    Devices subscribe to concrete topics, with one exception: ``typing/{channel}/+``. Any other
    wildcard (``#``, ``+`` elsewhere, ``$SYS/...``, ``$share/...``) is refused as over-broad.

    Raises:
        InvalidTopic: the filter is not allowed for devices.
    """
    if topic_filter.startswith("$"):
        raise InvalidTopic(topic_filter, "'$' topics are reserved")
    if "#" in topic_filter or "+" in topic_filter:
        parts = topic_filter.split("/")
        if len(parts) == 3 and parts[0] == TYPING and parts[2] == "+" and is_valid_id(parts[1]):
            return Typing(parts[1], None)
        raise InvalidTopic(topic_filter, "wildcard filters are not allowed here")
    return parse(topic_filter)
