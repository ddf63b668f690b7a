"""What simulated devices saw: the record the checker judges and the report measures.

The fleet appends to one :class:`Observations` while a scenario runs; nothing here interprets it.
Times are ``time.monotonic()`` seconds in the simulator process. A device is named
``"{user_id}:{device_id}"`` (its MQTT client id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(slots=True)
class Send:
    """One logical send (a cmid), however many times it was published."""

    device: str
    channel: str
    cmid: str
    t_first: float
    """When it was first published."""
    attempts: int = 1
    t_ack: float | None = None
    id: str | None = None
    """Message id from the ack (``None`` until acked)."""
    seq: int | None = None
    error: str | None = None
    """Error code from an error ack (``not_member``, ``rate_limited``, …)."""
    ack_ids: list[str] = field(default_factory=list)
    """Every id an ack for this cmid carried (more than one distinct id is a dedup failure)."""


@dataclass(slots=True)
class Delivery:
    """A channel message as one device got it, live over MQTT or from a sync / history call."""

    device: str
    channel: str
    id: str
    seq: int
    sender: str
    """Sender's user id."""
    t: float
    via: Literal["live", "sync"]
    cmid: str | None = None


@dataclass(frozen=True, slots=True)
class StatesSeen:
    """Message states of one channel as ``viewer`` sees them (``me`` in reactions is theirs)."""

    viewer: str
    last_seq: int
    """History: the channel's last seq. A device: the highest seq it holds when it holds every seq
    from 1 up to it, else -1 (a device that missed events cannot be held to history's state)."""
    states: dict[int, Any]
    """seq -> the message's state as history renders it (``mqchat.schema.MessageStateOut``)."""


@dataclass(slots=True)
class Synced:
    """A device caught up from history: ``POST /v1/sync`` followed until ``has_more`` was false
    (``channel`` is ``None``: every channel of its user), or ``GET /v1/channels/{id}/messages?after=``
    paged to the end (that one channel). Recorded even when it returned nothing: the checker then
    knows the device would have got every message acked before ``t``."""

    device: str
    t: float
    """When the first request was sent."""
    channel: str | None = None


@dataclass(slots=True)
class Online:
    """One MQTT connection of a device: from CONNACK to when it ended (``None``: still open)."""

    device: str
    t_connected: float
    t_closed: float | None = None
    how: Literal["disconnect", "network_loss", "refused", "open"] = "open"


@dataclass(slots=True)
class Push:
    """A push notification that reached a device's push token (as seen by the FCM/APNs stand-in)."""

    device: str
    channel: str
    id: str
    t: float


@dataclass(slots=True)
class Badge:
    """An unread count a device was shown for a channel (``GET /v1/inbox`` or an MQTT user event),
    beside what the device itself computed from the formula in docs/protocol.md at that moment."""

    device: str
    channel: str
    shown: int
    expected: int
    t: float


@dataclass(slots=True)
class PresenceSeen:
    """The last presence status an observer device holds for a user at the end of a run."""

    observer: str
    user: str
    status: str
    """``online`` / ``offline`` as last received on ``presence/{user}``."""
    actual: str
    """What it should be: ``online`` iff one of the user's devices is connected at the end."""


@dataclass
class Observations:
    """Everything the fleet recorded during one scenario."""

    sends: list[Send] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    online: list[Online] = field(default_factory=list)
    pushes: list[Push] = field(default_factory=list)
    badges: list[Badge] = field(default_factory=list)
    presence: list[PresenceSeen] = field(default_factory=list)
    members: dict[str, set[str]] = field(default_factory=dict)
    """Channel id → member user ids (for the whole run; scenarios here do not change membership)."""
    devices_of: dict[str, list[str]] = field(default_factory=dict)
    """User id → that user's device names."""
    push_expected: bool = False
    """Whether the scenario had push enabled (only then are push invariants checked)."""
    syncs: list[Synced] = field(default_factory=list)
    """Completed catch-ups (optional: without them a device is expected to hold the messages acked
    while or before it was online, and those it got from sync anyway)."""
    push_devices: set[str] | None = None
    """Devices registered for push (``PUT /v1/me/push``) for the whole run; ``None``: every device."""
    muted: set[tuple[str, str]] = field(default_factory=set)
    """``(user, channel)`` pairs muted (``PUT /v1/channels/{id}/mute``) for the whole run."""
    history_states: dict[str, StatesSeen] = field(default_factory=dict)
    """Channel -> the states history returned at the end (rich-message runs only)."""
    device_states: dict[tuple[str, str], StatesSeen] = field(default_factory=dict)
    """``(device, channel)`` -> the device's own fold of the events it held at the end."""
