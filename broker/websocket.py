"""MQTT over WebSocket: each WebSocket connection drives a :class:`~broker.connection.Connection`
through :class:`WsTransport`, which gives it the face of an asyncio transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from broker.connection import Connection

if TYPE_CHECKING:
    from broker.engine import MqchatBroker

logger = logging.getLogger(__name__)


async def serve(broker: MqchatBroker, listener: str, host: str, port: int, *,
                ssl: ssl_module.SSLContext | None = None) -> Any:
    """Start a WebSocket listener (subprotocols ``mqtt``, ``mqttv3.1``; ``wss`` with ``ssl``);
    returns its server."""
    from websockets.asyncio.server import serve as ws_serve
    from websockets.typing import Subprotocol

    return await ws_serve(handler(broker, listener), host, port,
                          subprotocols=[Subprotocol("mqtt"), Subprotocol("mqttv3.1")],
                          max_size=broker.limits.max_packet_bytes, compression=None, ssl=ssl)


def handler(broker: MqchatBroker, listener: str) -> Callable[[Any], Awaitable[None]]:
    async def handle(ws: Any) -> None:
        conn = Connection(broker, listener)
        transport = WsTransport(ws)
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


class WsTransport:
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
