"""Broker metrics (Prometheus, default registry) and the amqtt plugin that counts them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.plugins.base import BasePlugin
from prometheus_client import Counter, Gauge

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
