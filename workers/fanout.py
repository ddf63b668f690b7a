"""Push fan-out: one job per new message (``push:jobs``) → one send job per device that needs a push.

::

    push:jobs ──XREADGROUP / XAUTOCLAIM──▶ fan_out(job)
       members of the channel except the sender, sorted, after the job's progress cursor
       per batch of ``push.fanout_batch`` members, one pipelined round trip:
           presence status · channel muted? · registered devices
       decide (pure): online anywhere → none; muted → none; no device → none; else push
       for those who get one: badge = unread total over their channels
           (their channel ids, their read markers in one round trip, the channels' last seqs)
       MULTI: XADD push:sends (one per device), SET cursor = last member of the batch
    MULTI: XACK the job, DEL the cursor

A worker that dies mid-job leaves the job pending; whoever claims it resumes after the cursor, so
no member gets two send jobs for one message and none is skipped.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mqchat import unread
from mqchat.storage.base import Directory, MessageStore, ReadMarker
from mqchat.storage.push_state import PushRegistration, PushState, SendJob
from workers.push.sender import keep_claimed

logger = logging.getLogger(__name__)


class Decision(enum.StrEnum):
    PUSH = "push"
    ONLINE = "online"
    MUTED = "muted"
    NO_DEVICE = "no_device"


def decide(status: str, muted: bool, devices: Mapping[str, PushRegistration]) -> Decision:
    """Whether a member gets a push for a new message (pure).

    ``away`` counts as online: the device still holds its MQTT connection and receives the message.
    """
    if status != "offline":
        return Decision.ONLINE
    if muted:
        return Decision.MUTED
    if not devices:
        return Decision.NO_DEVICE
    return Decision.PUSH


@dataclass(frozen=True, slots=True)
class FanoutJob:
    """A ``push:jobs`` entry (fields from ``mqchat.storage.redis_state.fanout_job``)."""

    id: str
    channel: str
    epoch: int
    seq: int
    sender: str
    device: str
    ts: int
    kind: str
    body: str

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> FanoutJob:
        return cls(id=f["id"], channel=f["channel"], epoch=int(f["epoch"]), seq=int(f["seq"]), sender=f["sender"],
                   device=f["device"], ts=int(f["ts"]), kind=f["kind"], body=f["body"])


@dataclass(frozen=True, slots=True)
class FanoutConfig:
    batch: int = 500
    """Members decided per round trip; fresh jobs of channels this small are fanned out together
    (:meth:`Fanout.fan_out_many`)."""
    claim_idle_ms: int = 60_000
    block_ms: int = 1000
    privacy: bool = False
    members_cache_s: float = 1.0
    """How long a channel's member list is reused (a membership change reaches push decisions
    within this time); saves a directory read per message in busy channels."""


class Fanout:
    """Consumes ``push:jobs`` and produces ``push:sends``.

    Args:
        state: push state.
        directory: channel members and each member's channels.
        store: channel positions (for badges).
        consumer: this worker's consumer name (unique per process).
        config: knobs.
        clock_ms: wall clock in ms.
    """

    def __init__(self, state: PushState, directory: Directory, store: MessageStore, consumer: str,
                 config: FanoutConfig, *, clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self._state = state
        self._directory = directory
        self._store = store
        self._consumer = consumer
        self._config = config
        self._clock_ms = clock_ms
        self.counts: Counter[str] = Counter()
        self._members: dict[str, tuple[float, list[str]]] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until ``stop`` is set: claim jobs of dead workers, else read new ones, and fan each out."""
        await self._state.ensure_groups()
        last_claim = -1e18
        while stop is None or not stop.is_set():
            entries: list[tuple[str, dict[str, str]]] = []
            if time.monotonic() - last_claim >= self._config.claim_idle_ms / 2000:
                last_claim = time.monotonic()
                entries = await self._state.claim_fanout_jobs(self._consumer, min_idle_ms=self._config.claim_idle_ms)
                if entries:
                    logger.info("took over %d fan-out jobs from a stopped worker", len(entries))
            resumed = bool(entries)  # taken over: they may have a progress cursor
            if not entries:
                entries = await self._state.read_fanout_jobs(self._consumer, block_ms=self._config.block_ms)
            if not resumed and len(entries) > 1:
                async with keep_claimed(lambda i: self._state.touch_fanout_jobs(self._consumer, i),
                                        [entry_id for entry_id, _ in entries], self._config.claim_idle_ms / 3000):
                    entries = await self.fan_out_many([(i, FanoutJob.from_fields(f)) for i, f in entries])
            for entry_id, fields in entries:
                async with keep_claimed(lambda i: self._state.touch_fanout_jobs(self._consumer, i), [entry_id],
                                        self._config.claim_idle_ms / 3000):
                    await self.fan_out(entry_id, FanoutJob.from_fields(fields), resumed=resumed)

    async def _channel_members(self, channel: str) -> list[str]:
        now = time.monotonic()
        hit = self._members.get(channel)
        if hit is not None and hit[0] > now:
            return hit[1]
        members = sorted(await self._directory.members(channel))
        self._members[channel] = (now + self._config.members_cache_s, members)
        if len(self._members) > 10_000:
            self._members = {c: e for c, e in self._members.items() if e[0] > now}
        return members

    async def fan_out(self, entry_id: str, job: FanoutJob, *, resumed: bool = True) -> int:
        """Decide for every member and enqueue their send jobs; returns how many send jobs.

        Args:
            resumed: the job may have been partly fanned out by a worker that stopped (read its
                progress cursor); ``False`` for jobs read fresh from the stream.
        """
        members = [m for m in await self._channel_members(job.channel) if m != job.sender]
        cursor = await self._state.fanout_progress(entry_id) if resumed else None
        if cursor is not None:
            members = [m for m in members if m > cursor]
        if not members:
            await self._state.finish_fanout_job(entry_id)
            self.counts["jobs"] += 1
            return 0
        made = 0
        now = self._clock_ms()
        for start in range(0, len(members), self._config.batch):
            chunk = members[start:start + self._config.batch]
            facts = await self._state.member_facts(chunk, job.channel)
            pushable: list[tuple[str, dict[str, PushRegistration]]] = []
            for member, (status, muted, devices) in zip(chunk, facts, strict=True):
                decision = decide(status, muted, devices)
                self.counts[decision.value] += 1
                if decision is Decision.PUSH:
                    pushable.append((member, devices))
            badges = await self.badges([m for m, _ in pushable])
            body = None if self._config.privacy else job.body
            sends = [
                SendJob(key=f"{job.id}:{member}:{device}", message_id=job.id, user=member, device=device,
                        channel=job.channel, epoch=job.epoch, seq=job.seq, sender=job.sender, kind=job.kind,
                        body=body if reg.preview else None, badge=badges[member], ts=job.ts, first_ms=now)
                for member, devices in pushable for device, reg in sorted(devices.items())
            ]
            if start + self._config.batch >= len(members):
                await self._state.complete_fanout(entry_id, sends)  # last batch: enqueue and ack at once
            else:
                await self._state.commit_fanout_batch(entry_id, sends, chunk[-1])
            made += len(sends)
        self.counts["jobs"] += 1
        return made

    async def fan_out_many(self, jobs: Sequence[tuple[str, FanoutJob]]) -> list[tuple[str, dict[str, str]]]:
        """Fan out fresh jobs (no progress cursor) of channels whose members fit in one batch: one
        round trip for every member's facts, one for the badges, one transaction that enqueues
        every send job and acknowledges every job. Returns the entries left for :meth:`fan_out`
        (jobs of channels with more members than ``batch``), in order."""
        small: list[tuple[str, FanoutJob, list[str]]] = []
        left: list[tuple[str, dict[str, str]]] = []
        for entry_id, job in jobs:
            members = [m for m in await self._channel_members(job.channel) if m != job.sender]
            if len(members) > self._config.batch:
                left.append((entry_id, _fields(job)))
            else:
                small.append((entry_id, job, members))
        if not small:
            return left
        facts = await self._state.member_facts_many([(members, job.channel) for _, job, members in small])
        pushable: list[list[tuple[str, dict[str, PushRegistration]]]] = []
        for (_, _, members), job_facts in zip(small, facts, strict=True):
            chosen = []
            for member, (status, muted, devices) in zip(members, job_facts, strict=True):
                decision = decide(status, muted, devices)
                self.counts[decision.value] += 1
                if decision is Decision.PUSH:
                    chosen.append((member, devices))
            pushable.append(chosen)
        badges = await self.badges(list(dict.fromkeys(m for chosen in pushable for m, _ in chosen)))
        now = self._clock_ms()
        done: list[tuple[str, Sequence[SendJob]]] = []
        for (entry_id, job, _), chosen in zip(small, pushable, strict=True):
            body = None if self._config.privacy else job.body
            done.append((entry_id, [
                SendJob(key=f"{job.id}:{member}:{device}", message_id=job.id, user=member, device=device,
                        channel=job.channel, epoch=job.epoch, seq=job.seq, sender=job.sender, kind=job.kind,
                        body=body if reg.preview else None, badge=badges[member], ts=job.ts, first_ms=now)
                for member, devices in chosen for device, reg in sorted(devices.items())]))
        await self._state.complete_fanouts(done)
        self.counts["jobs"] += len(done)
        return left

    async def badges(self, users: Sequence[str]) -> dict[str, int]:
        """Each user's unread total over all their channels (the server's badge)."""
        if not users:
            return {}
        channel_sets = [await self._directory.channel_ids_of(u) for u in users]
        markers: list[dict[str, ReadMarker]] = await self._state.read_markers_of(users)
        positions = await self._store.positions(set().union(*channel_sets))
        views = [({c: positions[c] for c in chans}, {c: m.get(c) for c in chans})
                 for chans, m in zip(channel_sets, markers, strict=True)]
        points = unread.all_points(views)
        counts = await self._store.counts_at(points) if points else {}
        return {u: unread.badge(pos, marks, counts) for u, (pos, marks) in zip(users, views, strict=True)}


def _fields(job: FanoutJob) -> dict[str, str]:
    """The stream fields of ``job`` (the inverse of :meth:`FanoutJob.from_fields`)."""
    return {"id": job.id, "channel": job.channel, "epoch": str(job.epoch), "seq": str(job.seq),
            "sender": job.sender, "device": job.device, "ts": str(job.ts), "kind": job.kind, "body": job.body}
