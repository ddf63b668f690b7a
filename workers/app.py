"""Composition root of the workers process."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from mqchat import auth, lifecycle
from mqchat.config import Settings
from mqchat.errors import ConfigError
from mqchat.mqtt.client import Client
from mqchat.objects.factory import open_attachments
from mqchat.ops import serve_ops
from mqchat.search.factory import open_search_index
from mqchat.storage.factory import open_directory, open_message_store
from mqchat.storage.message_log import MessageLog
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from mqchat.storage.thumbnail_jobs import ThumbnailJobs
from workers.attachments import run_cleanup, run_thumbnailer
from workers.presence import run_publisher, run_sweeper
from workers.push.service import PUSH_DRAIN_S, open_push, push_tasks
from workers.search import Indexer

logger = logging.getLogger(__name__)

SERVICE_USER = "svc-workers"
#: The presence publisher is a singleton (it publishes in stream order); run one workers process.
PRESENCE_CONSUMER = "presence-publisher"
#: The search indexer's consumer name: fixed, so a restarted indexer re-reads what it left pending.
SEARCH_CONSUMER = "search-indexer"


class MqttPublisher:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        await self._client.publish(topic, payload, qos=1, retain=True)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    if not settings.redis.url:
        raise ConfigError("workers need redis.url (MQCHAT_REDIS__URL)")
    # The MQTT client id is per instance (a rolling update briefly runs two); the presence consumer
    # name is fixed, so a restarted publisher re-reads what its predecessor left unacknowledged.
    client_id, username, password = lifecycle.service_credentials(settings, SERVICE_USER,
                                                                   lifecycle.instance_id("w"))
    async with AsyncExitStack() as stack:
        redis = RedisClient.from_url(settings.redis.url, settings.redis.key_prefix)
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
        stack.callback(lifecycle.clear_ready, settings, "workers")

        async def publisher() -> None:
            # The lean client (mqchat/mqtt/client.py); a lost connection fails the publish and the
            # supervisor starts this again.
            async with Client(settings.mqtt.host, settings.mqtt.port, client_id=client_id, username=username,
                              password=password, keepalive=settings.mqtt.keepalive_s) as client:
                await run_publisher(state, directory, MqttPublisher(client), consumer=PRESENCE_CONSUMER)

        async def sweeper() -> None:
            await run_sweeper(state)

        thumbnail_jobs = ThumbnailJobs(redis)
        attachments = open_attachments(settings, auth.load_keys(settings).signing_key)
        stack.push_async_callback(attachments.close)

        await redis.ping()
        lifecycle.mark_ready(settings, "workers")
        readiness = lifecycle.Readiness()
        readiness.ok = True
        logger.info("workers running: presence publisher and lease sweeper%s%s",
                    ", push fan-out and sender" if push else " (push disabled)",
                    ", search indexer" if indexer else " (search disabled)")
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(lifecycle.supervised("presence publisher", publisher, stop),
                               name="workers.presence.publish"),
                tg.create_task(lifecycle.supervised("lease sweeper", sweeper, stop), name="workers.presence.sweep"),
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
