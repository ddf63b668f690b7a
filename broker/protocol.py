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

tests/broker/test_keepalive.py checks both against a raw socket.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

logger = logging.getLogger(__name__)

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


def install() -> None:
    """Patch amqtt's broker handler (idempotent)."""
    BrokerProtocolHandler.handle_read_timeout = _close_silent_client


def stretch_keepalive(session: Any) -> None:
    """Make the broker wait 1.5 x the client's keep-alive before dropping it."""
    if session.keep_alive and session.keep_alive > 0:
        session.keep_alive = math.ceil(session.keep_alive * 1.5)
