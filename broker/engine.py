"""mqchat's MQTT 3.1.1 broker: the composition of the engine, and its lifecycle.

amqtt 0.12's connection handling is where its defects live (issue #3: protocol violations leave
zombie sockets, takeover leaves the old connection open, QoS is upgraded, unacknowledged messages
are never redelivered, no packet size limit, offline queues skip the ACL) and where its time goes
(a task per delivery, a 5 s wait per QoS 1 message). The engine replaces that part and keeps
amqtt's configuration format (:class:`amqtt.contexts.BrokerConfig`: listeners, and amqtt-API
plugins, which run through :mod:`broker.amqtt_adapter`). Its own plugins implement the native
protocol of :mod:`broker.plugin_api` and are handed in already built.

The engine, by responsibility::

    engine.py       MqchatBroker: listeners, start, drain, shutdown; the plugin-facing methods
    connection.py   Connection: framing, write batching, keep-alive, back-pressure
    websocket.py    the same over WebSocket
    dispatch.py     Dispatcher: CONNECT, PUBLISH, SUBSCRIBE, ... and a connection's end
    routing.py      Router: subscriptions, publish → deliver, queues behind the in-flight window
    sessions.py     Sessions: the registry, takeover and resume
    session.py      Session: one client's state (MQTT 3.1.1 §4.4, §4.6)
    retained.py     retained messages and wills
    plugin_api.py   the native plugin protocols;  plugin_chain.py: their decision semantics
    amqtt_adapter.py  amqtt plugins on the native protocol
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any

from amqtt.contexts import BrokerConfig

from broker import amqtt_adapter, websocket
from broker.connection import Connection
from broker.dispatch import Dispatcher
from broker.limits import Limits, Stats
from broker.plugin_chain import PluginChain
from broker.retained import Retained, RetainedMessages, Wills
from broker.routing import Router
from broker.session import Session
from broker.sessions import Sessions
from mqchat import tls
from mqchat.errors import ConfigError
from mqchat.mqtt import codec

logger = logging.getLogger(__name__)


class MqchatBroker:
    """The broker: listeners, sessions, subscriptions, retained messages and plugins.

    Args:
        config: amqtt's broker configuration (a dict as :func:`broker.app.amqtt_config` builds it):
            its listeners, and the amqtt-API plugins to load through the adapter.
        plugins: native plugins (:mod:`broker.plugin_api`), consulted before the amqtt ones.
        limits: per-client limits.
    """

    def __init__(self, config: dict[str, Any], *, plugins: Iterable[object] = (), limits: Limits | None = None) -> None:
        self.config = BrokerConfig.from_dict(config)
        self.limits = limits or Limits()
        self.stats = Stats()
        self.plugins = PluginChain(plugins)
        self._connections: dict[str, set[Connection]] = {}
        self._servers: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        chain = self.plugins
        by_client_id: dict[str, Session] = {}
        self.router = Router(by_client_id, chain, self.stats, self.spawn, gap_topic=self.limits.gap_topic)
        self._sessions = Sessions(by_client_id, self.limits, self.router, self.stats)
        self._retained = RetainedMessages(chain, self.router, self.limits, self.stats)
        self.dispatcher = Dispatcher(limits=self.limits, stats=self.stats, plugins=chain, sessions=self._sessions,
                                     router=self.router, retained=self._retained,
                                     wills=Wills(chain, self.router, self._retained, self.stats))

    # -- what plugins and the metrics see -----------------------------------------------------

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Sessions by client id: connected, and persistent ones whose client is away."""
        return self._sessions.by_id

    @property
    def retained(self) -> Mapping[str, Retained]:
        """Retained messages by topic."""
        return self._retained.by_topic

    @property
    def retained_bytes(self) -> int:
        return self._retained.bytes

    def subscriptions(self) -> dict[str, list[tuple[Session, int]]]:
        return self.router.subscribers()

    async def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Deliver a message from the broker itself; returns how many sessions it went to."""
        return await self.router.publish(topic, payload, qos)

    def retain(self, topic: str, data: bytes, qos: int) -> None:
        self._retained.retain(topic, data, qos)

    def add_subscription(self, client_id: str, topic: str | None, qos: int | None) -> None:
        """Subscribe ``client_id`` to ``topic`` on its behalf (a persistent session is created
        for a client the broker does not know). With no topic, only the session is created.

        Raises:
            mqchat.mqtt.codec.ProtocolError: ``topic`` is not a valid filter.
        """
        session = self._sessions.offline(client_id)
        if topic is not None and qos is not None:
            codec.check_topic_filter(topic)
            self.router.subscribe(session, topic, qos)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the amqtt plugins, then open the listeners."""
        self.plugins.add(amqtt_adapter.load(self.config, self))
        await self.plugins.broker_starting()
        loop = asyncio.get_running_loop()
        for name, listener in self.config.listeners.items():
            host, _, port = (listener.bind or "0.0.0.0:1883").rpartition(":")
            host = host.strip("[]") or "0.0.0.0"
            self._connections[name] = set()
            kind = str(getattr(listener.type, "value", listener.type))
            context = None
            if listener.ssl:  # mqtts / wss
                if not listener.certfile or not listener.keyfile:
                    raise ConfigError(f"listener {name!r}: ssl needs certfile and keyfile")
                context = tls.server_context(Path(listener.certfile), Path(listener.keyfile))
            server: Any
            if kind == "ws":
                server = await websocket.serve(self, name, host, int(port), ssl=context)
            else:
                server = await loop.create_server(lambda name=name: Connection(self, name), host, int(port),
                                                  reuse_address=True, backlog=4096, ssl=context)
            self._servers.append(server)
        await self.plugins.broker_started()

    async def shutdown(self) -> None:
        """Stop listening, close every connection (no wills: the clients are not gone), close the
        plugins. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self.dispatcher.stopping = True
        await self.plugins.broker_stopping()
        for server in self._servers:
            server.close()
        for conns in self._connections.values():
            for conn in list(conns):
                conn.no_will = True
                conn.close()
        await self._settle(5.0)
        await self.plugins.broker_stopped()
        await self.plugins.close()
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

    # -- for connections ----------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A task the broker keeps (and cancels at shutdown)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def admit(self, conn: Connection) -> bool:
        """Whether a new connection may stay (not shutting down, its listener under its limit)."""
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

    async def closed(self, conn: Connection) -> None:
        """A connection has closed: forget it, then let the dispatcher end its session."""
        self._connections.get(conn.listener, set()).discard(conn)
        await self.dispatcher.closed(conn)
