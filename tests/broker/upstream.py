"""mqchat's native plugins inside plain upstream amqtt, for the comparison runs of this suite.

Plain amqtt only loads amqtt-API plugins, so :class:`MqchatPluginsOnAmqtt` is one: it builds
:func:`broker.app.native_plugins` from the process settings (``MQCHAT_*`` variables) and answers
amqtt's calls with them, through the same :class:`~broker.plugin_chain.PluginChain` our engine
uses. amqtt's own semantics stay amqtt's (a ``None`` from a topic plugin denies, hooks are not
awaited): that is what the suite measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from broker.app import native_plugins
from broker.plugin_api import Action
from broker.plugin_chain import PluginChain
from mqchat.config import load_settings

PATH = "tests.broker.upstream.MqchatPluginsOnAmqtt"


class MqchatPluginsOnAmqtt(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]
    """JWT authentication, the topic ACL (and metrics, presence) of ``native_plugins(settings)``."""

    @dataclass
    class Config:
        pass

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._chain = PluginChain(native_plugins(load_settings()))

    async def authenticate(self, *, session: Any) -> bool:
        return await self._chain.authenticate(session)

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None, action: Any = None) -> bool:
        if session is None or topic is None or action is None:
            return False
        return await self._chain.allowed(session, topic, Action(action.value))

    async def on_broker_post_start(self) -> None:
        await self._chain.broker_started()

    async def on_broker_client_connected(self, *, client_id: str, client_session: Any) -> None:
        await self._chain.client_connected(client_session)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Any) -> None:
        await self._chain.client_disconnected(client_session)

    async def close(self) -> None:
        await self._chain.close()
