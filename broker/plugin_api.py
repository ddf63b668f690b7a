"""The broker's native plugin protocol: what a plugin may implement, and what it is given.

A plugin is any object; the broker looks at which of these protocols it implements (one method
each) and calls it for that role only::

    CONNECT ───────────▶ Authenticator.authenticate(session)          None abstains; all answers True
    SUBSCRIBE, PUBLISH,
    every delivery ────▶ TopicAcl.topic_allowed(session, topic, action)  None abstains; any False denies
                         (TopicAclNow.topic_allowed_now first, when every topic plugin has it: no await)
    events ────────────▶ on_client_connected(session) ... on_will_published(session, message)
    shutdown ──────────▶ close()

The decision semantics live in :class:`broker.plugin_chain.PluginChain`. Plugins are built by the
composition root (:mod:`broker.app`) with typed settings; amqtt-API plugins named in the
configuration run through :mod:`broker.amqtt_adapter`, which presents each as the protocols below.

The methods are declared as returning an ``Awaitable``: an ``async def`` implements them, and an
adapter may hand back the wrapped plugin's own coroutine without adding a frame of its own (the
topic check runs once per delivery).

``session`` is a :class:`broker.session.Session`; plugins read its identity fields (``client_id``,
``username``, ``password``, ``clean_session``, ``keep_alive``, ``will_*``, ``remote_address``)
and keep their own per-client state in ``session.attributes``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from broker.session import Session
from mqchat.policy import Action

__all__ = [
    "LIMITS_EXEMPT",
    "Action",
    "AppMessage",
    "Authenticator",
    "BrokerStarted",
    "BrokerStarting",
    "BrokerStopped",
    "BrokerStopping",
    "ClientConnected",
    "ClientDisconnected",
    "ClientSubscribed",
    "ClientUnsubscribed",
    "Closable",
    "MessageReceived",
    "TopicAcl",
    "TopicAclNow",
    "WillPublished",
]

#: An authenticator sets ``session.attributes[LIMITS_EXEMPT] = True`` on trusted clients (our
#: services): no publish rate limit, and 10x the in-flight window and 100x the queue.
LIMITS_EXEMPT = "broker.limits_exempt"


@dataclass(slots=True)
class AppMessage:
    """A message as event hooks see it (amqtt's ``ApplicationMessage`` field names, so the amqtt
    adapter passes it on unchanged)."""

    topic: str
    data: bytes
    qos: int
    retain: bool = False
    packet_id: int = 0


# -- decisions ---------------------------------------------------------------------------------


@runtime_checkable
class Authenticator(Protocol):
    """Decides a CONNECT."""

    def authenticate(self, session: Session) -> Awaitable[bool | None]:
        """True: accept; False: refuse (CONNACK 0x05); None: no opinion. An exception refuses."""
        ...


@runtime_checkable
class TopicAcl(Protocol):
    """Decides SUBSCRIBE (per filter), PUBLISH, and each delivery (``Action.RECEIVE``), retained,
    queued and will messages included."""

    def topic_allowed(self, session: Session, topic: str, action: Action) -> Awaitable[bool | None]:
        """True: allow; False: deny; None: no opinion. An exception denies."""
        ...


@runtime_checkable
class TopicAclNow(Protocol):
    """Optional, beside :class:`TopicAcl`: the same decision without awaiting, when the plugin can
    make it from what it holds (the per-delivery path asks this first: no coroutine per delivery)."""

    def topic_allowed_now(self, session: Session, topic: str, action: Action) -> bool | None:
        """True: allow; False: deny; None: undecided here (``topic_allowed`` is then awaited). An
        exception denies. Must agree with ``topic_allowed`` whenever it answers."""
        ...


# -- events: awaited in the order they happen on a connection; keep them fast ------------------


@runtime_checkable
class ClientConnected(Protocol):
    def on_client_connected(self, session: Session) -> Awaitable[None]:
        """CONNACK accepted was written; before any redelivery to a resumed session."""
        ...


@runtime_checkable
class ClientDisconnected(Protocol):
    def on_client_disconnected(self, session: Session) -> Awaitable[None]:
        """The connection is gone (after its will, if one was published)."""
        ...


@runtime_checkable
class ClientSubscribed(Protocol):
    def on_client_subscribed(self, session: Session, topic: str, qos: int) -> Awaitable[None]:
        """A filter was granted (after the SUBACK, before its retained messages)."""
        ...


@runtime_checkable
class ClientUnsubscribed(Protocol):
    def on_client_unsubscribed(self, session: Session, topic: str) -> Awaitable[None]: ...


@runtime_checkable
class MessageReceived(Protocol):
    def on_message_received(self, session: Session, message: AppMessage) -> Awaitable[None]:
        """A PUBLISH arrived, before the topic ACL decides it."""
        ...


@runtime_checkable
class WillPublished(Protocol):
    def on_will_published(self, session: Session, message: AppMessage) -> Awaitable[None]: ...


@runtime_checkable
class BrokerStarting(Protocol):
    def on_broker_starting(self) -> Awaitable[None]:
        """Before the listeners open."""
        ...


@runtime_checkable
class BrokerStarted(Protocol):
    def on_broker_started(self) -> Awaitable[None]:
        """The listeners are open."""
        ...


@runtime_checkable
class BrokerStopping(Protocol):
    def on_broker_stopping(self) -> Awaitable[None]:
        """Shutdown began; connections are still open."""
        ...


@runtime_checkable
class BrokerStopped(Protocol):
    def on_broker_stopped(self) -> Awaitable[None]:
        """Every connection is closed; ``close()`` comes next."""
        ...


@runtime_checkable
class Closable(Protocol):
    def close(self) -> Awaitable[None]:
        """Release the plugin's resources; called once, at shutdown."""
        ...
