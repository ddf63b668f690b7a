"""Fixes to amqtt's protocol handling that the product depends on, applied at the narrowest seam.

amqtt 0.12.1 never enforces keep-alive: its reader times out after the keep-alive period and
then ignores the timeout, so a phone that loses its network without a TCP FIN is never dropped
and its last will (our presence signal) is never published. MQTT 3.1.1 §3.1.2.10: "If the Keep
Alive value is non-zero and the Server does not receive a Control Packet from the Client within
one and a half times the Keep Alive time period, it MUST disconnect the Network Connection".

- :func:`install` makes the broker handler close the connection on that timeout; the normal
  close path then publishes the will.
- :func:`stretch_keepalive` turns the keep-alive the reader waits for into 1.5 x the client's,
  as the spec says (called once per CONNECT, after authentication).

Two more, for the same reason (a phone on a hostile network must not hurt anyone else):

- a socket that never sends CONNECT is closed after ``connect_timeout_s`` (slowloris); amqtt waited
  forever and, on a failed first packet, left the socket open;
- :class:`MqchatBroker` sends retained messages only for subscriptions the session really holds,
  and only those its ACL lets it receive; amqtt sent a newly connected client the retained
  messages matching *every* client's subscriptions, which would leak retained presence.

tests/e2e/test_presence.py and tests/e2e/test_broker_hardening.py check these against real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

logger = logging.getLogger(__name__)

_original_init_from_connect = BrokerProtocolHandler.init_from_connect.__func__

_closing: set[asyncio.Task[None]] = set()


def _close_silent_client(self: Any) -> None:
    session = getattr(self, "session", None)
    writer = getattr(self, "writer", None)
    logger.info("client %s silent for 1.5 x keep-alive; closing the connection",
                getattr(session, "client_id", None))
    if writer is not None:
        task = asyncio.get_running_loop().create_task(writer.close())
        _closing.add(task)  # keep a reference until it is done
        task.add_done_callback(_closing.discard)


def install(*, connect_timeout_s: float = 10.0) -> None:
    """Patch amqtt's broker handler (idempotent)."""
    BrokerProtocolHandler.handle_read_timeout = _close_silent_client

    async def init_from_connect(cls: Any, reader: Any, writer: Any, plugins_manager: Any,
                                loop: Any = None) -> Any:
        try:
            return await asyncio.wait_for(_original_init_from_connect(cls, reader, writer, plugins_manager, loop),
                                          connect_timeout_s)
        except (TimeoutError, NoDataError) as exc:
            logger.info("closing a connection that sent no valid CONNECT within %.0fs", connect_timeout_s)
            await writer.close()
            raise NoDataError("no CONNECT") from exc

    BrokerProtocolHandler.init_from_connect = classmethod(init_from_connect)


class MqchatBroker(Broker):
    """amqtt's broker with retained messages delivered only where they belong, and a gradual drain."""

    async def drain(self, over_s: float, *, step_s: float = 0.1) -> int:
        """Close client connections in even batches over ``over_s`` seconds, so a node being
        replaced does not send all its clients back to the load balancer in one herd. Wills are
        cleared first: the clients are not gone, they are moving. Returns how many were closed."""
        handlers = [(session, handler) for session, handler in list(self._sessions.values())
                    if session.transitions.is_connected()]
        if not handlers:
            return 0
        steps = max(1, round(over_s / step_s))
        per_step = math.ceil(len(handlers) / steps)
        logger.info("draining %d connections over %.1fs", len(handlers), over_s)
        for start in range(0, len(handlers), per_step):
            for session, handler in handlers[start : start + per_step]:
                session.will_flag = False
                if handler.writer is not None:
                    await handler.writer.close()
            await asyncio.sleep(step_s)
        return len(handlers)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Any) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        if not any(s.client_id == session.client_id for s, _ in holders):
            return  # amqtt calls this with other clients' filters on CONNECT
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                continue
            await handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)


def stretch_keepalive(session: Any) -> None:
    """Make the broker wait 1.5 x the client's keep-alive before dropping it."""
    if session.keep_alive and session.keep_alive > 0:
        session.keep_alive = math.ceil(session.keep_alive * 1.5)
