"""Presence in the workers: the ingester (external brokers), the publisher and the lease sweeper.

::

    device ── presence/{u}/{d} {"status", "ts", "conn"}  (status, heartbeat, last will)
        │  external broker: $share/presence/presence/+/+ (or presence/+/+)
        ▼
    ingester (every workers instance) ── (user, {device}|{conn}, connect|disconnect) ──▶ Redis Lua
                                          the same presence_update the embedded broker's plugin runs
    publisher + sweeper (one leader at a time, workers.leader) ◀── presence:changes ──┘
        └─▶ presence/{user} retained, channels' online sets; expired leases → offline

With the embedded broker (``mqtt.broker = embedded``) the ingester does not run: the broker's
plugin (``broker/presence.py``) writes the leases from the connections it sees, so nothing is
written twice. With an external broker a lease is ``{device}|{conn}``, ``conn`` chosen by the device
at CONNECT and repeated in its will: a late will of an old connection removes only that connection's
lease. ``online``/``away`` are applied as ``connect`` (an upsert: the first status creates the lease,
each heartbeat every third of the lease renews it), ``offline`` as ``disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
from prometheus_client import Counter

from mqchat import topics
from mqchat.errors import InvalidTopic
from mqchat.ids import is_valid_id
from mqchat.schema import PresencePayload
from mqchat.storage.base import Directory
from mqchat.storage.redis_state import PresenceOp, RedisState

logger = logging.getLogger(__name__)

PUBLISHED = Counter("mqchat_presence_changes_published_total", "User presence changes published.")
EXPIRED = Counter("mqchat_presence_leases_expired_total", "Presence leases expired by the sweeper.")
SUPERSEDED = Counter("mqchat_presence_changes_superseded_total", "Presence changes acknowledged unpublished: "
                     "a later change of the same user was already in the stream.")
INGESTED = Counter("mqchat_presence_ingested_total", "Device status publishes read by the presence ingester, by "
                   "result (applied, or the refusal code).", ["result"])

#: Shared-subscription group of the presence ingesters (``$share/presence/presence/+/+``).
INGEST_GROUP = "presence"
#: Most ingested events written to Redis in one pipeline.
INGEST_BATCH_MAX = 500
#: The lease member's connection part for a device that names no connection (an older client):
#: such a device has one lease, and a late will of its previous connection can end it (until its
#: next heartbeat, a third of a lease later).
NO_CONN = "-"

SWEEP_INTERVAL_S = 1.0


class Publisher(Protocol):
    async def publish_retained(self, topic: str, payload: bytes) -> None: ...


class UserPresenceMessage(msgspec.Struct, frozen=True):
    """Payload of ``presence/{user}``."""

    status: str
    last_seen: int
    v: int = 1


class IngestRefused(Exception):
    """A publish on a device status topic that changes nothing; ``code`` is stable (metrics, logs).

    Codes: ``bad_topic`` (not ``presence/{user}/{device}``), ``bad_payload`` (not a status
    payload), ``bad_conn`` (``conn`` is not an id: letters, digits, ``_``, ``-``, at most 64).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """What one device status publish does to the leases."""

    user: str
    member: str
    op: PresenceOp
    status: str


def ingest_event(topic: str, payload: bytes) -> IngestEvent:
    """Turn a publish on ``presence/{user}/{device}`` into a lease event (pure).

    Raises:
        IngestRefused: see its codes.
    """
    try:
        parsed = topics.parse(topic)
    except InvalidTopic as exc:
        raise IngestRefused("bad_topic", exc.reason) from None
    if not isinstance(parsed, topics.DevicePresence):
        raise IngestRefused("bad_topic", f"not a device status topic: {topic}")
    try:
        p = msgspec.json.decode(payload, type=PresencePayload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise IngestRefused("bad_payload", str(exc)) from None
    if p.conn is not None and not is_valid_id(p.conn):
        raise IngestRefused("bad_conn", f"conn {p.conn[:80]!r} is not an id")
    member = f"{parsed.device}|{p.conn or NO_CONN}"
    if p.status == "offline":
        return IngestEvent(parsed.user, member, "disconnect", "")
    return IngestEvent(parsed.user, member, "connect", p.status)


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """What the ingester needs of a received MQTT message."""

    topic: str
    payload: bytes
    retained: bool


async def run_ingester(state: RedisState, messages: AsyncIterator[StatusMessage], *, ttl_ms: int) -> None:
    """Forever: apply the device status publishes read from ``messages`` (the caller subscribed).

    Reading and writing are decoupled by a queue, so a burst is written in pipelines of up to
    :data:`INGEST_BATCH_MAX` events, in arrival order. A retained delivery (the broker's stored
    copy, sent at SUBSCRIBE time) is skipped: it says what a device last said, not that it is
    connected now. A failed write is retried with backoff; the queue keeps the order.
    """
    queue: asyncio.Queue[IngestEvent] = asyncio.Queue()

    async def write() -> None:
        delay = 0.1
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < INGEST_BATCH_MAX:
                batch.append(queue.get_nowait())
            events = [(e.user, e.member, e.op, e.status) for e in batch]
            while True:
                try:
                    await state.presence_events(events, now_ms=time.time_ns() // 1_000_000, ttl_ms=ttl_ms)
                    INGESTED.labels("applied").inc(len(batch))
                    delay = 0.1
                    break
                except Exception:
                    logger.exception("presence ingest of %d events failed; retrying in %.1fs", len(batch), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    writer = asyncio.create_task(write(), name="workers.presence.ingest.write")
    try:
        async for msg in messages:
            if msg.retained:
                INGESTED.labels("retained").inc()
                continue
            try:
                queue.put_nowait(ingest_event(msg.topic, msg.payload))
            except IngestRefused as exc:
                INGESTED.labels(exc.code).inc()
                logger.debug("presence publish on %s ignored: %s", msg.topic, exc)
            if writer.done():
                writer.result()  # a writer that died takes the ingester down with it (supervised)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def publish_changes(state: RedisState, directory: Directory, publisher: Publisher, consumer: str,
                          entries: Sequence[tuple[str, dict[str, str]]]) -> None:
    """Publish one batch of changes, in order, then acknowledge it.

    The publishes are handed to the MQTT client in stream order before any PUBACK is awaited, so
    they are pipelined and keep their order; the online sets take the last status of each user.
    An entry whose ``ver`` is below the user's current aggregate version is superseded (a later
    change exists and is, or was, published): it is acknowledged without publishing, so entries
    republished after a failover can never overwrite a newer retained status.
    """
    encoder = msgspec.json.Encoder()
    current = await state.presence_versions([change["user"] for _entry_id, change in entries])
    live = [change for _entry_id, change in entries if int(change.get("ver", 0)) >= current[change["user"]]]
    await asyncio.gather(*(
        publisher.publish_retained(topics.user_presence(change["user"]), encoder.encode(
            UserPresenceMessage(status=change["status"], last_seen=int(change["last_seen"]))))
        for change in live
    ))
    final = {change["user"]: change["status"] != "offline" for change in live}
    channels = await asyncio.gather(*(directory.channel_ids_of(user) for user in final))
    await state.set_online_many([(user, chans, online) for (user, online), chans in zip(final.items(), channels,
                                                                                          strict=True)])
    await state.ack_changes([entry_id for entry_id, _ in entries])
    PUBLISHED.inc(len(live))
    SUPERSEDED.inc(len(entries) - len(live))


async def _no_guard() -> None:
    return None


async def run_publisher(state: RedisState, directory: Directory, publisher: Publisher, consumer: str, *,
                        guard: Callable[[], Awaitable[None]] = _no_guard) -> None:
    """Forever: first what a previous run left unacknowledged, then new changes.

    The consumer name is fixed, so a new leader re-reads (and republishes, in order) what a dead one
    read and did not acknowledge. ``guard`` runs before each batch is published and raises to stop
    (:meth:`workers.leader.Leadership.check`: the fencing token is still ours).
    """
    await state.ensure_change_group()
    while True:
        # Entries read and not acknowledged (by a previous leader, or one that found itself
        # replaced before publishing) come first; they are older than anything new.
        entries = await state.read_changes(consumer, pending=True, count=INGEST_BATCH_MAX)
        if entries:
            logger.info("republishing %d presence changes read but not acknowledged", len(entries))
        else:
            entries = await state.read_changes(consumer, block_ms=1000)
        if entries:
            await guard()
            await publish_changes(state, directory, publisher, consumer, entries)


async def run_sweeper(state: RedisState, *, interval_s: float = SWEEP_INTERVAL_S) -> None:
    """Forever: expire leases that nobody refreshed."""
    while True:
        now = time.time_ns() // 1_000_000
        while (removed := await state.expire_leases(now_ms=now)) > 0:
            logger.info("expired %d presence leases", removed)
            EXPIRED.inc(removed)
        await asyncio.sleep(interval_s)
