"""Composition root of the workers process."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import aiomqtt

from mqchat import auth, lifecycle, topics
from mqchat.config import Settings
from mqchat.errors import ConfigError
from mqchat.objects.factory import open_attachments
from mqchat.ops import serve_ops
from mqchat.search.factory import open_search_index
from mqchat.storage.factory import open_directory, open_message_store
from mqchat.storage.leases import LeaderLease
from mqchat.storage.message_log import MessageLog
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from mqchat.storage.thumbnail_jobs import ThumbnailJobs
from workers.attachments import run_cleanup, run_thumbnailer
from workers.leader import Leadership
from workers.presence import INGEST_GROUP, StatusMessage, run_ingester, run_publisher, run_sweeper
from workers.push.service import PUSH_DRAIN_S, open_push, push_tasks
from workers.search import Indexer

logger = logging.getLogger(__name__)

SERVICE_USER = "svc-workers"
#: The presence publisher's consumer name: fixed, so a new leader re-reads what the last one left
#: unacknowledged. One instance at a time publishes (``leader:presence``, :mod:`workers.leader`).
PRESENCE_CONSUMER = "presence-publisher"
#: The leader lease of the presence publisher and lease sweeper.
PRESENCE_LEADER = "presence"
#: The ordered presence ingester's MQTT session (leader only, ``presence.shared_ingest`` off): a
#: fixed client id with a persistent session, so the broker keeps the status publishes that arrive
#: between one leader's end and the next one's start and hands them over in order.
PRESENCE_INGEST_SESSION = "presence-ingest"
#: The search indexer's consumer name: fixed, so a restarted indexer re-reads what it left pending.
SEARCH_CONSUMER = "search-indexer"
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class MqttPublisher:
    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        await self._client.publish(topic, payload, qos=1, retain=True)


def ready_name(settings: Settings) -> str:
    """``workers`` for instance 0 (the only one unless ``mqchat up --workers N``), ``workers-{i}`` for the others."""
    i = settings.ops.instance
    return "workers" if i == 0 else f"workers-{i}"


def presence_filter(settings: Settings) -> str:
    """The ingester's subscription: ``$share``-d between workers instances with ``presence.shared_ingest``,
    else the plain filter the leader's ordered ingester reads."""
    flt = topics.DEVICE_PRESENCE_FILTER
    return topics.shared(INGEST_GROUP, flt) if settings.presence.shared_ingest else flt


async def run_ordered_ingester(settings: Settings, state: RedisState, guard: Callable[[], Awaitable[None]]) -> None:
    """The leader's presence ingester: one subscription, so every device status publish is applied
    in the order the broker received it (a device's ``online`` before its ``away``, one device's
    ``offline`` after another's ``online``), on a persistent session that the next leader resumes.

    A lost broker connection is retried here (with backoff) for as long as this instance leads:
    ``guard`` (the lease's check) runs before every connect, so a stale leader whose session was
    taken over by the next one stops instead of taking it back.
    """
    client_id, username, password = lifecycle.service_credentials(settings, SERVICE_USER, PRESENCE_INGEST_SESSION)
    delay = 0.2
    while True:
        await guard()
        try:
            async with aiomqtt.Client(settings.mqtt.host, settings.mqtt.port, identifier=client_id,
                                      username=username, password=password, clean_session=False,
                                      socket_options=NODELAY, keepalive=settings.mqtt.keepalive_s) as client:
                await client.subscribe(presence_filter(settings), qos=1)
                delay = 0.2
                await run_ingester(state, status_messages(client), ttl_ms=settings.broker.presence_lease_ms)
        except aiomqtt.MqttError as exc:
            logger.warning("presence ingest connection lost (%s); again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def status_messages(client: aiomqtt.Client) -> AsyncIterator[StatusMessage]:
    """The client's received messages, as the ingester reads them (it subscribes to nothing else)."""
    async for m in client.messages:
        payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
        yield StatusMessage(m.topic.value, payload, bool(m.retain))


async def main(settings: Settings, stop: asyncio.Event) -> None:
    if not settings.redis.url:
        raise ConfigError("workers need redis.url (MQCHAT_REDIS__URL)")
    # The MQTT client id is per instance (a rolling update briefly runs two); the presence consumer
    # name is fixed, so a restarted publisher re-reads what its predecessor left unacknowledged.
    client_id, username, password = lifecycle.service_credentials(settings, SERVICE_USER,
                                                                   lifecycle.instance_id("w"))
    async with AsyncExitStack() as stack:
        redis = RedisClient.from_settings(settings.redis)
        stack.push_async_callback(redis.close)
        state = RedisState(redis)
        directory = await open_directory(settings)
        stack.push_async_callback(directory.close)
        push = None
        if settings.push.enabled:
            store = await open_message_store(settings)
            stack.push_async_callback(store.close)
            push = await open_push(settings, stack, PushState(redis), directory, store)
        indexer = None
        if settings.search.enabled:
            search_store = await open_message_store(settings)
            stack.push_async_callback(search_store.close)
            index = await open_search_index(settings.search.index_url(settings.data_dir),
                                            language=settings.search.language)
            stack.push_async_callback(index.close)
            indexer = Indexer(MessageLog(redis), index, search_store, directory, SEARCH_CONSUMER,
                              batch=settings.search.batch, claim_idle_ms=int(settings.search.claim_idle_s * 1000))
        stack.callback(lifecycle.clear_ready, settings, ready_name(settings))

        async def presence() -> None:
            """The publisher and the sweeper on the leader only, and with an external broker the
            ingester: on the leader too (in order, the default), or on every instance through
            ``$share`` (``presence.shared_ingest``)."""
            async with aiomqtt.Client(settings.mqtt.host, settings.mqtt.port, identifier=client_id,
                                      username=username, password=password, socket_options=NODELAY,
                                      keepalive=settings.mqtt.keepalive_s) as client:

                async def lead(lease: Leadership) -> None:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(run_publisher(state, directory, MqttPublisher(client),
                                                     consumer=PRESENCE_CONSUMER, guard=lease.check))
                        tg.create_task(run_sweeper(state))
                        if ingest and not settings.presence.shared_ingest:
                            tg.create_task(run_ordered_ingester(settings, state, lease.check))

                async with asyncio.TaskGroup() as tg:
                    if ingest and settings.presence.shared_ingest:
                        await client.subscribe(presence_filter(settings), qos=1)
                        tg.create_task(run_ingester(state, status_messages(client),
                                                    ttl_ms=settings.broker.presence_lease_ms))
                    tg.create_task(leadership.run(lead))

        thumbnail_jobs = ThumbnailJobs(redis)
        attachments = open_attachments(settings, auth.load_keys(settings).signing_key)
        stack.push_async_callback(attachments.close)

        await redis.ping()
        ingest = settings.mqtt.broker == "external"
        leadership = Leadership(LeaderLease(redis, PRESENCE_LEADER), client_id,
                                lease_ms=settings.presence.leader_lease_ms)
        lifecycle.mark_ready(settings, ready_name(settings))
        readiness = lifecycle.Readiness()
        readiness.ok = True
        logger.info("workers running: presence%s (publisher and sweeper when leader)%s%s",
                    "" if not ingest else " ingester (shared)" if settings.presence.shared_ingest
                    else " (ingester when leader)",
                    ", push fan-out and sender" if push else " (push disabled)",
                    ", search indexer" if indexer else " (search disabled)")
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(lifecycle.supervised("presence", presence, stop), name="workers.presence"),
                tg.create_task(lifecycle.supervised(
                    "thumbnailer", lambda: run_thumbnailer(thumbnail_jobs, attachments, client_id, stop), stop),
                    name="workers.attachments.thumbnails"),
                tg.create_task(lifecycle.supervised(
                    "upload cleanup", lambda: run_cleanup(attachments, settings.objects.cleanup_interval_s, stop),
                    stop), name="workers.attachments.cleanup"),
            ]
            if indexer is not None:
                tasks.append(tg.create_task(lifecycle.supervised("search indexer", lambda: indexer.run(stop), stop),
                                            name="workers.search.index"))
            if settings.ops.workers_port:
                tasks.append(tg.create_task(serve_ops(settings.ops.host, settings.ops.workers_port, readiness),
                                            name="workers.ops"))
            draining: list[asyncio.Task[None]] = []
            if push is not None:
                draining = push_tasks(tg, *push, stop)
            await stop.wait()
            readiness.ok = False
            for t in tasks:
                t.cancel()
            if draining:
                # The push loops stop taking work when ``stop`` is set; let the batch in hand settle
                # (fewer sends left pending for the next worker to claim and possibly repeat).
                _done, late = await asyncio.wait(draining, timeout=PUSH_DRAIN_S)
                logger.info("push drained: %d loops finished, %d cancelled", len(draining) - len(late), len(late))
                for t in late:
                    t.cancel()
        logger.info("workers stopped")
