"""amqtt's plugin API, kept as an adapter: third-party amqtt plugins run on the native protocol.

Plugins named in the configuration's ``plugins`` mapping (dotted path → settings for the
plugin's ``Config`` dataclass) are loaded by amqtt's own
:class:`~amqtt.plugins.manager.PluginManager` (import, subclass check, ``Config`` filled with
dacite, strict), then each is presented to the engine as the native protocols of
:mod:`broker.plugin_api` it fits::

    BaseAuthPlugin.authenticate(session=)                  ──▶ Authenticator
    BaseTopicPlugin.topic_filtering(session=, topic=, action=) ──▶ TopicAcl  (amqtt's Action enum)
    on_broker_client_connected(client_id=, client_session=) ──▶ ClientConnected, and so on
    on_broker_will_published(client_id=, message=)          ──▶ WillPublished (ours; amqtt has none)
    close()                                                 ──▶ Closable

Each adapter method returns the plugin's own coroutine (no frame of its own in between). The
semantics are the engine's (:mod:`broker.plugin_chain`): a topic plugin returning ``None``
abstains, where plain amqtt denied.

A plugin's ``context`` is :class:`AmqttContext`, amqtt's ``BrokerContext`` answered from the
broker's public plugin-facing methods (:class:`BrokerView`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, Protocol

from amqtt.broker import BrokerContext
from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import BrokerConfig
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.plugins.manager import PluginManager

from broker.plugin_api import Action, AppMessage
from broker.session import Session

#: Our actions → amqtt's, looked up (never built) per call.
_ACTIONS: dict[Action, AmqttAction] = {action: AmqttAction(action.value) for action in Action}


class BrokerView(Protocol):
    """What an amqtt plugin's context may see of the broker and do to it."""

    @property
    def sessions(self) -> Mapping[str, Session]: ...

    @property
    def retained(self) -> Mapping[str, Any]: ...

    def subscriptions(self) -> dict[str, list[tuple[Session, int]]]: ...

    async def publish(self, topic: str, payload: bytes, qos: int) -> int: ...

    def retain(self, topic: str, data: bytes, qos: int) -> None: ...

    def add_subscription(self, client_id: str, topic: str | None, qos: int | None) -> None: ...


class AmqttContext(BrokerContext):  # type: ignore[misc]  # amqtt is untyped: BrokerContext is Any
    """amqtt's plugin context (``BrokerContext``), on the broker's public methods."""

    def __init__(self, broker: BrokerView, config: BrokerConfig) -> None:
        super().__init__(broker)
        self.config = config
        self._view = broker

    async def broadcast_message(self, topic: str, data: bytes, qos: int | None = None) -> None:
        await self._view.publish(topic, bytes(data), qos or 0)

    async def retain_message(self, topic_name: str, data: bytes | bytearray, qos: int | None = None) -> None:
        self._view.retain(topic_name, bytes(data), qos or 0)

    @property
    def sessions(self) -> Iterator[Session]:
        yield from list(self._view.sessions.values())

    def get_session(self, client_id: str) -> Session | None:
        return self._view.sessions.get(client_id)

    @property
    def retained_messages(self) -> dict[str, Any]:
        return dict(self._view.retained)

    @property
    def subscriptions(self) -> dict[str, list[tuple[Session, int]]]:
        return self._view.subscriptions()

    async def add_subscription(self, client_id: str, topic: str | None, qos: int | None) -> None:
        self._view.add_subscription(client_id, topic, qos)


def load(config: BrokerConfig, broker: BrokerView) -> list[object]:
    """The amqtt plugins of ``config``, loaded by amqtt and adapted, in configuration order.

    Raises:
        amqtt.errors.PluginLoadError, PluginImportError, PluginInitError: a plugin that does not
            load (unknown path, bad settings, failing constructor), as amqtt raises them.
    """
    if not config.plugins:
        return []
    manager: PluginManager[Any] = PluginManager("amqtt.broker.plugins", AmqttContext(broker, config),
                                                asyncio.get_running_loop())
    return [part for plugin in manager.plugins for part in adapt(plugin)]


def adapt(plugin: Any) -> list[object]:
    """The native faces of one amqtt plugin: one object per role it plays."""
    parts: list[object] = []
    if isinstance(plugin, BaseAuthPlugin):
        parts.append(_Auth(plugin))
    if isinstance(plugin, BaseTopicPlugin):
        parts.append(_Topics(plugin))
    for event, face in _EVENTS.items():
        if callable(getattr(plugin, f"on_{event}", None)):
            parts.append(face(plugin))
    if callable(getattr(plugin, "close", None)):
        parts.append(_Close(plugin))
    return parts


class _Face:
    __slots__ = ("name", "plugin")

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.name = f"amqtt:{type(plugin).__name__}"


class _Auth(_Face):
    def authenticate(self, session: Session) -> Awaitable[bool | None]:
        return self.plugin.authenticate(session=session)  # type: ignore[no-any-return]


class _Topics(_Face):
    def topic_allowed(self, session: Session, topic: str, action: Action) -> Awaitable[bool | None]:
        return self.plugin.topic_filtering(session=session, topic=topic,  # type: ignore[no-any-return]
                                           action=_ACTIONS[action])


class _Connected(_Face):
    def on_client_connected(self, session: Session) -> Awaitable[None]:
        return self.plugin.on_broker_client_connected(  # type: ignore[no-any-return]
            client_id=session.client_id, client_session=session)


class _Disconnected(_Face):
    def on_client_disconnected(self, session: Session) -> Awaitable[None]:
        return self.plugin.on_broker_client_disconnected(  # type: ignore[no-any-return]
            client_id=session.client_id, client_session=session)


class _Subscribed(_Face):
    def on_client_subscribed(self, session: Session, topic: str, qos: int) -> Awaitable[None]:
        return self.plugin.on_broker_client_subscribed(  # type: ignore[no-any-return]
            client_id=session.client_id, topic=topic, qos=qos)


class _Unsubscribed(_Face):
    def on_client_unsubscribed(self, session: Session, topic: str) -> Awaitable[None]:
        return self.plugin.on_broker_client_unsubscribed(  # type: ignore[no-any-return]
            client_id=session.client_id, topic=topic)


class _Message(_Face):
    def on_message_received(self, session: Session, message: AppMessage) -> Awaitable[None]:
        return self.plugin.on_broker_message_received(  # type: ignore[no-any-return]
            client_id=session.client_id, message=message)


class _Will(_Face):
    def on_will_published(self, session: Session, message: AppMessage) -> Awaitable[None]:
        return self.plugin.on_broker_will_published(  # type: ignore[no-any-return]
            client_id=session.client_id, message=message)


class _Starting(_Face):
    def on_broker_starting(self) -> Awaitable[None]:
        return self.plugin.on_broker_pre_start()  # type: ignore[no-any-return]


class _Started(_Face):
    def on_broker_started(self) -> Awaitable[None]:
        return self.plugin.on_broker_post_start()  # type: ignore[no-any-return]


class _Stopping(_Face):
    def on_broker_stopping(self) -> Awaitable[None]:
        return self.plugin.on_broker_pre_shutdown()  # type: ignore[no-any-return]


class _Stopped(_Face):
    def on_broker_stopped(self) -> Awaitable[None]:
        return self.plugin.on_broker_post_shutdown()  # type: ignore[no-any-return]


class _Close(_Face):
    def close(self) -> Awaitable[None]:
        return self.plugin.close()  # type: ignore[no-any-return]


#: amqtt event name (``on_`` + name is the plugin's method) → its native face.
_EVENTS: dict[str, type[_Face]] = {
    "broker_pre_start": _Starting,
    "broker_post_start": _Started,
    "broker_pre_shutdown": _Stopping,
    "broker_post_shutdown": _Stopped,
    "broker_client_connected": _Connected,
    "broker_client_disconnected": _Disconnected,
    "broker_client_subscribed": _Subscribed,
    "broker_client_unsubscribed": _Unsubscribed,
    "broker_message_received": _Message,
    "broker_will_published": _Will,
}
