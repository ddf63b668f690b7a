"""The push sender loop: ``push:sends`` → re-check → FCM / APNs → settle.

::

    loop (bounded by stop):
      move due retries (push:retry → push:sends)
      claim sends idle too long with a dead worker (XAUTOCLAIM), else read new ones (XREADGROUP)
      re-check the batch in one round trip: online now? read up to the job's seq? still registered?
      send the rest concurrently (each pusher bounds its own concurrency, every request timed out)
      settle each entry as soon as its answer is in, in one MULTI with what the outcome implies:
        delivered → XACK          token dead → remove token (if unchanged), XACK
        temporary → ZADD push:retry at the backoff time, XACK; past the horizon → push:dlq, XACK
        permanent → push:dlq, XACK

**Delivery window.** An entry is acknowledged only after the provider answered. A worker that dies
after the provider accepted a push but before its ``MULTI`` reached Redis leaves the entry pending;
another worker claims it and sends it again. That window (one provider answer plus one Redis round
trip per push) is the only way a push is sent twice; the collapse key makes a duplicate replace
the first notification on the device rather than add a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from mqchat.storage.base import ReadMarker
from mqchat.storage.push_state import DeadLetter, Platform, PushRegistration, PushState, SendJob, redact
from workers.push.base import Notification, Outcome, PermanentPushError, Pusher, TemporaryPushError
from workers.push.policy import RetryPolicy, next_attempt_ms, preview_text

logger = logging.getLogger(__name__)

TITLE = "New message"


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """Knobs of the sender loop (from ``push.*`` settings)."""

    batch: int = 256
    claim_idle_ms: int = 60_000
    block_ms: int = 1000
    privacy: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_in_flight: int = 64
    """Sends (request and settle) in progress at once, all platforms together: keeps Redis
    connections in use below the pool's limit (100) whatever the pushers' own limits."""


def skip_reason(job: SendJob, status: str, marker: ReadMarker | None, reg: PushRegistration | None) -> str | None:
    """Why a send job must not be sent any more, or None to send it (pure).

    ``away`` counts as online: an away device still holds its MQTT connection and gets the message.
    """
    if reg is None:
        return "unregistered"
    if status != "offline":
        return "online"
    if marker is not None and marker.epoch == job.epoch and marker.seq >= job.seq:
        return "read"
    return None


@contextlib.asynccontextmanager
async def keep_claimed(touch: Callable[[Sequence[str]], Awaitable[None]], ids: Sequence[str],
                       interval_s: float) -> AsyncIterator[None]:
    """While the body runs, reset the entries' idle time every ``interval_s`` so that no other
    worker's XAUTOCLAIM takes work this (live) worker is still doing."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await touch(ids)
            except Exception as exc:
                logger.warning("could not refresh claims (%s)", exc)

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(beat(), name="workers.push.heartbeat")
        try:
            yield
        finally:
            task.cancel()


class Sender:
    """Sends the jobs of ``push:sends`` through one :class:`Pusher` per platform.

    Args:
        state: push state.
        pushers: the pusher of each platform.
        consumer: this worker's consumer name (unique per process).
        config: loop knobs and retry policy.
        rand: uniform [0, 1) source for jitter.
        clock_ms: wall clock in ms.
    """

    def __init__(self, state: PushState, pushers: Mapping[Platform, Pusher], consumer: str, config: SenderConfig,
                 *, rand: Callable[[], float] = random.random,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self._state = state
        self._pushers = pushers
        self._consumer = consumer
        self._config = config
        self._rand = rand
        self._clock_ms = clock_ms
        self.counts: Counter[str] = Counter()
        self._in_flight = asyncio.Semaphore(config.max_in_flight)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until ``stop`` is set: move retries, claim or read, process."""
        await self._state.ensure_groups()
        last_claim = -1e18
        while stop is None or not stop.is_set():
            await self._state.move_due_retries(self._clock_ms())
            entries: list[tuple[str, SendJob]] = []
            if time.monotonic() - last_claim >= self._config.claim_idle_ms / 2000:
                last_claim = time.monotonic()
                entries = await self._state.claim_sends(self._consumer, min_idle_ms=self._config.claim_idle_ms,
                                                        count=self._config.batch)
                if entries:
                    logger.info("took over %d push sends from a stopped worker", len(entries))
            if not entries:
                entries = await self._state.read_sends(self._consumer, count=self._config.batch,
                                                       block_ms=self._config.block_ms)
            if entries:
                await self.process(entries)

    async def process(self, entries: Sequence[tuple[str, SendJob]]) -> None:
        """Re-check, send and settle one batch."""
        ids = [entry_id for entry_id, _ in entries]
        async with keep_claimed(lambda i: self._state.touch_sends(self._consumer, i), ids,
                                self._config.claim_idle_ms / 3000):
            facts = await self._state.send_facts([job for _, job in entries])
            sends = []
            for (entry_id, job), (status, marker, reg) in zip(entries, facts, strict=True):
                reason = skip_reason(job, status, marker, reg)
                if reason is not None or reg is None:
                    self.counts[f"skipped_{reason}"] += 1
                    await self._state.settle_send(entry_id)
                    continue
                sends.append(self._send_one(entry_id, job, reg))
            await asyncio.gather(*sends)

    async def _send_one(self, entry_id: str, job: SendJob, reg: PushRegistration) -> None:
        async with self._in_flight:
            await self._send_and_settle(entry_id, job, reg)

    async def _send_and_settle(self, entry_id: str, job: SendJob, reg: PushRegistration) -> None:
        text = preview_text(job.kind, job.body, privacy=self._config.privacy, preview=reg.preview)
        notification = Notification(job=job, device=reg, title=TITLE, text=text)
        pusher = self._pushers.get(reg.platform)
        try:
            if pusher is None:
                raise PermanentPushError(f"no pusher for platform {reg.platform}")
            result = await pusher.send(notification)
        except TemporaryPushError as exc:
            await self._retry_or_give_up(entry_id, job, exc.reason, exc.retry_after)
            return
        except PermanentPushError as exc:
            self.counts["dead_lettered"] += 1
            logger.warning("push %s to %s/%s refused (%s): dead-lettered", job.key, reg.platform,
                           redact(reg.token), exc.reason)
            await self._state.settle_send(entry_id, dead_letter=DeadLetter(job=job, reason=exc.reason,
                                                                           failed_ms=self._clock_ms()))
            return
        except Exception as exc:  # a bug in a pusher must not stop the loop; retried like a temporary error
            logger.exception("push %s failed unexpectedly", job.key)
            await self._retry_or_give_up(entry_id, job, f"unexpected: {type(exc).__name__}", None)
            return
        if result.outcome is Outcome.TOKEN_DEAD:
            self.counts["token_dead"] += 1
            await self._state.remove_token(job.user, job.device, reg.token)
        else:
            self.counts["delivered"] += 1
        await self._state.settle_send(entry_id)

    async def _retry_or_give_up(self, entry_id: str, job: SendJob, reason: str, retry_after: float | None) -> None:
        now = self._clock_ms()
        due = next_attempt_ms(first_ms=job.first_ms, now_ms=now, attempt=job.attempt, policy=self._config.policy,
                              rand=self._rand, retry_after=retry_after)
        if due is None:
            self.counts["dead_lettered"] += 1
            logger.warning("push %s gave up after %d attempts (%s): dead-lettered", job.key, job.attempt + 1, reason)
            await self._state.settle_send(entry_id, dead_letter=DeadLetter(
                job=job, reason=f"gave up after {job.attempt + 1} attempts: {reason}", failed_ms=now))
            return
        self.counts["retried"] += 1
        logger.info("push %s failed (%s); attempt %d in %.1fs", job.key, reason, job.attempt + 2, (due - now) / 1000)
        await self._state.settle_send(entry_id, retry=(due, msgspec.structs.replace(job, attempt=job.attempt + 1)))
