"""Packet dispatch: what the broker does with each packet a client sends, and when it goes away.

::

    data_received ──▶ handle_now: PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ   (no task, no plugin)
    pump task ─────▶ handle: CONNECT ──▶ auth ──▶ per-user cap ──▶ Sessions.attach ──▶ CONNACK ──▶ resend
                             PUBLISH ──▶ rate limit ──▶ presence payload ok? ──▶ ACL ──▶ retain? (where
                                         honoured, within the caps) ──▶ Router.publish ──▶ PUBACK
                             SUBSCRIBE ──▶ ACL per filter ──▶ SUBACK ──▶ retained messages
                             UNSUBSCRIBE, DISCONNECT
    connection_lost ──▶ closed: will? ──▶ disconnected hook ──▶ Sessions.release
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

from broker.limits import Limits, Stats
from broker.plugin_api import LIMITS_EXEMPT, Action, AppMessage
from broker.plugin_chain import PluginChain
from broker.retained import RetainedMessages, Wills
from broker.routing import InvalidShare, Router, parse_share
from broker.session import Session
from broker.sessions import Sessions
from mqchat.mqtt import codec
from mqchat.mqtt.codec import ProtocolError
from mqchat.policy import TokenBucket

if TYPE_CHECKING:
    from broker.connection import Connection

logger = logging.getLogger(__name__)


class Dispatcher:
    """Handles the packets of every connection, in order per connection."""

    def __init__(self, *, limits: Limits, stats: Stats, plugins: PluginChain, sessions: Sessions, router: Router,
                 retained: RetainedMessages, wills: Wills) -> None:
        self.limits = limits
        self.stats = stats
        self.plugins = plugins
        self.sessions = sessions
        self.router = router
        self.retained = retained
        self.wills = wills
        self.stopping = False
        """Shutdown began: connections closing now publish no will."""

    def handle_now(self, conn: Connection, first: int, body: bytes) -> bool:
        """Handle a packet that needs no plugin call (acknowledgements, PINGREQ) at once; False
        (and nothing done) for any other."""
        kind, flags = first >> 4, first & 0x0F
        session = conn.session
        if session is None:
            return False
        if kind == codec.PUBACK:
            if session.complete(codec.decode_packet_id("PUBACK", flags, body), 1) and (session.queue or session.gaps):
                self.router.fill(conn)
        elif kind == codec.PINGREQ:
            codec.check_empty("PINGREQ", flags, body)
            conn.write(codec.PINGRESP_BYTES)
        elif kind in (codec.PUBREC, codec.PUBREL, codec.PUBCOMP):
            self._handle_qos2(conn, session, kind, flags, body)
        else:
            return False
        return True

    def _handle_qos2(self, conn: Connection, session: Session, kind: int, flags: int, body: bytes) -> None:
        if kind == codec.PUBREC:
            packet_id = codec.decode_packet_id("PUBREC", flags, body)
            session.received(packet_id)
            conn.write(codec.encode_ack(codec.PUBREL, packet_id))
        elif kind == codec.PUBCOMP:
            if session.complete(codec.decode_packet_id("PUBCOMP", flags, body), 2) and (session.queue or session.gaps):
                self.router.fill(conn)
        else:
            packet_id = codec.decode_packet_id("PUBREL", flags, body, required_flags=0x02)
            session.incoming_qos2.discard(packet_id)
            conn.write(codec.encode_ack(codec.PUBCOMP, packet_id))

    async def handle(self, conn: Connection, first: int, body: bytes) -> None:
        kind, flags = first >> 4, first & 0x0F
        if conn.state == "new":
            if kind != codec.CONNECT:
                raise ProtocolError(f"first packet is type {kind}, not CONNECT")  # [MQTT-3.1.0-1]
            conn.state = "connecting"
            await self._on_connect(conn, flags, body)
            return
        session = conn.session
        if conn.state != "connected" or session is None:
            return
        if kind == codec.PUBLISH:
            await self._on_publish(conn, session, flags, body)
        elif self.handle_now(conn, first, body):
            pass
        elif kind == codec.SUBSCRIBE:
            await self._on_subscribe(conn, session, flags, body)
        elif kind == codec.UNSUBSCRIBE:
            await self._on_unsubscribe(conn, session, flags, body)
        elif kind == codec.DISCONNECT:
            codec.check_empty("DISCONNECT", flags, body)
            conn.clean_exit = True
            conn.close()
        elif kind == codec.CONNECT:
            raise ProtocolError("second CONNECT")  # [MQTT-3.1.0-2]
        else:
            raise ProtocolError(f"packet type {kind} is not one a client sends")

    def _refuse(self, conn: Connection, code: int) -> None:
        conn.write(codec.encode_connack(False, code))
        conn.state = "closed-refused"
        conn.close()

    async def _on_connect(self, conn: Connection, flags: int, body: bytes) -> None:
        try:
            c = codec.decode_connect(flags, body)
        except codec.UnsupportedProtocol as exc:
            logger.info("refusing CONNECT from %s: %s", conn.peer, exc)
            self._refuse(conn, codec.REFUSED_PROTOCOL_VERSION)
            return
        client_id = c.client_id
        if not client_id:
            if not c.clean_session:  # [MQTT-3.1.3-8]
                self._refuse(conn, codec.REFUSED_IDENTIFIER)
                return
            client_id = f"auto-{secrets.token_hex(8)}"  # [MQTT-3.1.3-6]
        session = self.sessions.new(client_id)
        session.username, session.password = c.username, c.password
        session.clean_session, session.keep_alive = c.clean_session, c.keep_alive
        session.will_flag = c.will_topic is not None
        session.will_topic, session.will_message = c.will_topic, c.will_message
        session.will_qos, session.will_retain = c.will_qos, c.will_retain
        peer = conn.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            session.remote_address, session.remote_port = peer[0], peer[1]
        if not await self.plugins.authenticate(session):
            logger.info("refused CONNECT client_id=%r from %s: not authorized", client_id, conn.peer)
            self._refuse(conn, codec.REFUSED_NOT_AUTHORIZED)
            return
        if conn.state != "connecting":
            return  # the client went away while being authenticated
        exempt = bool(session.attributes.get(LIMITS_EXEMPT))
        if not exempt and session.username and self.sessions.user_full(session.username, client_id):
            self.stats.user_connection_refusals += 1
            logger.info("refused CONNECT client_id=%r: user %s already holds %d connections", client_id,
                           session.username, self.limits.max_connections_per_user)
            self._refuse(conn, codec.REFUSED_UNAVAILABLE)
            return
        if exempt:
            self.sessions.exempt(session)
        elif self.limits.publish_rate_per_s > 0:
            conn.bucket = TokenBucket(self.limits.publish_rate_per_s, self.limits.publish_burst, time.monotonic())
        present = self.sessions.attach(conn, session)
        conn.write(codec.encode_connack(present, codec.ACCEPTED))
        conn.state = "connected"
        conn.was_connected = True
        conn.start_keepalive(c.keep_alive)
        await self.plugins.client_connected(session)
        if present:
            self.router.resend_inflight(conn, session)

    async def _on_publish(self, conn: Connection, session: Session, flags: int, body: bytes) -> None:
        p = codec.decode_publish(flags, body)
        if conn.bucket is not None and (wait := conn.bucket.reserve(time.monotonic())) > 0:
            # Over its rate: this client's packets wait (its socket stops being read once its
            # backlog is full), everyone else's do not. Nothing is lost.
            self.stats.rate_limited += 1
            await asyncio.sleep(wait)
            if conn.state != "connected":
                return
        if p.qos == 2 and p.packet_id in session.incoming_qos2:
            conn.write(codec.encode_ack(codec.PUBREC, p.packet_id))  # a resent QoS 2 message: once only
            return
        if self.plugins.on_message:
            await self.plugins.message_received(session, AppMessage(p.topic, p.payload, p.qos, p.retain, p.packet_id))
        if not self.retained.presence_ok(p.topic, p.payload):
            pass  # dropped (logged and counted); still acknowledged: MQTT 3.1.1 has no negative PUBACK
        elif await self.plugins.allowed(session, p.topic, Action.PUBLISH):
            if p.retain:
                self.retained.retain(p.topic, p.payload, p.qos)
            await self.router.publish(p.topic, p.payload, p.qos)
        else:
            logger.info("denied PUBLISH to %s from %s", p.topic, session.client_id)
        if conn.state != "connected":
            return
        if p.qos == 1:
            conn.write(codec.encode_ack(codec.PUBACK, p.packet_id))
        elif p.qos == 2:
            session.incoming_qos2.add(p.packet_id)
            conn.write(codec.encode_ack(codec.PUBREC, p.packet_id))

    async def _on_subscribe(self, conn: Connection, session: Session, flags: int, body: bytes) -> None:
        packet_id, filters = codec.decode_subscribe(flags, body)
        codes: list[int] = []
        granted: list[tuple[str, int, bool]] = []
        for flt, qos in filters:
            try:
                shared = parse_share(flt) is not None
            except InvalidShare as exc:
                logger.info("refusing SUBSCRIBE from %s: %s", session.client_id, exc)
                codes.append(codec.SUBACK_FAILURE)
                continue
            if not await self.plugins.allowed(session, flt, Action.SUBSCRIBE):
                logger.info("denied SUBSCRIBE %s to %s", flt, session.client_id)
                codes.append(codec.SUBACK_FAILURE)
            else:
                self.router.subscribe(session, flt, qos)
                codes.append(qos)
                granted.append((flt, qos, shared))
        if conn.state != "connected":
            return
        conn.write(codec.encode_suback(packet_id, codes))
        for flt, qos, shared in granted:
            await self.plugins.client_subscribed(session, flt, qos)
            if not shared:  # no retained messages for a shared subscription (MQTT 5 §3.3.1.3)
                await self.retained.send(session, flt, qos)

    async def _on_unsubscribe(self, conn: Connection, session: Session, flags: int, body: bytes) -> None:
        packet_id, filters = codec.decode_unsubscribe(flags, body)
        for flt in filters:
            self.router.unsubscribe(session, flt)
        conn.write(codec.encode_ack(codec.UNSUBACK, packet_id))
        for flt in filters:
            await self.plugins.client_unsubscribed(session, flt)

    async def closed(self, conn: Connection) -> None:
        """The connection is gone: its will, the disconnect hook, then its session is released."""
        session = conn.session
        if session is None or not conn.was_connected:
            return
        if session.will_flag and not conn.clean_exit and not conn.no_will and not self.stopping:
            await self.wills.publish(session)
        await self.plugins.client_disconnected(session)
        if self.router.shares:
            await self.router.redistribute(session)
        self.sessions.release(session)
