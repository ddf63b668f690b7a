"""Retained messages and last wills.

A retained message is kept per topic (an empty payload clears it [MQTT-3.3.1-10]) and sent to a
client only for the filter it was just granted, and only if the ACL lets the client receive it.
A will is published when a connection ends without DISCONNECT, unless it was closed by takeover,
drain or shutdown (the client is not gone); it passes the ACL like any PUBLISH, and the plugins'
``on_will_published`` hook hears of it.

Bounds (``broker.*`` settings, through :class:`~broker.limits.Limits`): the RETAIN flag is honoured
only on ``retain_prefixes`` (mqchat's broker: ``presence/``; elsewhere the message is delivered
and not kept), and the store holds at most ``retained_max_count`` messages and
``retained_max_bytes`` payload bytes (a message that would pass either is delivered and not kept;
counted as ``mqchat_broker_retained_refused``). Device presence payloads are checked by
:func:`presence_ok` before they are relayed or kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from broker.limits import Limits, Stats
from broker.plugin_api import Action, AppMessage
from broker.plugin_chain import PluginChain
from broker.routing import Router
from broker.session import Session
from broker.topic_tree import matches
from mqchat import topics
from mqchat.mqtt import codec
from mqchat.schema import PresencePayload

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

    def __init__(self, plugins: PluginChain, router: Router, limits: Limits | None = None,
                 stats: Stats | None = None) -> None:
        self.by_topic: dict[str, Retained] = {}
        self.bytes = 0
        """Payload bytes held."""
        self._plugins = plugins
        self._router = router
        self._limits = limits or Limits()
        self._stats = stats or Stats()

    def retain(self, topic: str, data: bytes, qos: int) -> bool:
        """Keep (or, with an empty payload, clear) the retained message of ``topic`` [MQTT-3.3.1-10].
        Returns False (and keeps nothing) where RETAIN is not honoured or the store is full."""
        limits = self._limits
        if limits.retain_prefixes and not topic.startswith(limits.retain_prefixes):
            return False
        old = self.by_topic.get(topic)
        if not data:
            if old is not None:
                del self.by_topic[topic]
                self.bytes -= len(old.data)
            return True
        grows = len(data) - (len(old.data) if old is not None else 0)
        if ((old is None and limits.retained_max_count and len(self.by_topic) >= limits.retained_max_count)
                or (limits.retained_max_bytes and grows > 0 and self.bytes + grows > limits.retained_max_bytes)):
            self._stats.retained_refused += 1
            logger.warning("retained store full (%d messages, %d bytes); not keeping %s", len(self.by_topic),
                           self.bytes, topic)
            return False
        self.by_topic[topic] = Retained(topic, data, qos)
        self.bytes += grows
        return True

    def presence_ok(self, topic: str, data: bytes) -> bool:
        """Whether a PUBLISH may be relayed: with ``validate_presence``, a device presence topic
        must carry mqchat presence JSON (``{"status": "online"|"away"|"offline", "ts": int}``)."""
        if not self._limits.validate_presence or not topic.startswith(topics.PRESENCE + "/") \
                or topic.count("/") != 2:
            return True
        try:
            msgspec.json.decode(data, type=PresencePayload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._stats.invalid_presence += 1
            logger.info("dropping an invalid presence payload on %s (%d bytes)", topic, len(data))
            return False
        return True

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
        if not self._retained.presence_ok(topic, data):
            return
        self._stats.wills += 1
        if session.will_retain:
            self._retained.retain(topic, data, session.will_qos)
        await self._router.publish(topic, data, session.will_qos)
        await self._plugins.will_published(session, AppMessage(topic, data, session.will_qos, session.will_retain))
