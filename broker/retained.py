"""Retained messages and last wills.

A retained message is kept per topic (an empty payload clears it [MQTT-3.3.1-10]) and sent to a
client only for the filter it was just granted, and only if the ACL lets the client receive it.
A will is published when a connection ends without DISCONNECT, unless it was closed by takeover,
drain or shutdown (the client is not gone); it passes the ACL like any PUBLISH, and the plugins'
``on_will_published`` hook hears of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from broker.limits import Stats
from broker.plugin_api import Action, AppMessage
from broker.plugin_chain import PluginChain
from broker.routing import Router
from broker.session import Session
from broker.topic_tree import matches
from mqchat.mqtt import codec

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Retained:
    topic: str
    data: bytes
    qos: int


class RetainedMessages:
    """The retained message of each topic.

    Args:
        plugins: asked with ``Action.RECEIVE`` before a retained message is sent.
        router: delivers them.
    """

    def __init__(self, plugins: PluginChain, router: Router) -> None:
        self.by_topic: dict[str, Retained] = {}
        self._plugins = plugins
        self._router = router

    def retain(self, topic: str, data: bytes, qos: int) -> None:
        """Keep (or, with an empty payload, clear) the retained message of ``topic`` [MQTT-3.3.1-10]."""
        if data:
            self.by_topic[topic] = Retained(topic, data, qos)
        else:
            self.by_topic.pop(topic, None)

    def matching(self, flt: str) -> list[Retained]:
        if "+" in flt or "#" in flt:
            return [r for topic, r in list(self.by_topic.items()) if matches(topic, flt)]
        one = self.by_topic.get(flt)
        return [one] if one is not None else []

    async def send(self, session: Session, flt: str, granted: int) -> None:
        """The retained messages matching ``flt``, just granted at QoS ``granted``, to ``session``."""
        for r in self.matching(flt):
            if await self._plugins.allowed(session, r.topic, Action.RECEIVE):
                self._router.deliver(session, r.topic, codec.encode_topic(r.topic), r.data, min(granted, r.qos),
                                     retain=True)


class Wills:
    """Publishes the will of a client that went away."""

    def __init__(self, plugins: PluginChain, router: Router, retained: RetainedMessages, stats: Stats) -> None:
        self._plugins = plugins
        self._router = router
        self._retained = retained
        self._stats = stats

    async def publish(self, session: Session) -> None:
        topic, data = session.will_topic or "", session.will_message or b""
        if not await self._plugins.allowed(session, topic, Action.PUBLISH):
            logger.info("will of %s on %s denied by the ACL; not published", session.client_id, topic)
            return
        self._stats.wills += 1
        if session.will_retain:
            self._retained.retain(topic, data, session.will_qos)
        await self._router.publish(topic, data, session.will_qos)
        await self._plugins.will_published(session, AppMessage(topic, data, session.will_qos, session.will_retain))
