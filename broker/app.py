"""Composition root of the embedded broker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from typing import Any

from broker import metrics
from broker.engine import MqchatBroker
from broker.limits import Limits
from broker.plugins import JwtAuthPlugin, TokenLifecyclePlugin, TopicAclPlugin
from broker.presence import PresencePlugin
from mqchat import auth, lifecycle, topics
from mqchat.config import Settings
from mqchat.ops import serve_ops

logger = logging.getLogger(__name__)

WS_PATH = "/mqtt"


def amqtt_config(settings: Settings, *, no_auth: bool = False) -> dict[str, Any]:
    """The amqtt-format configuration for ``settings``: the listeners, and the amqtt-API plugins
    (run through :mod:`broker.amqtt_adapter`; mqchat's own plugins are native, see
    :func:`native_plugins`).

    Args:
        no_auth: a bare broker for protocol conformance tools: anonymous, no ACL, loopback only.
    """
    m = settings.mqtt
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": f"{m.host}:{m.port}", "max_connections": settings.broker.max_connections},
    }
    if not no_auth:
        listeners["ws"] = {"type": "ws", "bind": f"{m.host}:{m.ws_port}",
                           "max_connections": settings.broker.max_connections}
    b = settings.broker
    tls = {"ssl": True, "certfile": str(b.tls_cert_file), "keyfile": str(b.tls_key_file)}
    if b.tls_port:
        listeners["tls"] = {"type": "tcp", "bind": f"{m.host}:{b.tls_port}", "max_connections": b.max_connections,
                            **tls}
    if b.wss_port:
        listeners["wss"] = {"type": "ws", "bind": f"{m.host}:{b.wss_port}", "max_connections": b.max_connections,
                            **tls}
    plugins: dict[str, Any] = {}
    if no_auth:
        plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"] = {"allow_anonymous": True}
    return {"listeners": listeners, "plugins": plugins}


def native_plugins(settings: Settings, *, no_auth: bool = False) -> list[object]:
    """mqchat's plugins for ``settings``, built from typed settings, in the order they are
    consulted: JWT authentication, the token lifecycle (expiry, revocation, in-band refresh), the
    topic ACL, metrics, and presence leases when Redis is
    configured. The bare ``no_auth`` broker has none (its anonymous access is amqtt's
    ``AnonymousAuthPlugin``, through the adapter)."""
    if no_auth:
        return []
    b = settings.broker
    plugins: list[object] = [
        JwtAuthPlugin(auth.load_keys(settings)),
        TokenLifecyclePlugin(auth.load_keys(settings), settings.redis),
        TopicAclPlugin(settings),
        metrics.MetricsPlugin(),
    ]
    if settings.redis.url:
        plugins.append(PresencePlugin(settings.redis, lease_ttl_ms=b.presence_lease_ms))
    return plugins


def limits(settings: Settings, *, no_auth: bool = False) -> Limits:
    """Per-client limits; the bare ``--no-auth`` broker (conformance tools, benchmarks) has no
    publish rate limit."""
    b = settings.broker
    return Limits(max_packet_bytes=b.max_packet_bytes, max_inflight=b.max_inflight, max_queued=b.max_queued,
                  publish_rate_per_s=0.0 if no_auth else b.publish_rate_per_s, publish_burst=b.publish_burst,
                  connect_timeout_s=b.connect_timeout_s,
                  max_connections_per_user=0 if no_auth else b.max_connections_per_user,
                  session_expiry_s=float(b.session_expiry_s), retained_max_count=b.retained_max_count,
                  retained_max_bytes=b.retained_max_bytes,
                  # mqchat's broker honours RETAIN only for presence (docs/security.md); the bare
                  # --no-auth broker is a plain MQTT broker for conformance tools.
                  retain_prefixes=() if no_auth else (topics.PRESENCE + "/",),
                  validate_presence=not no_auth,
                  # what the broker drops for a slow device is announced on its user events topic
                  # (broker/gaps.py); the bare broker only counts drops
                  gap_topic="" if no_auth else f"{topics.USER}/{{user}}/events")


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (one descriptor per client
    connection: the usual soft limit of 1024 would cap the broker there). Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


async def main(settings: Settings, stop: asyncio.Event, *, no_auth: bool = False) -> None:
    """Run the broker until ``stop`` is set."""
    fds = raise_fd_limit()
    broker = MqchatBroker(amqtt_config(settings, no_auth=no_auth), plugins=native_plugins(settings, no_auth=no_auth),
                          limits=limits(settings, no_auth=no_auth))
    await broker.start()
    metrics.register(broker)
    where = f"mqtt://{settings.mqtt.host}:{settings.mqtt.port}"
    if not no_auth:
        where += f" and ws://{settings.mqtt.host}:{settings.mqtt.ws_port}{WS_PATH}"
    if settings.broker.tls_port:
        where += f" and mqtts://{settings.mqtt.host}:{settings.broker.tls_port}"
    if settings.broker.wss_port:
        where += f" and wss://{settings.mqtt.host}:{settings.broker.wss_port}{WS_PATH}"
    logger.info("broker listening on %s%s (up to %d open files)", where, " (no auth)" if no_auth else "", fds)
    lifecycle.mark_ready(settings, "broker")
    readiness = lifecycle.Readiness()
    readiness.ok = True
    ops = None
    if settings.ops.broker_port:
        ops = asyncio.create_task(serve_ops(settings.ops.host, settings.ops.broker_port, ready=readiness),
                                  name="broker.ops")
    try:
        await stop.wait()
    finally:
        readiness.ok = False
        if settings.broker.drain_s > 0:
            await broker.drain(settings.broker.drain_s)
        if ops is not None:
            ops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ops
        lifecycle.clear_ready(settings, "broker")
        await broker.shutdown()  # closes the plugins too
        logger.info("broker stopped")
