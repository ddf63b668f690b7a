"""How the engine calls its plugins: the decision semantics, in one place.

- **Auth**: plugins returning ``None`` abstain; at least one must answer and all answers must be
  ``True`` (amqtt's rule). An exception refuses (fail closed).
- **Topics**: a plugin returning ``None`` abstains (amqtt denied); any ``False`` denies; no
  plugin at all allows. An exception denies (fail closed).
- **Events**: each hook is awaited in turn, in plugin order; one that raises is logged and does
  not stop the others or affect the connection.
- ``close()`` once per plugin at shutdown, in plugin order.

The chain keeps one list of bound methods per role, built once: a call costs a loop over the
plugins that take part, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from broker.plugin_api import (
    Action,
    AppMessage,
    Authenticator,
    BrokerStarted,
    BrokerStarting,
    BrokerStopped,
    BrokerStopping,
    ClientConnected,
    ClientDisconnected,
    ClientSubscribed,
    ClientUnsubscribed,
    Closable,
    MessageReceived,
    TopicAcl,
    TopicAclNow,
    WillPublished,
)
from broker.session import Session

logger = logging.getLogger(__name__)


def _name(method: Callable[..., Any]) -> str:
    """The plugin a bound method belongs to, for logs (an adapter names the plugin it wraps)."""
    owner = getattr(method, "__self__", None)
    if owner is None:
        return str(getattr(method, "__qualname__", repr(method)))
    return str(getattr(owner, "name", None) or type(owner).__name__)


class PluginChain:
    """The plugins of one broker, sorted by role.

    Args:
        plugins: native plugins (and amqtt adapters), in the order they are consulted.
    """

    def __init__(self, plugins: Iterable[object] = ()) -> None:
        self.plugins: list[object] = []
        self.add(plugins)

    def add(self, plugins: Iterable[object]) -> None:
        """Append ``plugins`` (consulted after those already there)."""
        self.plugins.extend(plugins)
        p = self.plugins
        self.authenticators = [x.authenticate for x in p if isinstance(x, Authenticator)]
        self.acls = [x.topic_allowed for x in p if isinstance(x, TopicAcl)]
        """Empty when no plugin filters topics: deliveries then ask nobody."""
        now = [x.topic_allowed_now for x in p if isinstance(x, TopicAcl) and isinstance(x, TopicAclNow)]
        self._acls_now = now if len(now) == len(self.acls) else None
        """Every topic plugin can answer without awaiting (:class:`TopicAclNow`): :meth:`allowed_now` asks them."""
        self.on_connected = [x.on_client_connected for x in p if isinstance(x, ClientConnected)]
        self.on_disconnected = [x.on_client_disconnected for x in p if isinstance(x, ClientDisconnected)]
        self.on_subscribed = [x.on_client_subscribed for x in p if isinstance(x, ClientSubscribed)]
        self.on_unsubscribed = [x.on_client_unsubscribed for x in p if isinstance(x, ClientUnsubscribed)]
        self.on_message = [x.on_message_received for x in p if isinstance(x, MessageReceived)]
        """Empty when no plugin wants messages: the engine then builds no :class:`AppMessage`."""
        self.on_will = [x.on_will_published for x in p if isinstance(x, WillPublished)]
        self._starting = [x.on_broker_starting for x in p if isinstance(x, BrokerStarting)]
        self._started = [x.on_broker_started for x in p if isinstance(x, BrokerStarted)]
        self._stopping = [x.on_broker_stopping for x in p if isinstance(x, BrokerStopping)]
        self._stopped = [x.on_broker_stopped for x in p if isinstance(x, BrokerStopped)]
        self._closers = [x.close for x in p if isinstance(x, Closable)]

    # -- decisions ----------------------------------------------------------------------------

    async def authenticate(self, session: Session) -> bool:
        answers: list[bool] = []
        for authenticate in self.authenticators:
            try:
                answer = await authenticate(session)
            except Exception:
                logger.exception("auth plugin %s failed; refusing (fail closed)", _name(authenticate))
                return False
            if answer is not None:
                answers.append(bool(answer))
        return bool(answers) and all(answers)

    def allowed_now(self, session: Session, topic: str, action: Action) -> bool | None:
        """:meth:`allowed` without awaiting, when every topic plugin can answer at once; ``None``:
        await :meth:`allowed`."""
        acls = self._acls_now
        if acls is None:
            return None
        undecided = False
        for allows in acls:
            try:
                answer = allows(session, topic, action)
            except Exception:
                logger.exception("topic plugin %s failed; denying (fail closed)", _name(allows))
                return False
            if answer is False:
                return False
            if answer is None:
                undecided = True
        return None if undecided else True

    async def allowed(self, session: Session, topic: str, action: Action) -> bool:
        for allows in self.acls:
            try:
                answer = await allows(session, topic, action)
            except Exception:
                logger.exception("topic plugin %s failed; denying (fail closed)", _name(allows))
                return False
            if answer is False:
                return False
        return True

    # -- events -------------------------------------------------------------------------------

    async def client_connected(self, session: Session) -> None:
        for hook in self.on_connected:
            await _call(hook, session)

    async def client_disconnected(self, session: Session) -> None:
        for hook in self.on_disconnected:
            await _call(hook, session)

    async def client_subscribed(self, session: Session, topic: str, qos: int) -> None:
        for hook in self.on_subscribed:
            await _call(hook, session, topic, qos)

    async def client_unsubscribed(self, session: Session, topic: str) -> None:
        for hook in self.on_unsubscribed:
            await _call(hook, session, topic)

    async def message_received(self, session: Session, message: AppMessage) -> None:
        for hook in self.on_message:  # once per PUBLISH: no helper coroutine in between
            try:
                await hook(session, message)
            except Exception:
                logger.exception("plugin hook %s.on_message_received failed", _name(hook))

    async def will_published(self, session: Session, message: AppMessage) -> None:
        for hook in self.on_will:
            await _call(hook, session, message)

    async def broker_starting(self) -> None:
        for hook in self._starting:
            await _call(hook)

    async def broker_started(self) -> None:
        for hook in self._started:
            await _call(hook)

    async def broker_stopping(self) -> None:
        for hook in self._stopping:
            await _call(hook)

    async def broker_stopped(self) -> None:
        for hook in self._stopped:
            await _call(hook)

    async def close(self) -> None:
        for close in self._closers:
            await _call(close)


async def _call(hook: Callable[..., Awaitable[None]], *args: Any) -> None:
    try:
        await hook(*args)
    except Exception:
        logger.exception("plugin hook %s.%s failed", _name(hook), getattr(hook, "__name__", "?"))
