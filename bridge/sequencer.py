"""Per-channel order and idempotency. Pure: no I/O, the clock is passed in.

The sequencer holds each channel's position (epoch, last seq) and a bounded cache of recent
``(channel, sender, cmid)`` results. :meth:`Sequencer.plan` turns a batch of validated sends into
new messages (next seqs, Snowflake ids) and duplicates (the original message), without changing
state; :meth:`Sequencer.apply` records the plan once the store has made it durable, and
:meth:`Sequencer.forget` drops channels whose position is no longer trusted (a failed write), so
they are reloaded from the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mqchat.ids import Snowflake
from mqchat.schema import COUNTING_KINDS
from mqchat.storage.base import CmidKey, Position, StoredMessage


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated send: sender and channel from the topic, the rest from the payload."""

    user: str
    device: str
    channel: str
    cmid: str
    kind: str
    body: str
    target: int | None = None
    emoji: str | None = None
    op: str | None = None
    reply_to: int | None = None
    thread: int | None = None
    upload: str | None = None
    """A ``file`` send's upload id (bound to the message before it is persisted; not stored with it)."""

    @property
    def key(self) -> CmidKey:
        return (self.channel, self.user, self.cmid)

    @property
    def seq(self) -> int:
        """Not ordered yet (for :func:`mqchat.fold.refusal`, which reads no seq of the event)."""
        return 0

    @property
    def sender(self) -> str:
        return self.user

    @property
    def ts(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Ordered:
    """The outcome of one draft: its message, and whether this send created it."""

    draft: Draft
    message: StoredMessage
    new: bool
    republish: bool = False
    """A duplicate whose message is durable but was never published (its write's answer was
    lost): publish it now, so members get it live rather than only through a gap fill."""


@dataclass(slots=True)
class Plan:
    outcomes: list[Ordered] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)

    @property
    def new_messages(self) -> list[StoredMessage]:
        return [o.message for o in self.outcomes if o.new]

    @property
    def to_publish(self) -> list[StoredMessage]:
        """New and republished messages, in seq order within each channel."""
        chosen = [o.message for o in self.outcomes if o.new or o.republish]
        return sorted(chosen, key=lambda m: (m.channel, m.epoch, m.seq))


class Sequencer:
    """Order state for the channels one bridge owns.

    Args:
        snowflake: id generator (its worker id must be unique among bridges).
        recent_max: how many recent idempotency results to keep in memory; older ones are looked
            up in the store.
    """

    def __init__(self, snowflake: Snowflake, *, recent_max: int = 100_000) -> None:
        self._snowflake = snowflake
        self._positions: dict[str, Position] = {}
        # Highest seq per channel known to be published. Positions loaded for the first time are
        # assumed published (a previous process may have done it); reloads keep the watermark.
        self._published: dict[str, int] = {}
        self._recent: OrderedDict[CmidKey, StoredMessage] = OrderedDict()
        self._recent_max = recent_max

    def unknown_channels(self, channels: Iterable[str]) -> set[str]:
        return {c for c in channels if c not in self._positions}

    def load(self, positions: Mapping[str, Position]) -> None:
        self._positions.update(positions)
        for channel, pos in positions.items():
            self._published.setdefault(channel, pos.last_seq)

    def forget(self, channels: Iterable[str]) -> None:
        for c in channels:
            self._positions.pop(c, None)

    def known_channels(self) -> list[str]:
        return list(self._positions)

    def recent(self, key: CmidKey) -> StoredMessage | None:
        return self._recent.get(key)

    def position(self, channel: str) -> Position | None:
        return self._positions.get(channel)

    def plan(self, drafts: Iterable[Draft], stored: Mapping[CmidKey, StoredMessage], now_ms: int) -> Plan:
        """Order ``drafts`` after the known positions.

        Args:
            drafts: validated sends, in arrival order; their channels must have been loaded.
            stored: idempotency results found in the store for keys not in the recent cache.
            now_ms: wall clock for ``ts`` and the Snowflake ids.
        """
        plan = Plan()
        batch: dict[CmidKey, StoredMessage] = {}
        republished: set[CmidKey] = set()
        for d in drafts:
            earlier = batch.get(d.key) or self._recent.get(d.key) or stored.get(d.key)
            if earlier is not None:
                unpublished = (d.key not in batch and earlier.seq > self._published.get(d.channel, 0)
                               and d.key not in republished)
                if unpublished:
                    republished.add(d.key)
                plan.outcomes.append(Ordered(d, earlier, new=False, republish=unpublished))
                continue
            pos = plan.positions.get(d.channel) or self._positions[d.channel]
            pos = Position(pos.epoch, pos.last_seq + 1, pos.count + (d.kind in COUNTING_KINDS))
            plan.positions[d.channel] = pos
            msg = StoredMessage(
                id=self._snowflake.next_id(now_ms), channel=d.channel, seq=pos.last_seq, epoch=pos.epoch,
                sender=d.user, device=d.device, cmid=d.cmid, ts=now_ms, kind=d.kind, body=d.body,
                target=d.target, emoji=d.emoji, op=d.op, reply_to=d.reply_to, thread=d.thread,
                count_seq=pos.count,
            )
            batch[d.key] = msg
            plan.outcomes.append(Ordered(d, msg, new=True))
        return plan

    def apply(self, plan: Plan) -> None:
        """Record a plan whose new messages are durable (and about to be published)."""
        self._positions.update(plan.positions)
        for o in plan.outcomes:
            self._remember(o.draft.key, o.message)
            if o.new or o.republish:
                m = o.message
                self._published[m.channel] = max(self._published.get(m.channel, 0), m.seq)

    def unpublished(self, firsts: Mapping[str, int]) -> None:
        """The publish of messages from these seqs on (per channel) failed: a retry of one of them
        publishes it (see :class:`Ordered`)."""
        for channel, seq in firsts.items():
            if channel in self._published:
                self._published[channel] = min(self._published[channel], seq - 1)

    def _remember(self, key: CmidKey, msg: StoredMessage) -> None:
        self._recent[key] = msg
        self._recent.move_to_end(key)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)
