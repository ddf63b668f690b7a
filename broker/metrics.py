"""Broker metrics (Prometheus, default registry): the native plugin that counts connections from
the broker's events, and a collector that reads the engine's counters and queues at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker import gaps
from broker.plugin_api import AppMessage, ClientConnected, ClientDisconnected, MessageReceived
from broker.session import Session

if TYPE_CHECKING:
    from broker.engine import MqchatBroker

CONNECTIONS = Gauge("mqchat_broker_connections", "Clients connected now.")
CONNECTS = Counter("mqchat_broker_connects_total", "Accepted CONNECTs.")
DISCONNECTS = Counter("mqchat_broker_disconnects_total", "Client disconnections (clean or not).")
MESSAGES_IN = Counter("mqchat_broker_messages_received_total", "PUBLISH packets received from clients.")


class MetricsPlugin:
    """Counts connections and inbound messages from the broker's events (a native plugin)."""

    async def on_client_connected(self, session: Session) -> None:
        CONNECTS.inc()
        CONNECTIONS.inc()

    async def on_client_disconnected(self, session: Session) -> None:
        DISCONNECTS.inc()
        CONNECTIONS.dec()

    async def on_message_received(self, session: Session, message: AppMessage) -> None:
        MESSAGES_IN.inc()


if TYPE_CHECKING:  # static conformance: mypy checks the plugin against the protocols it implements

    def _conforms(p: MetricsPlugin) -> tuple[ClientConnected, ClientDisconnected, MessageReceived]:
        return p, p, p


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
            ("retained_refused", "Retained messages not kept: the retained store was full.", s.retained_refused),
            ("invalid_presence", "Presence PUBLISHes (and wills) dropped: not valid presence JSON.",
             s.invalid_presence),
            ("sessions_expired", "Persistent sessions dropped after broker.session_expiry_s away.",
             s.sessions_expired),
            ("user_connection_refusals", "CONNECTs refused: the user held broker.max_connections_per_user.",
             s.user_connection_refusals),
            ("gap_notices", "Gap notices sent: a client told which messages were dropped for it.", s.gap_notices),
            ("fanouts_deferred", "Publishes delivered by the sliced fan-out (many subscribers).", s.fanouts_deferred),
            ("fanout_waits", "Times a publisher waited for the sliced fan-out to catch up.", s.fanout_waits),
        ):
            yield CounterMetricFamily(f"mqchat_broker_{name}", doc, value=value)
        dropped = CounterMetricFamily("mqchat_broker_dropped", "Deliveries the broker dropped, by reason "
                                      "(docs/broker.md, Slow consumers).", labels=["reason"])
        for reason, value in ((gaps.QUEUE_FULL, s.dropped_queue_full), (gaps.QOS0_BACKLOG, s.dropped_qos0),
                              (gaps.SESSION_EXPIRED, s.dropped_session_expired),
                              (gaps.NOT_ALLOWED, s.dropped_not_allowed)):
            dropped.add_metric([reason], value)
        yield dropped
        sessions = list(b.sessions.values())
        for name, doc, value in (
            ("sessions", "Sessions held (connected, and persistent ones whose client is away).", len(sessions)),
            ("queued_messages", "Messages queued for clients, across sessions.", sum(len(x.queue) for x in sessions)),
            ("inflight_messages", "QoS 1/2 messages sent and not yet acknowledged.",
             sum(len(x.inflight) for x in sessions)),
            ("retained_messages", "Retained messages held.", len(b.retained)),
            ("retained_bytes", "Payload bytes of the retained messages held.", b.retained_bytes),
            ("fanout_pending", "Deliveries waiting in the sliced fan-out.", b.router.fanouts_pending()),
        ):
            yield GaugeMetricFamily(f"mqchat_broker_{name}", doc, value=value)
        yield CounterMetricFamily("mqchat_broker_queue_dropped", "Messages dropped from full client queues.",
                                  value=sum(x.dropped for x in sessions))


def register(broker: MqchatBroker, registry: CollectorRegistry = REGISTRY) -> EngineCollector:
    collector = EngineCollector(broker)
    registry.register(collector)
    return collector
