"""Topic access policy: who may publish, subscribe to or receive what. Pure functions.

:func:`authorize` answers from the principal and the topic alone. Where the answer depends on
membership it returns a *conditional* verdict (:data:`IF_MEMBER`, :data:`IF_CONTACT`) and the
caller resolves the condition against its membership source (the amqtt plugin uses a short-lived
cache; the HTTP auth hooks for external brokers use the directory). So the rules live here once,
and every broker enforces the same ones.

Rules for services (mqchat's own processes): a token scoped to its service (claim ``svc``, as
:func:`mqchat.lifecycle.service_credentials` mints them) grants that service's topics only;
an unscoped service token (deprecated) is allowed everything.

===========  ===========  ======================================================================
service      action       topics
===========  ===========  ======================================================================
bridge       subscribe    ``in/+/+/+``, ``$share/{group}/in/+/+/+``; receive ``in/{u}/{d}/{c}``
bridge       publish      ``ch/{c}``, ``dev/{u}/{d}/ack``
api          publish      ``user/{u}/events``
workers      publish      ``presence/{u}`` (user presence, retained)
workers      subscribe    ``presence/+/+``, ``$share/{group}/presence/+/+`` (the presence ingester, for
                          external brokers); receive ``presence/{u}/{d}``
===========  ===========  ======================================================================

Rules for devices:

===========  ===============================  =============================================
action       topic                            verdict
===========  ===============================  =============================================
publish      ``in/{me}/{my device}/{c}``      allow: the bridge answers non-members with an
                                              error ack (``not_member``), never silence
publish      ``presence/{me}/{my device}``    allow (also the last will)
publish      ``typing/{c}/{me}``              if member of ``c``
subscribe    ``ch/{c}``, ``typing/{c}/+``     if member of ``c``
subscribe    ``dev/{me}/{my device}/ack``     allow
subscribe    ``user/{me}/events``             allow
subscribe    ``presence/{u}[/{d}]``           allow for me; otherwise if ``u`` shares a channel
receive      same as subscribe, on each delivery, so a removed member stops receiving at once
subscribe    ``$share/{group}/{filter}``      services only (the bridges' shared intake); deny
                                              for devices
anything     ``$SYS/#``, ``#``, other wildcards, other users' topics      deny
===========  ===============================  =============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from mqchat import topics
from mqchat.auth import Principal
from mqchat.errors import InvalidTopic


class Action(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Literal["allow", "deny", "if_member", "if_contact"]
    channel: str | None = None
    user: str | None = None
    reason: str = ""


ALLOW = Verdict("allow")


def deny(reason: str) -> Verdict:
    return Verdict("deny", reason=reason)


def if_member(channel: str) -> Verdict:
    return Verdict("if_member", channel=channel)


def if_contact(user: str) -> Verdict:
    return Verdict("if_contact", user=user)


def authorize(principal: Principal, action: Action, topic: str) -> Verdict:
    """Decide whether ``principal`` may do ``action`` on ``topic`` (a filter for subscribe)."""
    if principal.is_service:
        return ALLOW if principal.service is None else _service(principal.service, action, topic)
    if topic.startswith("$share/"):
        return deny("shared subscriptions are for services")
    try:
        parsed = topics.parse_filter(topic) if action is Action.SUBSCRIBE else topics.parse(topic)
    except InvalidTopic as exc:
        return deny(exc.reason)

    me, my_device = principal.user_id, principal.device_id
    if action is Action.PUBLISH:
        match parsed:
            case topics.Send(user, device, _):
                return ALLOW if (user, device) == (me, my_device) else deny("not your send topic")
            case topics.DevicePresence(user, device):
                return ALLOW if (user, device) == (me, my_device) else deny("not your presence topic")
            case topics.Typing(channel, user):
                return if_member(channel) if user == me else deny("not your typing topic")
        return deny("devices may not publish here")

    # subscribe and receive share the rules
    match parsed:
        case topics.Stream(channel):
            return if_member(channel)
        case topics.Typing(channel, _):
            return if_member(channel)
        case topics.Ack(user, device):
            return ALLOW if (user, device) == (me, my_device) else deny("another device's acks")
        case topics.UserEvents(user):
            return ALLOW if user == me else deny("another user's events")
        case topics.UserPresence(user) | topics.DevicePresence(user, _):
            return ALLOW if user == me else if_contact(user)
    return deny("devices may not subscribe here")


def _service(service: str, action: Action, topic: str) -> Verdict:
    """The topics of one of mqchat's services (the module table)."""
    if action is Action.SUBSCRIBE:
        if service == "bridge":
            flt = _unshared(topic)
            if flt == topics.SEND_FILTER or _forwarded(flt):
                return ALLOW
        if service == "workers":
            # the presence ingester reads device statuses and wills (workers/presence.py)
            flt = _unshared(topic)
            if flt == topics.DEVICE_PRESENCE_FILTER:
                return ALLOW
        if service == "api":
            # REST send: the API waits for the device's ack (api/message_routes.py)
            try:
                if isinstance(topics.parse(topic), topics.Ack):
                    return ALLOW
            except InvalidTopic:
                pass
        return deny(f"the {service} service does not subscribe to {topic}")
    if service == "bridge" and topic.startswith(topics.FORWARD_ROOT):
        # sends one bridge hands to the owner of their channel (bridge/ownership.py)
        return ALLOW if _forwarded(topic) else deny(f"not a forwarding topic: {topic}")
    try:
        parsed = topics.parse(topic)
    except InvalidTopic as exc:
        return deny(exc.reason)
    allowed: tuple[type, ...] = ()
    if service == "bridge":
        allowed = (topics.Send,) if action is Action.RECEIVE else (topics.Stream, topics.Ack)
    elif service == "api":
        # user events; REST send publishes on the device's own send topic and receives its ack
        allowed = (topics.UserEvents, topics.Send) if action is Action.PUBLISH else (topics.Ack,)
    elif service == "workers":
        allowed = (topics.UserPresence,) if action is Action.PUBLISH else (topics.DevicePresence,)
    return ALLOW if isinstance(parsed, allowed) else deny(f"not a topic of the {service} service")


def _unshared(topic_filter: str) -> str:
    """The filter inside ``$share/{group}/{filter}`` ("" for a malformed one), else the filter itself."""
    if not topic_filter.startswith("$share/"):
        return topic_filter
    parts = topic_filter.split("/", 2)
    return parts[2] if len(parts) == 3 and parts[1] else ""


def _forwarded(topic: str) -> bool:
    """A forwarding topic or filter: ``bridge/fwd/{bridge}/in/...`` around a send topic or filter."""
    inner = topics.unforward(topic)
    if inner is None:
        return False
    if inner == topics.SEND_FILTER:
        return True
    try:
        return isinstance(topics.parse(inner), topics.Send)
    except InvalidTopic:
        return False


def resolve(verdict: Verdict, *, channels: frozenset[str], shares_channel: bool | None = None) -> bool:
    """Turn a verdict into allow/deny given the user's channel set.

    Args:
        verdict: from :func:`authorize`.
        channels: the channels the principal is a member of.
        shares_channel: for :data:`if_contact` verdicts, whether the two users share a channel.
    """
    match verdict.kind:
        case "allow":
            return True
        case "if_member":
            return verdict.channel in channels
        case "if_contact":
            return bool(shares_channel)
    return False


class TokenBucket:
    """Rate limit: ``rate`` events per second on average, bursts of up to ``burst``. Pure: the
    caller passes ``now`` (seconds, monotonic)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def allow(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def reserve(self, now: float) -> float:
        """Take a token even if none is left (a debt); returns how long the caller must wait
        before acting for the rate to hold (0: at once)."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - 1
        self._last = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


#: Typing indicators a device may publish: one every two seconds on average, bursts of 3.
TYPING_RATE_PER_S = 0.5
TYPING_BURST = 3
#: Clients drop a typing indicator not refreshed within this time (documented in docs/protocol.md).
TYPING_EXPIRES_S = 6
