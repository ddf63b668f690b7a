"""Routing and delivery: subscriptions, publish → deliver, and the queues behind the window.

::

    publish(topic) ──▶ TopicTree.match ──▶ for each subscriber: ACL (receive) ──▶ deliver
                                                  │
    deliver: connected, window open ──▶ in flight, written to its socket (no task, no queue)
             window full / socket backed up ──▶ session queue ──▶ fill() when acks free the window
             client away (persistent session) ──▶ session queue, ACL asked again when sent

QoS is min(publish, granted). QoS 0 to a backed-up socket is dropped (counted), as MQTT allows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from broker.limits import Stats
from broker.plugin_api import Action
from broker.plugin_chain import PluginChain
from broker.session import Outgoing, Session
from broker.topic_tree import TopicTree
from mqchat.mqtt import codec

if TYPE_CHECKING:
    from broker.connection import Connection

logger = logging.getLogger(__name__)

Spawn = Callable[[Awaitable[Any], str], "asyncio.Task[Any]"]


class Router:
    """The subscriptions of every session, and delivery to them.

    Args:
        sessions: the broker's sessions by client id (kept by :class:`broker.sessions.Sessions`).
        plugins: asked with ``Action.RECEIVE`` for every delivery.
        stats: the engine's counters.
        spawn: starts a tracked task (the ACL recheck of a resumed session's queue).
    """

    def __init__(self, sessions: dict[str, Session], plugins: PluginChain, stats: Stats, spawn: Spawn) -> None:
        self.sessions = sessions
        self.tree = TopicTree()
        self.plugins = plugins
        self.stats = stats
        self._spawn = spawn

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, session: Session, flt: str, qos: int) -> None:
        session.subscriptions[flt] = qos
        self.tree.add(flt, session.client_id, qos)

    def unsubscribe(self, session: Session, flt: str) -> None:
        if session.subscriptions.pop(flt, None) is not None:
            self.tree.remove(flt, session.client_id)

    def drop_subscriptions(self, session: Session) -> None:
        for flt in session.subscriptions:
            self.tree.remove(flt, session.client_id)
        session.subscriptions = {}

    def subscribers(self) -> dict[str, list[tuple[Session, int]]]:
        """Filter → [(session, granted QoS)], for plugins that inspect the broker."""
        out: dict[str, list[tuple[Session, int]]] = {}
        for session in self.sessions.values():
            for flt, qos in session.subscriptions.items():
                out.setdefault(flt, []).append((session, qos))
        return out

    # -- delivery -----------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Deliver to every matching subscription the ACL lets receive it, at min(publish, granted)
        QoS. Returns the number of sessions it went to."""
        targets = self.tree.match(topic)
        if not targets:
            return 0
        topic_bytes = codec.encode_topic(topic)
        check = bool(self.plugins.acls)
        sent = 0
        for client_id, granted in targets.items():
            session = self.sessions.get(client_id)
            if session is None:
                continue
            if check and not await self.plugins.allowed(session, topic, Action.RECEIVE):
                continue
            self.deliver(session, topic, topic_bytes, payload, min(qos, granted))
            sent += 1
        return sent

    def deliver(self, session: Session, topic: str, topic_bytes: bytes, payload: bytes, qos: int,
                retain: bool = False) -> None:
        conn = session.connection
        if conn is None or conn.state != "connected":
            if qos and not session.clean_session:
                session.enqueue(Outgoing(topic, payload, qos, retain, recheck=True))
            return
        if qos == 0:
            if conn.writing_paused:
                self.stats.dropped_qos0 += 1
                return
            conn.write(codec.encode_publish(topic_bytes, payload, 0, retain))
            self.stats.deliveries += 1
            return
        if session.queue or conn.writing_paused or not session.window_open():
            session.enqueue(Outgoing(topic, payload, qos, retain))
            return
        message = session.take_inflight(Outgoing(topic, payload, qos, retain))
        conn.write(codec.encode_publish(topic_bytes, payload, qos, retain, message.packet_id))
        self.stats.deliveries += 1

    def resend_inflight(self, conn: Connection, session: Session) -> None:
        """A resumed session: its in-flight messages again, with DUP set, then its queue
        [MQTT-4.4.0-1]."""
        for message in session.inflight.values():
            if message.released:
                conn.write(codec.encode_ack(codec.PUBREL, message.packet_id))
            else:
                conn.write(codec.encode_publish(codec.encode_topic(message.topic), message.payload,
                                                message.qos, message.retain, message.packet_id, dup=True))
        self.fill(conn)

    def fill(self, conn: Connection) -> None:
        """Move queued messages into the in-flight window while it has room."""
        session = conn.session
        if session is None or conn.flush_task is not None:
            return
        while session.queue and session.window_open() and not conn.writing_paused and conn.state == "connected":
            head = session.queue[0]
            if head.recheck and self.plugins.acls:
                conn.flush_task = self._spawn(self._flush_checked(conn, session), "broker.connection.flush")
                return
            session.queue.popleft()
            self._send_queued(conn, session, head)

    async def _flush_checked(self, conn: Connection, session: Session) -> None:
        """The queue of a resumed session: each message is checked against the ACL again, since
        membership may have changed while the client was away."""
        try:
            while (session.queue and session.window_open() and not conn.writing_paused
                   and conn.state == "connected"):
                head = session.queue[0]
                allowed = not head.recheck or await self.plugins.allowed(session, head.topic, Action.RECEIVE)
                if conn.state != "connected" or not session.queue or session.queue[0] is not head:
                    return
                session.queue.popleft()
                if allowed:
                    self._send_queued(conn, session, head)
                else:
                    logger.info("dropping a queued message on %s for %s: no longer allowed", head.topic,
                                session.client_id)
        finally:
            conn.flush_task = None

    def _send_queued(self, conn: Connection, session: Session, message: Outgoing) -> None:
        message.recheck = False
        session.take_inflight(message)
        conn.write(codec.encode_publish(codec.encode_topic(message.topic), message.payload, message.qos,
                                        message.retain, message.packet_id))
        self.stats.deliveries += 1
