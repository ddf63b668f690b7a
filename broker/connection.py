"""One client connection: bytes in, packets out, timers.

A :class:`Connection` (an :class:`asyncio.Protocol`; a WebSocket goes through
:class:`broker.websocket.WsTransport`) cuts bytes into packets with
:class:`~mqchat.mqtt.codec.FrameReader`. Acknowledgements and pings need no plugin, so
:meth:`data_received` hands them to the dispatcher at once, in order, without a task; every other
packet goes to the connection's pump (one task, started on demand), which handles them one at a
time. Everything written to a connection in one turn of the event loop goes out in one send.
Any protocol violation closes the connection [MQTT-4.8.0-1].
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from broker.session import Session
from mqchat.mqtt import codec
from mqchat.mqtt.codec import ProtocolError
from mqchat.policy import TokenBucket

if TYPE_CHECKING:
    from broker.engine import MqchatBroker

logger = logging.getLogger(__name__)

#: Frames buffered from one client before the broker stops reading its socket.
INBOX_HIGH, INBOX_LOW = 1_000, 100


class Connection(asyncio.Protocol):
    """One client socket (TCP, or a WebSocket through :class:`~broker.websocket.WsTransport`)."""

    __slots__ = ("broker", "bucket", "clean_exit", "dispatcher", "flush_task", "inbox", "keepalive_s", "last_rx",
                 "listener", "no_will", "out", "pump", "reader", "reading_paused", "session", "state", "timer",
                 "transport", "was_connected", "writing_paused")

    def __init__(self, broker: MqchatBroker, listener: str) -> None:
        self.broker = broker
        self.dispatcher = broker.dispatcher
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
        if not self.broker.admit(self):
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
                    if not self.dispatcher.handle_now(self, first, body):
                        break
                    done += 1
            except ProtocolError as exc:
                self.violation(str(exc))
                return
            if done == len(frames):
                return
            frames = frames[done:]
        self.inbox.extend(frames)
        if len(self.inbox) > INBOX_HIGH and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.pump is None:
            self.pump = self.broker.spawn(self._run_pump(), "broker.connection.pump")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if self.timer is not None:
            self.timer.cancel()
        for task in (self.pump, self.flush_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self.broker.spawn(self.broker.closed(self), "broker.connection.closed")

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.state == "connected":
            self.broker.router.fill(self)

    # -- the rest -----------------------------------------------------------------------------

    async def _run_pump(self) -> None:
        try:
            while self.inbox and self.state != "closed":
                batch, self.inbox = self.inbox, []
                for i, (first, body) in enumerate(batch):
                    if self.state == "closed":
                        return
                    try:
                        await self.dispatcher.handle(self, first, body)
                    except ProtocolError as exc:
                        self.violation(str(exc))
                        return
                    except Exception:
                        logger.exception("error handling a packet from %s; closing", self.client_id)
                        self.abort()
                        return
                    if i % 64 == 63:
                        await asyncio.sleep(0)  # one client's backlog does not starve the others
                if self.reading_paused and len(self.inbox) < INBOX_LOW and self.state != "closed":
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
