"""Composition root of the bridge process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack

from bridge import metrics, stages
from bridge.link import LINK_ERRORS, BrokerLink, open_link
from bridge.ownership import Ownership
from bridge.pipeline import BatchStats, Inbound, Pipeline
from bridge.sequencer import Sequencer
from mqchat import auth, lifecycle, topics
from mqchat.config import Settings
from mqchat.errors import ConfigError, InvalidTopic
from mqchat.ids import Snowflake
from mqchat.mqtt import client as lean
from mqchat.objects.factory import open_attachments
from mqchat.ops import serve_ops
from mqchat.storage.factory import open_directory, open_message_store
from mqchat.storage.leases import ChannelLeases
from mqchat.storage.message_log import MessageLog
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState

logger = logging.getLogger(__name__)

SERVICE_USER = "svc-bridge"


class NotConnected(lean.ConnectionLost):
    """A batch finished while the bridge had no broker connection."""


class MqttPublisher:
    """:class:`bridge.pipeline.Publisher` over the current broker link (:mod:`bridge.link`).

    All publishes of a call are written in order before any PUBACK is awaited, so they are
    pipelined on the wire and keep their order (MQTT keeps per-topic order from one publisher).
    """

    def __init__(self) -> None:
        self.link: BrokerLink | None = None
        """The current broker connection; replaced at every reconnect."""

    async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        link = self.link
        if link is None:
            raise NotConnected("not connected to the broker")
        await link.publish_many(items)


def parse_inbound(topic: str, payload: bytes | bytearray) -> Inbound | None:
    try:
        parsed = topics.parse(topic)
    except InvalidTopic:
        return None
    if not isinstance(parsed, topics.Send):
        return None
    return Inbound(parsed.user, parsed.device, parsed.channel, bytes(payload), time.monotonic())


def record(stats: BatchStats, batch: Sequence[Inbound]) -> None:
    """Count one processed batch in the bridge's metrics."""
    now = time.monotonic()
    metrics.BATCH_SIZE.observe(len(batch))
    metrics.SENDS.labels("accepted").inc(stats.accepted)
    metrics.SENDS.labels("duplicate").inc(stats.duplicates)
    metrics.SENDS.labels("not_owned").inc(stats.not_owned)
    for code, n in stats.rejected.items():
        metrics.SENDS.labels(f"rejected_{code}").inc(n)
    answered = len(batch) - stats.not_owned
    if answered:
        for item in batch:
            metrics.RECEIVE_TO_ACK.observe(now - item.received_at)


def ready_name(settings: Settings) -> str:
    """``bridge`` for worker 0 (the single bridge of ``mqchat up``), ``bridge-{id}`` for the others."""
    worker = settings.bridge.worker_id
    return "bridge" if worker == 0 else f"bridge-{worker}"


def cfg_threshold(settings: Settings) -> int:
    """Publishes in flight before aiomqtt (``bridge.mqtt_client = "aiomqtt"``) warns: a few batches' worth."""
    return 4 * settings.bridge.batch_max + 1000


def intake_filters(settings: Settings, ownership: Ownership | None) -> list[str]:
    """What the bridge subscribes to: the send intake (shared or plain, ``bridge.shared_intake``),
    then, when sends may be forwarded to it, its own forwarding topic."""
    if not settings.bridge.shared_intake:
        return [topics.SEND_FILTER]
    filters = [topics.shared(SHARED_GROUP, topics.SEND_FILTER)]
    if ownership is not None:
        filters.append(topics.forward_filter(ownership.bridge_id))
    return filters


SHARED_GROUP = "bridges"
RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 10.0


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Run the bridge until ``stop`` is set, then drain the sends already taken.

    The stores and the order state live for the whole process; the broker connection is
    re-established with capped, jittered backoff whenever it is lost.
    """
    cfg = settings.bridge
    # The client id is per instance (host and pid); the lease identity stays b{worker_id}.
    credentials = lifecycle.service_credentials(settings, SERVICE_USER, lifecycle.instance_id(f"b{cfg.worker_id}-"))
    queue: asyncio.Queue[Inbound | None] = asyncio.Queue(maxsize=cfg.queue_max)
    async with AsyncExitStack() as stack:
        store = await open_message_store(settings)
        stack.push_async_callback(store.close)
        directory = await open_directory(settings)
        stack.push_async_callback(directory.close)
        # kind "file" sends: the upload records and the object store (for the attachments' signed URLs)
        attachments = open_attachments(settings, auth.load_keys(settings).signing_key)
        stack.push_async_callback(attachments.close)
        stack.callback(lifecycle.clear_ready, settings, ready_name(settings))
        sequencer = Sequencer(Snowflake(cfg.worker_id))
        ownership: Ownership | None = None
        redis_state: RedisState | None = None  # read markers, mentions and push jobs
        redis: RedisClient | None = None
        if settings.redis.url:
            redis = RedisClient.from_settings(settings.redis)
            stack.push_async_callback(redis.close)
            redis_state = RedisState(redis)
        if cfg.coordinate:
            if redis is None:
                raise ConfigError("bridge.coordinate needs redis.url (MQCHAT_REDIS__URL)")
            ownership = Ownership(ChannelLeases(redis), f"b{cfg.worker_id}", cfg.partitions, cfg.lease_ms)
            await ownership.tick()
            stack.push_async_callback(ownership.release_all)
            ticker = asyncio.create_task(_keep_leases(ownership, sequencer), name="bridge.ownership")
            stack.push_async_callback(_cancel, ticker)
        publisher = MqttPublisher()
        message_log = MessageLog(redis) if redis is not None and settings.search.enabled else None
        pipeline = Pipeline(store, directory, sequencer, publisher, read_state=redis_state, fanout=redis_state,
                            message_log=message_log,
                            push_bodies=not settings.push.privacy,
                            owns=ownership.owns if ownership is not None else None, background_followups=True,
                            slow_mode=redis_state, attachments=attachments)
        followups = asyncio.create_task(pipeline.follow_up_forever(), name="bridge.followups")

        async def stop_followups() -> None:
            await _cancel(followups)
            await pipeline.flush_followups()  # whatever the last batches left: read markers, push jobs

        stack.push_async_callback(stop_followups)
        readiness = lifecycle.Readiness()
        if settings.ops.bridge_port:
            ops = asyncio.create_task(
                serve_ops(settings.ops.host, settings.ops.bridge_port, ready=readiness),
                name="bridge.ops")
            stack.push_async_callback(_cancel, ops)
        attempt = 0
        while not stop.is_set():
            try:
                await _session(settings, credentials, pipeline, publisher, queue, stop, readiness, ownership)
                attempt = 0
            except* LINK_ERRORS as group:
                metrics.CONNECTED.set(0)
                readiness.ok = False
                lifecycle.clear_ready(settings, ready_name(settings))
                attempt += 1
                delay = random.uniform(0, min(RECONNECT_MAX_S, RECONNECT_BASE_S * 2**attempt))
                logger.warning("broker connection lost (%s); reconnecting in %.1fs", group.exceptions[0], delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        logger.info("bridge stopped")


async def _keep_leases(ownership: Ownership, sequencer: Sequencer) -> None:
    """Renew leases every third of their lifetime; forget positions of partitions just gained
    (another bridge may have written since this one last owned them)."""
    while True:
        await asyncio.sleep(ownership.lease_ms / 3000)
        try:
            gained, lost = await ownership.tick()
        except Exception as exc:  # Redis unreachable: leases lapse, owns() turns false by itself
            logger.warning("lease renewal failed: %s", exc)
            continue
        if gained:
            sequencer.forget(ownership.channels_in(gained, sequencer.known_channels()))
        metrics.OWNED_PARTITIONS.set(len(ownership.owned))
        if gained or lost:
            logger.info("partitions: +%d -%d, owning %d", len(gained), len(lost), len(ownership.owned))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _session(
    settings: Settings,
    credentials: tuple[str, str, str],
    pipeline: Pipeline,
    publisher: MqttPublisher,
    queue: asyncio.Queue[Inbound | None],
    stop: asyncio.Event,
    readiness: lifecycle.Readiness,
    ownership: Ownership | None = None,
) -> None:
    """One broker connection: consume and sequence until ``stop`` (then drain) or a broker error."""
    cfg = settings.bridge
    filters = intake_filters(settings, ownership)
    async with open_link(settings, credentials, cfg_threshold(settings)) as link:
        publisher.link = link
        await link.subscribe(filters)
        logger.info("bridge %s consuming %s (%s client)", credentials[0], ", ".join(filters), cfg.mqtt_client)
        forwarding = ownership is not None and cfg.shared_intake
        lifecycle.mark_ready(settings, ready_name(settings))
        metrics.CONNECTED.set(1)
        readiness.ok = True

        async def consume() -> None:
            # With the lean client, a send is acknowledged to the broker when this loop comes back
            # for the next one: after it is queued (or forwarded); a full queue holds the PUBACKs back.
            async for topic, payload in link.incoming():
                inner = topics.unforward(topic)
                item = parse_inbound(topic if inner is None else inner, payload)
                if item is None:
                    logger.warning("ignoring message on unexpected topic %s", topic)
                    continue
                if forwarding and inner is None and ownership is not None and not ownership.owns(item.channel):
                    # Shared intake: this send reached a bridge that does not own its channel.
                    owner = ownership.owner_of(item.channel)
                    if owner is not None and owner != ownership.bridge_id:
                        await link.publish_many([(topics.forward_topic(owner, topic), payload)])
                        metrics.SENDS.labels("forwarded").inc()
                        continue
                await queue.put(item)

        def done(stats: BatchStats, batch: Sequence[Inbound]) -> None:
            record(stats, batch)
            if stats.rejected:
                logger.info("batch: %d accepted, %d duplicates, rejected %s",
                            stats.accepted, stats.duplicates, stats.rejected)

        async def sequence() -> None:
            # Runs until the ``None`` sentinel queued at shutdown has gone through every stage.
            # A broker error here propagates: the batches written are durable, their acks are not
            # sent, and the senders' retries are answered from the idempotency cache after reconnecting.
            await stages.run_stages(pipeline, queue, cfg.batch_max, done,
                                    taken=lambda: metrics.QUEUE_DEPTH.set(queue.qsize()))

        async with asyncio.TaskGroup() as tg:
            consumer = tg.create_task(consume(), name="bridge.consume")
            sequencing = tg.create_task(sequence(), name="bridge.sequence")
            stopper = tg.create_task(stop.wait(), name="bridge.stop")
            await asyncio.wait([consumer, sequencing, stopper], return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                # The connection ended (a failed task's error is raised by the TaskGroup on exit).
                for task in (consumer, sequencing, stopper):
                    task.cancel()
                return
            # Stop taking work, then let the sequencer finish what it already took.
            consumer.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await link.unsubscribe(filters[0])
            if not sequencing.done():
                await queue.put(None)
                _, pending = await asyncio.wait([sequencing], timeout=cfg.drain_timeout_s)
                if pending:
                    logger.warning("drain deadline passed; %d queued sends dropped (senders will retry)",
                                   queue.qsize())
                    sequencing.cancel()
