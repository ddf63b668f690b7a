"""Push state in Redis: the device registry, mutes, and the push job streams (redis-py asyncio).

::

    bridge ──XADD──▶ push:jobs ──(group push-fanout)──▶ fan-out worker
                                                           │ one MULTI per batch of members:
                                                           │ XADD push:sends (n) + progress cursor
                                                           ▼
                     push:sends ──(group push-senders)──▶ senders ──▶ FCM / APNs
                         ▲                                  │ one MULTI per outcome:
                         │ due (WATCH/MULTI move)           │ XACK + (token HDEL | ZADD retry | XADD dlq)
                     push:retry (zset, due ms) ◀────────────┘
                                                     push:dlq (stream, inspect with XRANGE)

Key names are in :mod:`mqchat.storage.keys`. Every change that must not be half-done (a batch of send
jobs and the fan-out cursor; an acknowledgement and what follows from the outcome) is one
``MULTI``/``EXEC``, so a worker killed at any point leaves either all of it or none of it.
Registrations hold full tokens; nothing here logs them (see :func:`redact`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio.client import Pipeline

from mqchat.config import DEFAULT_MAX_PUSH_DEVICES
from mqchat.storage.base import ReadMarker
from mqchat.storage.keys import (
    FANOUT_GROUP,
    FANOUT_PROGRESS_TTL_S,
    PUSH_DLQ_MAXLEN,
    PUSH_SENDS_MAXLEN,
    SENDERS_GROUP,
)
from mqchat.storage.redis_client import RedisClient

Platform = Literal["fcm", "apns"]


def redact(token: str) -> str:
    """A push token shortened for logs and records: enough to tell tokens apart, useless to send with."""
    return f"{token[:6]}…({len(token)})" if len(token) > 8 else "…"


class PushRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """One device's push registration."""

    platform: Platform
    token: str
    app: str | None = None
    """APNs: the app's bundle id (the ``apns-topic``); FCM: the Firebase project the token belongs to."""
    locale: str | None = None
    preview: bool = True
    """False: this device's notifications never carry message text."""
    updated_ms: int = 0


class SendJob(msgspec.Struct, frozen=True, kw_only=True):
    """One notification for one device, as it travels through ``push:sends`` and ``push:retry``.

    The token is not in the job: the sender reads the device's current registration just before
    sending, so a refreshed token is used and a removed one is skipped.
    """

    key: str
    """``{message id}:{user}:{device}``: unique per notification; the APNs ``apns-id`` is derived from it."""
    message_id: str
    user: str
    device: str
    channel: str
    epoch: int
    seq: int
    sender: str
    kind: str
    body: str | None
    """None in privacy mode or when the device turned previews off."""
    badge: int
    ts: int
    first_ms: int
    """When the fan-out made the job; the give-up horizon counts from here."""
    attempt: int = 0


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A send job given up on."""

    job: SendJob
    reason: str
    failed_ms: int


_job_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(SendJob)
_reg_decoder = msgspec.json.Decoder(PushRegistration)


def encode_job(job: SendJob) -> bytes:
    return _job_encoder.encode(job)


def decode_job(raw: bytes | str) -> SendJob:
    return _job_decoder.decode(raw)


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for entry_id, fields in reply or []:
        if fields is None:  # deleted (trimmed) while pending
            continue
        out.append((_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
    return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PushState:
    """Device registry, mutes and push job streams on one Redis.

    Args:
        redis: the process's Redis, usually shared with :class:`~mqchat.storage.redis_state.RedisState`
            (not closed here: its owner closes it).
    """

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._r = redis.driver
        self.keys = redis.keys

    # --- registry --------------------------------------------------------------------------------

    async def register(self, user: str, device: str, registration: PushRegistration, *,
                       keep: int = DEFAULT_MAX_PUSH_DEVICES) -> list[str]:
        """Register or refresh ``device``'s token (the last registration of a device wins), keeping at most
        ``keep`` devices for ``user``: a new device replaces the least recently registered one. The devices
        removed to make room."""
        evicted = await self._redis.run_script("push_register.lua", [self.keys.push_devices(user)],
                                               [device, _job_encoder.encode(registration), max(1, keep)])
        return [_s(d) for d in evicted or []]

    async def unregister(self, user: str, device: str) -> bool:
        """Remove ``device``'s registration; False if it had none."""
        return bool(await self._redis.call(self._r.hdel(self.keys.push_devices(user), device)))

    async def registrations(self, user: str) -> dict[str, PushRegistration]:
        return (await self.registrations_of([user]))[user]

    async def registrations_of(self, users: Collection[str]) -> dict[str, dict[str, PushRegistration]]:
        """Every registered device of each user, in one round trip."""
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return {}

        def build(pipe: Pipeline) -> None:
            for u in wanted:
                pipe.hgetall(self.keys.push_devices(u))

        rows = await self._redis.pipelined(build)
        return {u: {_s(d): _reg_decoder.decode(v) for d, v in row.items()} for u, row in zip(wanted, rows, strict=True)}

    async def registration_many(self, pairs: Sequence[tuple[str, str]]) -> list[PushRegistration | None]:
        """The current registration of each ``(user, device)``, in one round trip."""
        if not pairs:
            return []

        def build(pipe: Pipeline) -> None:
            for user, device in pairs:
                pipe.hget(self.keys.push_devices(user), device)

        rows = await self._redis.pipelined(build)
        return [None if v is None else _reg_decoder.decode(v) for v in rows]

    async def remove_token(self, user: str, device: str, token: str) -> bool:
        """Remove ``device``'s registration if it still holds ``token`` (a refreshed one is kept)."""
        key = self.keys.push_devices(user)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.hget(key, device)
            if raw is None or _reg_decoder.decode(raw).token != token:
                await pipe.unwatch()  # type: ignore[no-untyped-call]
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hdel(key, device)
            await pipe.execute()
            return True

        return await self._redis.watched(key, body, default=False)

    # --- mutes -----------------------------------------------------------------------------------

    async def set_muted(self, user: str, channel: str, muted: bool) -> None:
        key = self.keys.push_muted(user)
        await self._redis.call(self._r.sadd(key, channel) if muted else self._r.srem(key, channel))

    async def muted_channels(self, user: str) -> set[str]:
        return {_s(c) for c in await self._redis.call(self._r.smembers(self.keys.push_muted(user)))}

    # --- what the fan-out and the senders read, batched ------------------------------------------

    async def member_facts(self, users: Sequence[str],
                           channel: str) -> list[tuple[str, bool, dict[str, PushRegistration]]]:
        """For each user: aggregate presence status, whether ``channel`` is muted, registered devices.

        One pipelined round trip for the whole batch.
        """
        if not users:
            return []

        def build(pipe: Pipeline) -> None:
            for u in users:
                pipe.hget(self.keys.user_presence(u), "status")
                pipe.sismember(self.keys.push_muted(u), channel)
                pipe.hgetall(self.keys.push_devices(u))

        rows = await self._redis.pipelined(build)
        out = []
        for i in range(len(users)):
            status, muted, devices = rows[3 * i: 3 * i + 3]
            out.append((_s(status) if status else "offline", bool(muted),
                        {_s(d): _reg_decoder.decode(v) for d, v in devices.items()}))
        return out

    async def member_facts_many(self, asked: Sequence[tuple[Sequence[str], str]],
                                ) -> list[list[tuple[str, bool, dict[str, PushRegistration]]]]:
        """:meth:`member_facts` for several ``(users, channel)`` at once, in one round trip."""
        flat = [(u, channel) for users, channel in asked for u in users]
        if not flat:
            return [[] for _ in asked]

        def build(pipe: Pipeline) -> None:
            for u, channel in flat:
                pipe.hget(self.keys.user_presence(u), "status")
                pipe.sismember(self.keys.push_muted(u), channel)
                pipe.hgetall(self.keys.push_devices(u))

        rows = await self._redis.pipelined(build)
        out: list[list[tuple[str, bool, dict[str, PushRegistration]]]] = []
        i = 0
        for users, _ in asked:
            facts = []
            for _ in users:
                status, muted, devices = rows[3 * i: 3 * i + 3]
                facts.append((_s(status) if status else "offline", bool(muted),
                              {_s(d): _reg_decoder.decode(v) for d, v in devices.items()}))
                i += 1
            out.append(facts)
        return out

    async def read_markers_of(self, users: Sequence[str]) -> list[dict[str, ReadMarker]]:
        """Every read marker of each user (channel → marker), in one round trip."""
        if not users:
            return []

        def build(pipe: Pipeline) -> None:
            for u in users:
                pipe.hgetall(self.keys.read(u))

        rows = await self._redis.pipelined(build)
        out: list[dict[str, ReadMarker]] = []
        for row in rows:
            markers = {}
            for c, v in row.items():
                epoch, seq = _s(v).split(":")
                markers[_s(c)] = ReadMarker(int(epoch), int(seq))
            out.append(markers)
        return out

    async def send_facts(self, jobs: Sequence[SendJob]) -> list[tuple[str, ReadMarker | None, PushRegistration | None]]:
        """Just before sending: each job's user's presence, read marker in the job's channel, and the
        device's current registration; one round trip for the batch."""
        if not jobs:
            return []

        def build(pipe: Pipeline) -> None:
            for j in jobs:
                pipe.hget(self.keys.user_presence(j.user), "status")
                pipe.hget(self.keys.read(j.user), j.channel)
                pipe.hget(self.keys.push_devices(j.user), j.device)

        rows = await self._redis.pipelined(build)
        out: list[tuple[str, ReadMarker | None, PushRegistration | None]] = []
        for i in range(len(jobs)):
            status, marker, reg = rows[3 * i: 3 * i + 3]
            parsed = None
            if marker is not None:
                epoch, seq = _s(marker).split(":")
                parsed = ReadMarker(int(epoch), int(seq))
            out.append((_s(status) if status else "offline", parsed,
                        None if reg is None else _reg_decoder.decode(reg)))
        return out

    # --- consumer groups -------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        """Create both consumer groups (and their streams) if missing; idempotent."""
        for stream, group in ((self.keys.push_jobs, FANOUT_GROUP), (self.keys.push_sends, SENDERS_GROUP)):
            await self._redis.ensure_group(stream, group)

    async def _read(self, stream: str, group: str, consumer: str, count: int,
                    block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = await self._redis.call(self._r.xreadgroup(group, consumer, {stream: ">"}, count=count,
                                                          block=block_ms))
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, entries in reply or []:
            out.extend(_entries(entries))
        return out

    async def _claim(self, stream: str, group: str, consumer: str, min_idle_ms: int,
                     count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries pending longer than ``min_idle_ms`` with any consumer (one that died), now ours.

        Also re-reads this consumer's own pending entries after a restart under the same name.
        """
        claimed: list[tuple[str, dict[str, str]]] = []
        start = "0-0"
        for _ in range(100):  # bounded: each round advances the cursor through the pending list
            reply = await self._redis.call(self._r.xautoclaim(stream, group, consumer, min_idle_ms, start,
                                                              count=count))
            start = _s(reply[0])
            claimed.extend(_entries(reply[1]))
            if start == "0-0" or len(claimed) >= count:
                break
        return claimed

    async def _touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        if ids:
            await self._redis.call(self._r.xclaim(stream, group, consumer, 0, list(ids), justid=True))

    async def touch_fanout_jobs(self, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of jobs this worker is still working on, so nobody claims them."""
        await self._touch(self.keys.push_jobs, FANOUT_GROUP, consumer, ids)

    async def touch_sends(self, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of sends this worker is still working on, so nobody claims them."""
        await self._touch(self.keys.push_sends, SENDERS_GROUP, consumer, ids)

    # --- fan-out jobs ----------------------------------------------------------------------------

    async def read_fanout_jobs(self, consumer: str, *, count: int = 10,
                               block_ms: int = 1000) -> list[tuple[str, dict[str, str]]]:
        return await self._read(self.keys.push_jobs, FANOUT_GROUP, consumer, count, block_ms)

    async def claim_fanout_jobs(self, consumer: str, *, min_idle_ms: int,
                                count: int = 10) -> list[tuple[str, dict[str, str]]]:
        return await self._claim(self.keys.push_jobs, FANOUT_GROUP, consumer, min_idle_ms, count)

    async def fanout_progress(self, entry_id: str) -> str | None:
        """The last member a fan-out job already enqueued for (None: start from the beginning)."""
        raw = await self._redis.call(self._r.get(self.keys.push_fanout_progress(entry_id)))
        return None if raw is None else _s(raw)

    def _add_sends(self, pipe: Pipeline, jobs: Sequence[SendJob]) -> None:
        for job in jobs:
            pipe.xadd(self.keys.push_sends, {"job": encode_job(job)}, maxlen=PUSH_SENDS_MAXLEN, approximate=True)

    async def commit_fanout_batch(self, entry_id: str, jobs: Sequence[SendJob], last_member: str) -> None:
        """Enqueue a batch's send jobs and move the job's cursor past the batch, atomically."""

        def build(pipe: Pipeline) -> None:
            self._add_sends(pipe, jobs)
            pipe.set(self.keys.push_fanout_progress(entry_id), last_member, ex=FANOUT_PROGRESS_TTL_S)

        await self._redis.pipelined(build, transaction=True)

    async def complete_fanout(self, entry_id: str, jobs: Sequence[SendJob]) -> None:
        """Enqueue the last batch's send jobs, acknowledge the job and drop its cursor, atomically
        (one round trip: the common case of a message whose members fit in one batch)."""

        def build(pipe: Pipeline) -> None:
            self._add_sends(pipe, jobs)
            pipe.xack(self.keys.push_jobs, FANOUT_GROUP, entry_id)
            pipe.delete(self.keys.push_fanout_progress(entry_id))

        await self._redis.pipelined(build, transaction=True)

    async def complete_fanouts(self, done: Sequence[tuple[str, Sequence[SendJob]]]) -> None:
        """:meth:`complete_fanout` for many jobs in one transaction (one round trip): every job's
        send jobs in order, then every job acknowledged and its cursor dropped."""
        if not done:
            return

        def build(pipe: Pipeline) -> None:
            for _, jobs in done:
                self._add_sends(pipe, jobs)
            pipe.xack(self.keys.push_jobs, FANOUT_GROUP, *(entry_id for entry_id, _ in done))
            pipe.delete(*(self.keys.push_fanout_progress(entry_id) for entry_id, _ in done))

        await self._redis.pipelined(build, transaction=True)

    async def finish_fanout_job(self, entry_id: str) -> None:
        """Acknowledge a fully fanned-out job and drop its cursor, atomically."""
        await self.complete_fanout(entry_id, [])

    # --- send jobs -------------------------------------------------------------------------------

    async def enqueue_sends(self, jobs: Sequence[SendJob]) -> None:
        """Append send jobs directly (tests, benchmarks, DLQ replays)."""
        await self._redis.pipelined(lambda pipe: self._add_sends(pipe, jobs), transaction=True)

    async def clear_sends(self) -> None:
        """Drop the send stream, its consumer group included (benchmarks start from an empty stream)."""
        await self._redis.call(self._r.delete(self.keys.push_sends))

    async def read_sends(self, consumer: str, *, count: int = 256,
                         block_ms: int = 1000) -> list[tuple[str, SendJob]]:
        return [(i, decode_job(f["job"])) for i, f in
                await self._read(self.keys.push_sends, SENDERS_GROUP, consumer, count, block_ms)]

    async def claim_sends(self, consumer: str, *, min_idle_ms: int, count: int = 256) -> list[tuple[str, SendJob]]:
        return [(i, decode_job(f["job"])) for i, f in
                await self._claim(self.keys.push_sends, SENDERS_GROUP, consumer, min_idle_ms, count)]

    async def settle_send(self, entry_id: str, *, retry: tuple[int, SendJob] | None = None,
                          dead_letter: DeadLetter | None = None) -> None:
        """Acknowledge a send entry together with what its outcome implies, in one MULTI.

        Args:
            entry_id: the ``push:sends`` entry.
            retry: ``(due_ms, job)`` to try again later.
            dead_letter: give up: append to ``push:dlq``.
        """

        def build(pipe: Pipeline) -> None:
            pipe.xack(self.keys.push_sends, SENDERS_GROUP, entry_id)
            if retry is not None:
                due_ms, job = retry
                pipe.zadd(self.keys.push_retry, {encode_job(job): due_ms})
            if dead_letter is not None:
                pipe.xadd(self.keys.push_dlq, {"job": encode_job(dead_letter.job), "reason": dead_letter.reason,
                                               "failed_ms": dead_letter.failed_ms},
                          maxlen=PUSH_DLQ_MAXLEN, approximate=True)

        await self._redis.pipelined(build, transaction=True)

    async def move_due_retries(self, now_ms: int, *, limit: int = 500) -> int:
        """Move retries due by ``now_ms`` back onto ``push:sends``; returns how many.

        ``WATCH`` makes the read-remove-append atomic: two movers never both move one job.
        """
        key = self.keys.push_retry

        async def body(pipe: Pipeline) -> int:
            due = await pipe.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
            if not due:
                await pipe.unwatch()  # type: ignore[no-untyped-call]
                return 0
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.zrem(key, *due)
            for raw in due:
                fields: dict[Any, Any] = {"job": raw}
                pipe.xadd(self.keys.push_sends, fields, maxlen=PUSH_SENDS_MAXLEN, approximate=True)
            await pipe.execute()
            return len(due)

        return await self._redis.watched(key, body, default=0)

    async def retries_waiting(self) -> int:
        return int(await self._redis.call(self._r.zcard(self.keys.push_retry)))

    async def dead_letters(self, *, count: int = 100) -> list[tuple[str, DeadLetter]]:
        """The oldest dead letters (inspection; ``XRANGE push:dlq`` shows the same)."""
        reply = await self._redis.call(self._r.xrange(self.keys.push_dlq, count=count))
        return [(i, DeadLetter(job=decode_job(f["job"]), reason=f["reason"], failed_ms=int(f["failed_ms"])))
                for i, f in _entries(reply)]

    async def pending_counts(self) -> Mapping[str, int]:
        """Entries read but not acknowledged, per stream (for tests and monitoring)."""
        out = {}
        for stream, group in ((self.keys.push_jobs, FANOUT_GROUP), (self.keys.push_sends, SENDERS_GROUP)):
            info = await self._redis.call(self._r.xpending(stream, group))
            out[stream] = int(info["pending"])
        return out


def now_ms() -> int:
    return time.time_ns() // 1_000_000
