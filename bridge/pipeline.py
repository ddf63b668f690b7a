"""One batch of sends through the bridge: validate, authorize, dedup, check targets, attach files,
order, persist, publish, ack.

Events that name another message (edit, delete, reaction, pin, replies) are checked against the
folded state of the messages they name (:func:`mqchat.fold.refusal`), read with one
``MessageStore.related`` call per batch; a refused event gets an error ack and nothing is stored.

A ``file`` send's upload is checked and bound to the message (``(channel, sender, cmid)``) before
the message is persisted (:meth:`Attacher.attach_to_message`; a retry of the same cmid binds again
without failing); the stream carries the message with its :class:`~mqchat.schema.Attachment`. A
``delete`` of a ``file`` message deletes the attachment's objects and record in the follow-ups.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from bridge import authorize
from bridge.sequencer import Draft, Plan, Sequencer
from mqchat import fold, schema, topics
from mqchat.errors import SchemaError, StorageError, StorageUnavailable
from mqchat.objects.policy import AttachmentError, FileSend
from mqchat.storage.base import (
    CmidKey,
    Directory,
    FanoutQueue,
    MessageLogWriter,
    MessageStore,
    ReadStateStore,
    SlowModeClaim,
    SlowModeGate,
    StoredMessage,
)

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``(topic, payload)`` pairs at QoS 1, on the wire in the order given."""
        ...


class Attacher(Protocol):
    """What the pipeline uses of :class:`mqchat.objects.service.Attachments`."""

    async def attach_to_message(self, send: FileSend, *, user: str, channel: str, cmid: str) -> schema.Attachment:
        """Check the send's upload and bind it to the message (idempotent for the same cmid).

        Raises:
            AttachmentError: the send may not use this upload (the code goes into the error ack).
        """
        ...

    async def attachments_for(self, messages: Sequence[CmidKey]) -> dict[CmidKey, schema.Attachment]:
        """Attachments of ``file`` messages by ``(channel, sender, cmid)``, with fresh URLs."""
        ...

    async def delete_for_messages(self, messages: Sequence[CmidKey]) -> int:
        """Delete the attachments (objects and records) of deleted messages."""
        ...


@dataclass(frozen=True, slots=True)
class Inbound:
    """A send as it came off the broker: ids from the topic, payload untouched."""

    user: str
    device: str
    channel: str
    payload: bytes
    received_at: float = 0.0
    """Monotonic time the bridge took it off the broker (for the receive→ack metric)."""


@dataclass(slots=True)
class BatchStats:
    accepted: int = 0
    duplicates: int = 0
    not_owned: int = 0
    """Sends for channels another bridge owns (left to it, unanswered)."""
    rejected: dict[str, int] = field(default_factory=dict)


#: Error codes the bridge itself adds to those of :mod:`mqchat.schema` (and of
#: :func:`mqchat.fold.refusal`: ``not_found``, ``forbidden``, ``target_deleted``,
#: ``too_many_reactions``, ``invalid_thread``; and of :mod:`bridge.authorize`: ``forbidden``,
#: ``timed_out``, ``slow_mode``).
NOT_MEMBER = authorize.NOT_MEMBER
UNAVAILABLE = "unavailable"

#: A draft the bridge refuses, with the error code and message of its ack.
Refusal = tuple[Draft, str, str]


@dataclass(slots=True)
class Prepared:
    """A batch after :meth:`Pipeline.prepare`: the sends that may go on, the error acks of the others."""

    stats: BatchStats = field(default_factory=BatchStats)
    replies: list[tuple[str, bytes]] = field(default_factory=list)
    """Acks in arrival order (error acks so far; :meth:`Pipeline.commit` adds the others)."""
    drafts: list[tuple[Inbound, Draft]] = field(default_factory=list)

    def reject(self, item: Inbound, cmid: str | None, code: str, message: str,
               retry_after_ms: int | None = None) -> None:
        """Refuse one send: count it and queue its error ack."""
        self.stats.rejected[code] = self.stats.rejected.get(code, 0) + 1
        self.replies.append((topics.ack(item.user, item.device),
                             _error_ack(cmid, item.channel, code, message, retry_after_ms)))


@dataclass(slots=True)
class Outgoing:
    """A batch after :meth:`Pipeline.commit`: durable, waiting to be published."""

    stats: BatchStats
    publish: list[tuple[str, bytes]]
    """The stream (seq order per channel), then every ack (arrival order)."""
    new: list[StoredMessage]
    """The messages this batch created (for the follow-ups)."""
    first_published: dict[str, int] = field(default_factory=dict)
    """The lowest seq each channel publishes in this batch."""


def _error_ack(cmid: str | None, channel: str, code: str, message: str, retry_after_ms: int | None = None) -> bytes:
    return schema.encode(schema.Ack(cmid=cmid, channel=channel, ok=False,
                                    error=schema.ErrorBody(code=code, message=message, retry_after_ms=retry_after_ms)))


class Pipeline:
    """Processes batches of :class:`Inbound` sends in three stages (:meth:`prepare`, :meth:`commit`,
    :meth:`deliver`; :meth:`process` runs all three). One instance per bridge. Each stage handles
    one batch at a time, batches in order; different stages may run at once for consecutive
    batches (:mod:`bridge.stages`).

    Args:
        store: where messages become durable.
        directory: membership source.
        sequencer: order and idempotency state.
        publisher: the MQTT side.
        clock_ms: wall clock in milliseconds.
        write_deadline_s: how long to keep retrying a temporarily failing store before giving the
            batch back to the senders with a retryable error.
        read_state: where read markers and mentions live; after the acks are out, each sender's
            marker moves to its own message (so own messages never count as unread) and mentions
            are recorded. ``None`` turns this off.
        fanout: where push fan-out jobs go, one per new message, after the acks (pushes never
            block the send path). ``None`` turns this off.
        message_log: where "message changed" notices go (the search indexer's replayable log), one
            per new message, after the acks. ``None`` turns this off.
        push_bodies: False in privacy mode (``push.privacy``): fan-out jobs carry no message text.
        owns: with several bridges, whether this one currently owns a channel; sends for other
            channels are left to their owner. ``None``: this bridge owns every channel.
        background_followups: queue the read-state and push-job updates for
            :meth:`follow_up_forever` instead of doing them before :meth:`process` returns.
        slow_mode: where senders' slow-mode slots are claimed (Redis with several bridges);
            ``None``: in this process.
        attachments: where ``file`` sends find and bind their uploads; ``None``: ``file`` sends are
            refused (``unavailable``).
    """

    def __init__(
        self,
        store: MessageStore,
        directory: Directory,
        sequencer: Sequencer,
        publisher: Publisher,
        *,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        write_deadline_s: float = 5.0,
        read_state: ReadStateStore | None = None,
        fanout: FanoutQueue | None = None,
        message_log: MessageLogWriter | None = None,
        push_bodies: bool = True,
        owns: Callable[[str], bool] | None = None,
        background_followups: bool = False,
        slow_mode: SlowModeGate | None = None,
        attachments: Attacher | None = None,
    ) -> None:
        self._attachments = attachments
        self._slow_mode: SlowModeGate = slow_mode if slow_mode is not None else authorize.MemorySlowMode()
        self._owns = owns
        # With background follow-ups the next batch is not held up by Redis round trips of this one.
        self._followups: asyncio.Queue[list[StoredMessage]] | None = (
            asyncio.Queue() if background_followups else None)
        self._read_state = read_state
        self._fanout = fanout
        self._message_log = message_log
        self._push_bodies = push_bodies
        self._store = store
        self._directory = directory
        self._seq = sequencer
        self._publisher = publisher
        self._clock_ms = clock_ms
        self._write_deadline_s = write_deadline_s

    async def process(self, batch: Sequence[Inbound]) -> BatchStats:
        """All three stages for one batch: :meth:`prepare`, :meth:`commit`, :meth:`deliver`."""
        return await self.deliver(await self.commit(await self.prepare(batch)))

    async def prepare(self, batch: Sequence[Inbound]) -> Prepared:
        """Stage 1 (no message store, no order state): keep the sends this bridge owns, decode them
        and decide their permissions, timeouts and slow mode. Refused sends get their error acks
        (sent by :meth:`deliver`, with the batch's other acks).

        May run for batch N+1 while :meth:`commit` runs for batch N: what it reads (the directory,
        slow-mode slots) does not depend on the messages being written.
        """
        out = Prepared()
        if self._owns is not None:
            owned = [item for item in batch if self._owns(item.channel)]
            out.stats.not_owned = len(batch) - len(owned)
            batch = owned
        reject = out.reject
        # 1. decode (pure)
        drafts: list[tuple[Inbound, Draft]] = []
        for item in batch:
            try:
                req = schema.decode_send(item.payload)
            except SchemaError as exc:
                reject(item, schema.salvage_cmid(item.payload), exc.code, exc.message)
                continue
            drafts.append((item, Draft(item.user, item.device, item.channel, req.cmid, req.kind, req.body or "",
                                       target=req.target, emoji=req.emoji, op=req.op, reply_to=req.reply_to,
                                       thread=req.thread, upload=req.upload)))

        # 2. permissions, timeouts and slow mode: one directory round trip for the batch
        if drafts:
            drafts = await self._authorize(drafts, reject)
        out.drafts = drafts
        return out

    async def commit(self, prepared: Prepared) -> Outgoing:
        """Stage 2: order the prepared sends, make them durable (one store write, fsync'd), and
        build what :meth:`deliver` publishes: the stream in seq order, then every ack in arrival
        order. Batches must be committed in the order they were prepared, one at a time.
        A store failure gives every send of the batch an ``unavailable`` ack (nothing is ordered).
        """
        stats, replies, drafts = prepared.stats, prepared.replies, prepared.drafts
        stream: list[tuple[str, bytes]] = []
        plan_new: list[StoredMessage] = []
        firsts: dict[str, int] = {}
        if drafts:
            plan_items = [d for _, d in drafts]
            try:
                plan, refused, attached = await self._order_and_persist(plan_items)
            except StorageError as exc:
                logger.error("batch of %d sends not persisted: %s", len(plan_items), exc)
                for item, d in drafts:
                    prepared.reject(item, d.cmid, UNAVAILABLE, "message store unavailable; retry with the same cmid")
            else:
                inbound = {id(d): item for item, d in drafts}
                for d, code, message in refused:
                    prepared.reject(inbound[id(d)], d.cmid, code, message)
                plan_new = plan.new_messages
                stream = [(topics.stream(m.channel), schema.encode(wire))
                          for m, wire in await self._wires(plan.to_publish, attached)]
                for m in reversed(plan.to_publish):
                    firsts[m.channel] = m.seq
                for o in plan.outcomes:
                    m = o.message
                    if o.new:
                        stats.accepted += 1
                    else:
                        stats.duplicates += 1
                    ack = schema.Ack(cmid=m.cmid, channel=m.channel, ok=True, id=str(m.id), seq=m.seq, epoch=m.epoch)
                    replies.append((topics.ack(o.draft.user, o.draft.device), schema.encode(ack)))
        stream.extend(replies)
        return Outgoing(stats, stream, plan_new, firsts)

    async def deliver(self, outgoing: Outgoing) -> BatchStats:
        """Stage 3: publish the stream, then every ack (persist → publish → ack), and queue (or
        run) the follow-ups of the new messages. Batches must be delivered in the order they were
        committed, one at a time: that keeps each channel's stream in seq order on the wire."""
        # 3. publish the stream first (persist → publish → ack), then every ack
        try:
            await self._publisher.publish(outgoing.publish)
        except BaseException:
            # Not (all) published: the senders' retries publish these messages (and those of the
            # batches committed after them, which the failure stops too) instead of leaving a gap.
            self._seq.unpublished(outgoing.first_published)
            raise
        # 4. read state and push jobs, off the ack path: the acks are already on their way
        plan_new = outgoing.new
        if plan_new and (self._read_state is not None or self._fanout is not None or self._message_log is not None
                         or self._attachments is not None):
            if self._followups is None:
                await self.run_followups(plan_new)
            else:
                self._followups.put_nowait(plan_new)
        return outgoing.stats

    async def _authorize(self, drafts: list[tuple[Inbound, Draft]],
                         reject: Callable[[Inbound, str | None, str, str, int | None], None],
                         ) -> list[tuple[Inbound, Draft]]:
        """The drafts that may be sent (bridge/authorize.py); the others are rejected."""
        access = await authorize.channel_access(self._directory, {(d.channel, d.user) for _, d in drafts})
        now_ms = self._clock_ms()
        allowed: list[tuple[Inbound, Draft]] = []
        slowed: list[tuple[Inbound, Draft, SlowModeClaim]] = []
        for item, d in drafts:
            verdict = authorize.decide(access[(d.channel, d.user)], now_ms)
            if isinstance(verdict, authorize.Refusal):
                reject(item, d.cmid, verdict.code, verdict.message, verdict.retry_after_ms)
            elif verdict:
                slowed.append((item, d, SlowModeClaim(d.channel, d.user, d.cmid, verdict)))
            else:
                allowed.append((item, d))
        if slowed:
            waits = await self._slow_mode.claim_slow_mode([c for _, _, c in slowed], now_ms=now_ms)
            for (item, d, _), wait_ms in zip(slowed, waits, strict=True):
                if wait_ms:
                    refusal = authorize.slow_mode_refusal(wait_ms)
                    reject(item, d.cmid, refusal.code, refusal.message, refusal.retry_after_ms)
                else:
                    allowed.append((item, d))
            order = {id(item): i for i, (item, _) in enumerate(drafts)}
            allowed.sort(key=lambda pair: order[id(pair[0])])
        return allowed

    async def run_followups(self, new: Sequence[StoredMessage]) -> None:
        """After the acks: move senders' read markers, record mentions, queue push jobs, log the new
        messages for search, delete the attachments of deleted ``file`` messages. Best effort:
        messages and acks are already safe; a failure only delays unread counts or pushes."""
        jobs = []
        deletes = [m for m in new if m.kind == "delete" and m.target is not None]
        if self._attachments is not None and deletes:
            jobs.append(self._delete_attachments(deletes))
        if self._message_log is not None and new:
            # Every event is a "message changed" notice for search (an edit or delete changes its target).
            jobs.append(self._message_log.append_messages(new))
        # Only new content counts: edits, deletes, reactions and pins move no marker, mention
        # nobody (an edit that adds a mention does not notify again) and push nothing.
        new = [m for m in new if m.counts]
        if self._read_state is not None and new:
            markers = [(m.sender, m.channel, m.epoch, m.seq) for m in new]
            # Only members are mentioned: a made-up or foreign user id in a body creates no state.
            named = [(u, m.channel, m.seq) for m in new for u in schema.mentions(m.body) if u != m.sender]
            try:
                members = await self._directory.memberships({(c, u) for u, c, _ in named}) if named else set()
            except StorageError as exc:
                logger.warning("mentions of %d messages not recorded: %s", len(new), exc)
                members = set()
            mentioned = [(u, c, seq) for u, c, seq in named if (c, u) in members]
            jobs += [self._read_state.add_mentions(mentioned), self._read_state.mark_read_many(markers)]
        if self._fanout is not None and new:
            jobs.append(self._fanout.enqueue_fanout(new, bodies=self._push_bodies))
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, StorageError):
                logger.warning("read state, push jobs or message log not updated for %d messages: %s", len(new), result)
            elif isinstance(result, BaseException):
                raise result

    async def follow_up_forever(self) -> None:
        """Run the follow-ups of :meth:`process` in the background, coalescing the batches that
        arrived meanwhile into one round of Redis calls. Only with ``background_followups``."""
        assert self._followups is not None
        while True:
            new = list(await self._followups.get())
            while not self._followups.empty():
                new += self._followups.get_nowait()
            try:
                await self.run_followups(new)
            except Exception:
                logger.exception("follow-ups of %d messages failed", len(new))

    async def flush_followups(self) -> None:
        """Run whatever follow-ups are still queued (on shutdown)."""
        if self._followups is None:
            return
        new: list[StoredMessage] = []
        while not self._followups.empty():
            new += self._followups.get_nowait()
        if new:
            await self.run_followups(new)

    async def _validate(self, drafts: list[Draft], known: set[CmidKey]) -> tuple[list[Draft], list[Refusal]]:
        """Check the events that name other messages against the states they would change: one
        store round trip for the batch (none when no draft names a message). Retries of stored
        events (``known``) are not checked again: they get their original ack."""
        wanted: dict[str, set[int]] = {}
        for d in drafts:
            if d.key in known:
                continue
            for ref in (d.target, d.reply_to, d.thread):
                if ref is not None:
                    wanted.setdefault(d.channel, set()).add(ref)
        if not wanted:
            return drafts, []
        related = await self._store.related(wanted)
        states = {c: fold.fold(related.get(c, [])) for c in wanted}
        accepted: list[Draft] = []
        refused: list[Refusal] = []
        seen: set[CmidKey] = set()
        for d in drafts:
            if d.key in known or d.key in seen or d.channel not in states:
                accepted.append(d)
                continue
            why = fold.refusal(states[d.channel], d)
            if why is not None:
                refused.append((d, *why))
                continue
            seen.add(d.key)
            accepted.append(d)
            # Later drafts of this batch see this one (a delete then an edit of one message: the
            # edit is refused). A text draft folds in at seq 0, which no event can name.
            states[d.channel] = fold.apply(states[d.channel], d)
        return accepted, refused

    async def _attach(self, drafts: list[Draft], known: set[CmidKey],
                      ) -> tuple[list[Draft], list[Refusal], dict[CmidKey, schema.Attachment]]:
        """Bind each ``file`` draft's upload to its message, in arrival order (of two sends of one
        upload, the first wins). Retries of stored sends (``known``) keep what they bound."""
        accepted: list[Draft] = []
        refused: list[Refusal] = []
        attached: dict[CmidKey, schema.Attachment] = {}
        for d in drafts:
            if d.kind not in schema.FILE_KINDS or d.key in known or d.key in attached:
                accepted.append(d)
                continue
            if self._attachments is None:
                refused.append((d, UNAVAILABLE, "this server has no object store for attachments"))
                continue
            try:
                attached[d.key] = await self._attachments.attach_to_message(
                    FileSend(upload=d.upload or "", caption=d.body), user=d.user, channel=d.channel, cmid=d.cmid)
            except AttachmentError as exc:
                refused.append((d, exc.code, exc.message))
                continue
            except StorageError as exc:
                logger.warning("upload %s of %s not attached: %s", d.upload, d.key, exc)
                refused.append((d, UNAVAILABLE, "upload records unavailable; retry with the same cmid"))
                continue
            accepted.append(d)
        return accepted, refused, attached

    async def _wires(self, messages: Sequence[StoredMessage], attached: dict[CmidKey, schema.Attachment],
                     ) -> list[tuple[StoredMessage, schema.ChannelMessage]]:
        """The stream payloads of ``messages``: ``file`` messages with their attachment (those bound in
        this batch, and, for republished ones, looked up)."""
        missing = [m.cmid_key for m in messages if m.kind in schema.FILE_KINDS and m.cmid_key not in attached]
        if missing and self._attachments is not None:
            try:
                attached = {**attached, **await self._attachments.attachments_for(missing)}
            except StorageError as exc:
                logger.warning("attachments of %d republished messages not found: %s", len(missing), exc)
        out = []
        for m in messages:
            wire = m.to_wire()
            att = attached.get(m.cmid_key) if m.kind in schema.FILE_KINDS else None
            out.append((m, wire if att is None else msgspec.structs.replace(wire, attachment=att)))
        return out

    async def _delete_attachments(self, deletes: Sequence[StoredMessage]) -> None:
        """Delete the attachments of the ``file`` messages these ``delete`` events removed."""
        assert self._attachments is not None
        wanted: dict[str, set[int]] = {}
        for m in deletes:
            assert m.target is not None
            wanted.setdefault(m.channel, set()).add(m.target)
        related = await self._store.related(wanted)
        keys = [r.cmid_key for c, rows in related.items() for r in rows
                if r.seq in wanted[c] and r.kind in schema.FILE_KINDS]
        if keys:
            removed = await self._attachments.delete_for_messages(keys)
            logger.info("deleted %d attachments of %d deleted file messages", removed, len(keys))

    async def _order_and_persist(
        self, drafts: list[Draft],
    ) -> tuple[Plan, list[Refusal], dict[CmidKey, schema.Attachment]]:
        missing = self._seq.unknown_channels(d.channel for d in drafts)
        if missing:
            self._seq.load(await self._store.positions(missing))
        lookup = [d.key for d in drafts if self._seq.recent(d.key) is None]
        stored = await self._store.find_cmids(lookup) if lookup else {}
        known = {d.key for d in drafts if d.key in stored or self._seq.recent(d.key) is not None}
        drafts, refused = await self._validate(drafts, known)
        drafts, unattached, attached = await self._attach(drafts, known)
        refused += unattached
        plan = self._seq.plan(drafts, stored, self._clock_ms())
        new = plan.new_messages
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._write_deadline_s
        delay = 0.05
        while True:
            try:
                await self._store.append(new)
                break
            except StorageUnavailable as exc:
                if loop.time() + delay > deadline:
                    self._seq.forget(plan.positions)
                    raise
                logger.warning("store unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except StorageError:
                # The store refused the order we proposed (e.g. another writer moved the channel):
                # our positions are stale. Reload them on the next batch.
                self._seq.forget(plan.positions)
                raise
        self._seq.apply(plan)
        return plan, refused, attached
