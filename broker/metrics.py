"""Broker metrics (Prometheus, default registry): the plugin that counts connections from the
broker's events, and a collector that reads the engine's counters and queues at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amqtt.plugins.base import BasePlugin
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from broker.engine import MqchatBroker

CONNECTIONS = Gauge("mqchat_broker_connections", "Clients connected now.")
CONNECTS = Counter("mqchat_broker_connects_total", "Accepted CONNECTs.")
DISCONNECTS = Counter("mqchat_broker_disconnects_total", "Client disconnections (clean or not).")
MESSAGES_IN = Counter("mqchat_broker_messages_received_total", "PUBLISH packets received from clients.")


class MetricsPlugin(BasePlugin):
    """Counts connections and inbound messages from amqtt's events."""

    @dataclass
    class Config:
        pass

    def __init__(self, context: Any) -> None:
        super().__init__(context)

    async def on_broker_client_connected(self, *, client_id: str, client_session: Any) -> None:
        CONNECTS.inc()
        CONNECTIONS.inc()

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Any) -> None:
        DISCONNECTS.inc()
        CONNECTIONS.dec()

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        MESSAGES_IN.inc()


class EngineCollector(Collector):
    """Reads the engine's own counters at scrape time (the delivery path only increments ints)."""

    def __init__(self, broker: MqchatBroker) -> None:
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        b = self._broker
        s = b.stats
        for name, doc, value in (
            ("deliveries", "PUBLISH packets written to subscribers.", s.deliveries),
            ("dropped_qos0", "QoS 0 deliveries dropped because the subscriber's socket was backed up.",
             s.dropped_qos0),
            ("protocol_violations", "Connections closed for breaking MQTT 3.1.1.", s.violations),
            ("rate_limited", "PUBLISH packets held back by a client's publish rate limit.", s.rate_limited),
            ("wills", "Last-will messages published.", s.wills),
        ):
            yield CounterMetricFamily(f"mqchat_broker_{name}", doc, value=value)
        sessions = list(b.sessions.values())
        for name, doc, value in (
            ("sessions", "Sessions held (connected, and persistent ones whose client is away).", len(sessions)),
            ("queued_messages", "Messages queued for clients, across sessions.", sum(len(x.queue) for x in sessions)),
            ("inflight_messages", "QoS 1/2 messages sent and not yet acknowledged.",
             sum(len(x.inflight) for x in sessions)),
            ("retained_messages", "Retained messages held.", len(b.retained)),
        ):
            yield GaugeMetricFamily(f"mqchat_broker_{name}", doc, value=value)
        yield CounterMetricFamily("mqchat_broker_queue_dropped", "Messages dropped from full client queues.",
                                  value=sum(x.dropped for x in sessions))


def register(broker: MqchatBroker, registry: CollectorRegistry = REGISTRY) -> EngineCollector:
    collector = EngineCollector(broker)
    registry.register(collector)
    return collector
