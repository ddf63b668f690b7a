"""mqchat's MQTT 3.1.1 broker engine, behind amqtt's configuration format and plugin API.

amqtt 0.12's connection handling is where its defects live (issue #3: protocol violations leave
zombie sockets, takeover leaves the old connection open, QoS is upgraded, unacknowledged messages
are never redelivered, no packet size limit, offline queues skip the ACL) and where its time goes
(a task per delivery, a 5 s wait per QoS 1 message). This module replaces that part and keeps the
rest: the same configuration dict (:class:`amqtt.contexts.BrokerConfig`), and plugins loaded and
called through amqtt's :class:`~amqtt.plugins.manager.PluginManager` with amqtt's signatures
(``authenticate(session=)``, ``topic_filtering(session=, topic=, action=)``, ``on_broker_*`` events),
so amqtt's own plugins and ours run unchanged.

One :class:`Connection` (an :class:`asyncio.Protocol`) per socket cuts bytes into packets with
:class:`~broker.codec.FrameReader` and handles them in order, one at a time. Any protocol violation
closes the connection [MQTT-4.8.0-1]. Delivery writes straight to the subscriber's transport: no
task per message. Plugin semantics, where amqtt's were unsafe:

- **Auth**: as amqtt: plugins returning ``None`` abstain; at least one must answer and all answers
  must be ``True``.
- **Topics**: a plugin returning ``None`` abstains (amqtt denied); any ``False`` denies. Checked on
  SUBSCRIBE, PUBLISH, and for every delivery (RECEIVE), including retained and queued messages.
- **Events**: client connect/disconnect and message-received hooks are awaited in the order they
  happen on a connection (keep them fast); ``on_broker_will_published(client_id=, message=)`` is
  called for each will published. ``close()`` is called on every plugin at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from amqtt.broker import BrokerContext
from amqtt.contexts import Action, BrokerConfig
from amqtt.events import BrokerEvents
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.plugins.manager import PluginManager

from broker.session import Outgoing, Session
from broker.topic_tree import TopicTree, matches
from mqchat.mqtt import codec
from mqchat.mqtt.codec import ProtocolError
from mqchat.policy import TokenBucket

logger = logging.getLogger(__name__)

#: A plugin sets ``session.attributes[LIMITS_EXEMPT] = True`` on trusted clients (our services):
#: no publish rate limit, and 10x the in-flight window and 100x the queue.
LIMITS_EXEMPT = "broker.limits_exempt"
WILL_PUBLISHED = "broker_will_published"
#: Frames buffered from one client before the broker stops reading its socket.
_INBOX_HIGH, _INBOX_LOW = 1_000, 100


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-client limits (``broker.*`` settings)."""

    max_packet_bytes: int = 256 * 1024
    max_inflight: int = 100
    max_queued: int = 1_000
    publish_rate_per_s: float = 0.0
    """PUBLISH packets per second a client may send, sustained; a faster client is slowed down
    (its packets wait, then its socket is no longer read), never disconnected. 0: no limit."""
    publish_burst: int = 1_000
    connect_timeout_s: float = 10.0


@dataclass(slots=True)
class AppMessage:
    """A message as event plugins see it (amqtt's ``ApplicationMessage`` field names)."""

    topic: str
    data: bytes
    qos: int
    retain: bool = False
    packet_id: int = 0


@dataclass(slots=True)
class Retained:
    topic: str
    data: bytes
    qos: int


@dataclass
class Stats:
    """Counters the metrics collector reads (plain ints: cheaper than a metric per delivery)."""

    deliveries: int = 0
    dropped_qos0: int = 0
    violations: int = 0
    rate_limited: int = 0
    wills: int = 0


class Connection(asyncio.Protocol):
    """One client socket (TCP, or a WebSocket through :class:`_WsTransport`)."""

    __slots__ = ("broker", "bucket", "clean_exit", "flush_task", "inbox", "keepalive_s", "last_rx", "listener",
                 "no_will", "out", "pump", "reader", "reading_paused", "session", "state", "timer", "transport",
                 "was_connected", "writing_paused")

    def __init__(self, broker: MqchatBroker, listener: str) -> None:
        self.broker = broker
        self.listener = listener
        self.transport: Any = None
        self.reader = codec.FrameReader(broker.limits.max_packet_bytes)
        self.session: Session | None = None
        self.inbox: list[tuple[int, bytes]] = []
        self.pump: asyncio.Task[None] | None = None
        self.flush_task: asyncio.Task[None] | None = None
        self.out: list[bytes] | None = None
        self.state = "new"  # new → connecting → connected (→ closing, on takeover) → closed
        self.was_connected = False
        self.last_rx = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.keepalive_s = 0.0
        self.clean_exit = False
        """DISCONNECT received: the will is discarded [MQTT-3.1.2-10]."""
        self.no_will = False
        """Closed by takeover, drain or shutdown: the client is not gone, so no will."""
        self.reading_paused = False
        self.writing_paused = False
        self.bucket: TokenBucket | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.broker._admit(self):
            transport.abort()
            return
        self.timer = asyncio.get_running_loop().call_later(self.broker.limits.connect_timeout_s,
                                                           self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == "closed":
            return
        self.last_rx = time.monotonic()
        if self.state == "new" and not self.reader.buffered and data[:1] != b"\x10":
            # not even the first byte of a CONNECT: no need to wait for the rest [MQTT-3.1.0-1]
            self.violation(f"first packet is type {data[0] >> 4}, not CONNECT")
            return
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            self.violation(str(exc))
            return
        if not frames:
            return
        if self.pump is None and self.state == "connected":
            # Acknowledgements and pings need no plugin: handle them here, in order, and leave
            # the pump (a task) to the packets that do.
            done = 0
            try:
                for first, body in frames:
                    if not self.broker._handle_now(self, first, body):
                        break
                    done += 1
            except ProtocolError as exc:
                self.violation(str(exc))
                return
            if done == len(frames):
                return
            frames = frames[done:]
        self.inbox.extend(frames)
        if len(self.inbox) > _INBOX_HIGH and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.pump is None:
            self.pump = self.broker._spawn(self._run_pump(), "broker.connection.pump")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if self.timer is not None:
            self.timer.cancel()
        for task in (self.pump, self.flush_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self.broker._spawn(self.broker._closed(self), "broker.connection.closed")

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.state == "connected":
            self.broker._fill(self)

    # -- the rest -----------------------------------------------------------------------------

    async def _run_pump(self) -> None:
        try:
            while self.inbox and self.state != "closed":
                batch, self.inbox = self.inbox, []
                for i, (first, body) in enumerate(batch):
                    if self.state == "closed":
                        return
                    try:
                        await self.broker._handle(self, first, body)
                    except ProtocolError as exc:
                        self.violation(str(exc))
                        return
                    except Exception:
                        logger.exception("error handling a packet from %s; closing", self.client_id)
                        self.abort()
                        return
                    if i % 64 == 63:
                        await asyncio.sleep(0)  # one client's backlog does not starve the others
                if self.reading_paused and len(self.inbox) < _INBOX_LOW and self.state != "closed":
                    self.reading_paused = False
                    self.transport.resume_reading()
        finally:
            self.pump = None

    @property
    def client_id(self) -> str | None:
        return self.session.client_id if self.session is not None else None

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything written to this connection in one turn of the event loop goes
        out in one send (a fan-out or a burst of acknowledgements is one system call, not one per
        packet)."""
        if self.out is None:
            self.out = [data]
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self.out.append(data)

    def flush(self) -> None:
        out, self.out = self.out, None
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        """Close after the pending writes (a refusal's CONNACK, ...)."""
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def violation(self, reason: str) -> None:
        self.broker.stats.violations += 1
        logger.info("closing %s (%s): %s", self.client_id or "a connection before CONNECT", self.peer, reason)
        self.abort()

    @property
    def peer(self) -> str:
        info = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{info[0]}:{info[1]}" if isinstance(info, tuple) and len(info) >= 2 else "?"

    def _connect_timeout(self) -> None:
        if self.state in ("new", "connecting"):
            logger.info("closing %s: no CONNECT within %.0fs", self.peer, self.broker.limits.connect_timeout_s)
            self.abort()

    def start_keepalive(self, keep_alive: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if keep_alive > 0:
            # "one and a half times the Keep Alive time period" [MQTT-3.1.2-24]
            self.keepalive_s = keep_alive * 1.5
            self.timer = asyncio.get_running_loop().call_later(self.keepalive_s, self._check_alive)

    def _check_alive(self) -> None:
        if self.state == "closed":
            return
        idle = time.monotonic() - self.last_rx
        if idle >= self.keepalive_s:
            logger.info("client %s silent for 1.5 x keep-alive (%.0fs); closing the connection",
                        self.client_id, self.keepalive_s)
            self.abort()
        else:
            self.timer = asyncio.get_running_loop().call_later(self.keepalive_s - idle, self._check_alive)


class _Context(BrokerContext):  # type: ignore[misc]
    """amqtt's plugin context, pointed at this engine."""

    def __init__(self, broker: MqchatBroker) -> None:
        super().__init__(broker)
        self._engine = broker

    async def broadcast_message(self, topic: str, data: bytes, qos: int | None = None) -> None:
        await self._engine.publish(topic, bytes(data), qos or 0)

    async def retain_message(self, topic_name: str, data: bytes | bytearray, qos: int | None = None) -> None:
        self._engine.retain(topic_name, bytes(data), qos or 0)

    @property
    def sessions(self) -> Iterator[Session]:
        yield from list(self._engine.sessions.values())

    def get_session(self, client_id: str) -> Session | None:
        return self._engine.sessions.get(client_id)

    @property
    def retained_messages(self) -> dict[str, Any]:
        return dict(self._engine.retained)

    @property
    def subscriptions(self) -> dict[str, list[tuple[Session, int]]]:
        out: dict[str, list[tuple[Session, int]]] = {}
        for session in self._engine.sessions.values():
            for flt, qos in session.subscriptions.items():
                out.setdefault(flt, []).append((session, qos))
        return out

    async def add_subscription(self, client_id: str, topic: str | None, qos: int | None) -> None:
        session = self._engine.sessions.get(client_id)
        if session is None:
            session = self._engine._new_session(client_id, exempt=False)
            session.clean_session = False
            self._engine.sessions[client_id] = session
        if topic is not None and qos is not None:
            codec.check_topic_filter(topic)
            session.subscriptions[topic] = qos
            self._engine._tree.add(topic, client_id, qos)


class MqchatBroker:
    """The broker: listeners, sessions, subscriptions, retained messages and plugins.

    Args:
        config: amqtt's broker configuration (a dict as :func:`broker.app.amqtt_config` builds it).
        limits: per-client limits.
    """

    def __init__(self, config: dict[str, Any], *, limits: Limits | None = None) -> None:
        self.config = BrokerConfig.from_dict(config)
        self.limits = limits or Limits()
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Retained] = {}
        self.stats = Stats()
        self._tree = TopicTree()
        self._connections: dict[str, set[Connection]] = {}
        self._servers: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._plugins: PluginManager[Any] | None = None
        self._auth_plugins: list[Any] = []
        self._topic_plugins: list[Any] = []
        self._events: dict[str, list[Callable[..., Awaitable[Any]]]] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        context = _Context(self)
        context.config = self.config
        self._plugins = PluginManager("amqtt.broker.plugins", context, asyncio.get_running_loop())
        plugins = self._plugins.plugins
        self._auth_plugins = [p for p in plugins if isinstance(p, BaseAuthPlugin)]
        self._topic_plugins = [p for p in plugins if isinstance(p, BaseTopicPlugin)]
        for name in [e.value for e in BrokerEvents] + [WILL_PUBLISHED]:
            callbacks = [getattr(p, f"on_{name}") for p in plugins if callable(getattr(p, f"on_{name}", None))]
            if callbacks:
                self._events[name] = callbacks
        await self._fire(BrokerEvents.PRE_START)
        loop = asyncio.get_running_loop()
        for name, listener in self.config.listeners.items():
            host, _, port = (listener.bind or "0.0.0.0:1883").rpartition(":")
            host = host.strip("[]") or "0.0.0.0"
            self._connections[name] = set()
            kind = str(getattr(listener.type, "value", listener.type))
            if kind == "ws":
                from websockets.asyncio.server import serve
                from websockets.typing import Subprotocol

                server: Any = await serve(self._ws_handler(name), host, int(port),
                                          subprotocols=[Subprotocol("mqtt"), Subprotocol("mqttv3.1")],
                                          max_size=self.limits.max_packet_bytes, compression=None)
            else:
                server = await loop.create_server(lambda name=name: Connection(self, name),
                                                  host, int(port), reuse_address=True, backlog=4096)
            self._servers.append(server)
        await self._fire(BrokerEvents.POST_START)

    async def shutdown(self) -> None:
        """Stop listening, close every connection (no wills: the clients are not gone), close the
        plugins. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        await self._fire(BrokerEvents.PRE_SHUTDOWN)
        for server in self._servers:
            server.close()
        for conns in self._connections.values():
            for conn in list(conns):
                conn.no_will = True
                conn.close()
        await self._settle(5.0)
        await self._fire(BrokerEvents.POST_SHUTDOWN)
        if self._plugins is not None:
            await self._plugins.close()  # waits for fired events, then calls close() on every plugin
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, over_s: float, *, step_s: float = 0.1) -> int:
        """Close client connections in even batches over ``over_s`` seconds, so a node being
        replaced does not send all its clients back to the load balancer in one herd. No wills: the
        clients are not gone, they are moving. Returns how many were closed."""
        conns = [c for cs in self._connections.values() for c in cs if c.state == "connected"]
        if not conns:
            return 0
        steps = max(1, round(over_s / step_s))
        per_step = math.ceil(len(conns) / steps)
        logger.info("draining %d connections over %.1fs", len(conns), over_s)
        for start in range(0, len(conns), per_step):
            for conn in conns[start : start + per_step]:
                conn.no_will = True
                conn.close()
            await asyncio.sleep(step_s)
        return len(conns)

    async def _settle(self, within: float) -> None:
        """Wait for the close handlers of closed connections (wills, disconnect events)."""
        deadline = time.monotonic() + within
        while self._tasks and time.monotonic() < deadline:
            pending = [t for t in self._tasks if t.get_name() == "broker.connection.closed"]
            if not pending and not any(self._connections.values()):
                return
            await asyncio.sleep(0.01)

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _admit(self, conn: Connection) -> bool:
        if self._stopping:
            return False
        conns = self._connections.setdefault(conn.listener, set())
        listener = self.config.listeners.get(conn.listener)
        limit = getattr(listener, "max_connections", 0) or 0
        if limit and len(conns) >= limit:
            logger.warning("listener %s is at its limit of %d connections; refusing one", conn.listener, limit)
            return False
        conns.add(conn)
        return True

    # -- plugins ------------------------------------------------------------------------------

    async def _fire(self, event: str, **kwargs: Any) -> None:
        for callback in self._events.get(event, ()):
            try:
                await callback(**kwargs)
            except Exception:
                logger.exception("plugin hook on_%s failed", event)

    async def _authenticate(self, session: Session) -> bool:
        answers: list[bool] = []
        for plugin in self._auth_plugins:
            try:
                answer = await plugin.authenticate(session=session)
            except Exception:
                logger.exception("auth plugin %s failed; refusing (fail closed)", type(plugin).__name__)
                return False
            if answer is not None:
                answers.append(bool(answer))
        return bool(answers) and all(answers)

    async def _allowed(self, session: Session, topic: str, action: Action) -> bool:
        for plugin in self._topic_plugins:
            try:
                answer = await plugin.topic_filtering(session=session, topic=topic, action=action)
            except Exception:
                logger.exception("topic plugin %s failed; denying (fail closed)", type(plugin).__name__)
                return False
            if answer is False:
                return False
        return True

    # -- packets ------------------------------------------------------------------------------

    def _handle_now(self, conn: Connection, first: int, body: bytes) -> bool:
        """Handle a packet that needs no plugin call (acknowledgements, PINGREQ) at once; False
        (and nothing done) for any other."""
        kind, flags = first >> 4, first & 0x0F
        session = conn.session
        if session is None:
            return False
        if kind == codec.PUBACK:
            if session.complete(codec.decode_packet_id("PUBACK", flags, body), 1) and session.queue:
                self._fill(conn)
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
            if session.complete(codec.decode_packet_id("PUBCOMP", flags, body), 2) and session.queue:
                self._fill(conn)
        else:
            packet_id = codec.decode_packet_id("PUBREL", flags, body, required_flags=0x02)
            session.incoming_qos2.discard(packet_id)
            conn.write(codec.encode_ack(codec.PUBCOMP, packet_id))

    async def _handle(self, conn: Connection, first: int, body: bytes) -> None:
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
        elif self._handle_now(conn, first, body):
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

    def _new_session(self, client_id: str, *, exempt: bool) -> Session:
        lim = self.limits
        if exempt:
            return Session(client_id, max_inflight=min(lim.max_inflight * 10, 65_000),
                           max_queued=lim.max_queued * 100)
        return Session(client_id, max_inflight=lim.max_inflight, max_queued=lim.max_queued)

    async def _on_connect(self, conn: Connection, flags: int, body: bytes) -> None:
        try:
            c = codec.decode_connect(flags, body)
        except codec.UnsupportedProtocol as exc:
            logger.info("refusing CONNECT from %s: %s", conn.peer, exc)
            conn.write(codec.encode_connack(False, codec.REFUSED_PROTOCOL_VERSION))
            conn.state = "closed-refused"
            conn.close()
            return
        client_id = c.client_id
        if not client_id:
            if not c.clean_session:  # [MQTT-3.1.3-8]
                conn.write(codec.encode_connack(False, codec.REFUSED_IDENTIFIER))
                conn.state = "closed-refused"
                conn.close()
                return
            client_id = f"auto-{secrets.token_hex(8)}"  # [MQTT-3.1.3-6]
        session = self._new_session(client_id, exempt=False)
        session.username, session.password = c.username, c.password
        session.clean_session, session.keep_alive = c.clean_session, c.keep_alive
        session.will_flag = c.will_topic is not None
        session.will_topic, session.will_message = c.will_topic, c.will_message
        session.will_qos, session.will_retain = c.will_qos, c.will_retain
        peer = conn.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            session.remote_address, session.remote_port = peer[0], peer[1]
        if not await self._authenticate(session):
            logger.info("refused CONNECT client_id=%r from %s: not authorized", client_id, conn.peer)
            conn.write(codec.encode_connack(False, codec.REFUSED_NOT_AUTHORIZED))
            conn.state = "closed-refused"
            conn.close()
            return
        if conn.state != "connecting":
            return  # the client went away while being authenticated
        exempt = bool(session.attributes.get(LIMITS_EXEMPT))
        if exempt:
            base = self._new_session(client_id, exempt=True)
            session.max_inflight, session.max_queued = base.max_inflight, base.max_queued
        elif self.limits.publish_rate_per_s > 0:
            conn.bucket = TokenBucket(self.limits.publish_rate_per_s, self.limits.publish_burst, time.monotonic())

        old = self.sessions.get(client_id)
        present = False
        if old is not None:
            old_conn: Connection | None = old.attributes.get(_CONN)
            if old_conn is not None and old_conn.state != "closed":
                logger.info("client %s connected again; closing its previous connection", client_id)
                old_conn.no_will = True  # takeover [MQTT-3.1.4-2]: the client is not gone
                old_conn.state = "closing"  # from now on nothing is sent or handled on it
                old_conn.abort()
            if c.clean_session or old.clean_session:
                self._drop_subscriptions(old)
            else:
                present = True
                session.subscriptions, session.inflight, session.queue = old.subscriptions, old.inflight, old.queue
                session.incoming_qos2, session.dropped = old.incoming_qos2, old.dropped
                session._next_id = old._next_id
        session.attributes[_CONN] = conn
        conn.session = session
        self.sessions[client_id] = session
        conn.write(codec.encode_connack(present, codec.ACCEPTED))
        conn.state = "connected"
        conn.was_connected = True
        conn.start_keepalive(c.keep_alive)
        await self._fire(BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=session)
        if present:
            for message in session.inflight.values():  # redelivery on resume [MQTT-4.4.0-1]
                if message.released:
                    conn.write(codec.encode_ack(codec.PUBREL, message.packet_id))
                else:
                    conn.write(codec.encode_publish(codec.encode_topic(message.topic), message.payload,
                                                    message.qos, message.retain, message.packet_id, dup=True))
            self._fill(conn)

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
        if BrokerEvents.MESSAGE_RECEIVED in self._events:
            await self._fire(BrokerEvents.MESSAGE_RECEIVED, client_id=session.client_id,
                             message=AppMessage(p.topic, p.payload, p.qos, p.retain, p.packet_id))
        if await self._allowed(session, p.topic, Action.PUBLISH):
            if p.retain:
                self.retain(p.topic, p.payload, p.qos)
            await self.publish(p.topic, p.payload, p.qos)
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
        granted: list[tuple[str, int]] = []
        for flt, qos in filters:
            if flt.startswith("$share/"):
                logger.info("refusing shared subscription %s from %s (not supported)", flt, session.client_id)
                codes.append(codec.SUBACK_FAILURE)
            elif not await self._allowed(session, flt, Action.SUBSCRIBE):
                logger.info("denied SUBSCRIBE %s to %s", flt, session.client_id)
                codes.append(codec.SUBACK_FAILURE)
            else:
                session.subscriptions[flt] = qos
                self._tree.add(flt, session.client_id, qos)
                codes.append(qos)
                granted.append((flt, qos))
        if conn.state != "connected":
            return
        conn.write(codec.encode_suback(packet_id, codes))
        for flt, qos in granted:
            await self._fire(BrokerEvents.CLIENT_SUBSCRIBED, client_id=session.client_id, topic=flt, qos=qos)
            await self._send_retained(session, flt, qos)

    async def _on_unsubscribe(self, conn: Connection, session: Session, flags: int, body: bytes) -> None:
        packet_id, filters = codec.decode_unsubscribe(flags, body)
        for flt in filters:
            if session.subscriptions.pop(flt, None) is not None:
                self._tree.remove(flt, session.client_id)
        conn.write(codec.encode_ack(codec.UNSUBACK, packet_id))
        for flt in filters:
            await self._fire(BrokerEvents.CLIENT_UNSUBSCRIBED, client_id=session.client_id, topic=flt)

    async def _send_retained(self, session: Session, flt: str, granted: int) -> None:
        if "+" in flt or "#" in flt:
            candidates = [r for topic, r in list(self.retained.items()) if matches(topic, flt)]
        else:
            one = self.retained.get(flt)
            candidates = [one] if one is not None else []
        for r in candidates:
            if await self._allowed(session, r.topic, Action.RECEIVE):
                self._deliver(session, r.topic, codec.encode_topic(r.topic), r.data, min(granted, r.qos), retain=True)

    # -- routing ------------------------------------------------------------------------------

    def retain(self, topic: str, data: bytes, qos: int) -> None:
        """Keep (or, with an empty payload, clear) the retained message of ``topic`` [MQTT-3.3.1-10]."""
        if data:
            self.retained[topic] = Retained(topic, data, qos)
        else:
            self.retained.pop(topic, None)

    async def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Deliver to every matching subscription the ACL lets receive it, at min(publish, granted)
        QoS. Returns the number of sessions it went to."""
        targets = self._tree.match(topic)
        if not targets:
            return 0
        topic_bytes = codec.encode_topic(topic)
        check = bool(self._topic_plugins)
        sent = 0
        for client_id, granted in targets.items():
            session = self.sessions.get(client_id)
            if session is None:
                continue
            if check and not await self._allowed(session, topic, Action.RECEIVE):
                continue
            self._deliver(session, topic, topic_bytes, payload, min(qos, granted))
            sent += 1
        return sent

    def _deliver(self, session: Session, topic: str, topic_bytes: bytes, payload: bytes, qos: int,
                 retain: bool = False) -> None:
        conn: Connection | None = session.attributes.get(_CONN)
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

    def _fill(self, conn: Connection) -> None:
        """Move queued messages into the in-flight window while it has room."""
        session = conn.session
        if session is None or conn.flush_task is not None:
            return
        while session.queue and session.window_open() and not conn.writing_paused and conn.state == "connected":
            head = session.queue[0]
            if head.recheck and self._topic_plugins:
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
                allowed = not head.recheck or await self._allowed(session, head.topic, Action.RECEIVE)
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

    def _drop_subscriptions(self, session: Session) -> None:
        for flt in session.subscriptions:
            self._tree.remove(flt, session.client_id)
        session.subscriptions = {}

    # -- closing ------------------------------------------------------------------------------

    async def _closed(self, conn: Connection) -> None:
        self._connections.get(conn.listener, set()).discard(conn)
        session = conn.session
        if session is None or not conn.was_connected:
            return
        if session.will_flag and not conn.clean_exit and not conn.no_will and not self._stopping:
            await self._publish_will(session)
        await self._fire(BrokerEvents.CLIENT_DISCONNECTED, client_id=session.client_id, client_session=session)
        if self.sessions.get(session.client_id) is not session:
            return  # taken over: the new connection owns the session now
        session.attributes.pop(_CONN, None)
        if session.clean_session:
            self._drop_subscriptions(session)
            del self.sessions[session.client_id]

    async def _publish_will(self, session: Session) -> None:
        topic, data = session.will_topic or "", session.will_message or b""
        if not await self._allowed(session, topic, Action.PUBLISH):
            logger.info("will of %s on %s denied by the ACL; not published", session.client_id, topic)
            return
        self.stats.wills += 1
        if session.will_retain:
            self.retain(topic, data, session.will_qos)
        await self.publish(topic, data, session.will_qos)
        await self._fire(WILL_PUBLISHED, client_id=session.client_id,
                         message=AppMessage(topic, data, session.will_qos, session.will_retain))

    # -- WebSocket ----------------------------------------------------------------------------

    def _ws_handler(self, listener: str) -> Callable[[Any], Awaitable[None]]:
        async def handle(ws: Any) -> None:
            conn = Connection(self, listener)
            transport = _WsTransport(ws)
            conn.connection_made(transport)
            try:
                async for message in ws:
                    if isinstance(message, str):
                        conn.violation("text WebSocket frame (MQTT needs binary frames)")
                        break
                    conn.data_received(message)
                    if conn.state == "closed" or transport.is_closing():
                        break
                    await transport.readable()
            except Exception as exc:
                logger.debug("WebSocket of %s ended: %r", conn.client_id, exc)
            finally:
                await transport.flushed()
                conn.connection_lost(None)

        return handle


#: Where a session keeps its live connection (in ``session.attributes``, out of plugins' way).
_CONN = "broker.connection"


class _WsTransport:
    """The transport face of a WebSocket connection, for :class:`Connection`."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._readable = asyncio.Event()
        self._readable.set()
        self._sender = asyncio.ensure_future(self._send_loop())

    async def _send_loop(self) -> None:
        with contextlib.suppress(Exception):
            while (data := await self._out.get()) is not None:
                await self._ws.send(data)
        with contextlib.suppress(Exception):
            await self._ws.close()

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._out.put_nowait(data)

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._out.put_nowait(None)

    def abort(self) -> None:
        self._closing = True
        self._sender.cancel()
        with contextlib.suppress(Exception):
            self._ws.transport.abort()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._ws.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    async def readable(self) -> None:
        await self._readable.wait()

    async def flushed(self) -> None:
        if self._closing:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._sender), 2)
        else:
            self._sender.cancel()
