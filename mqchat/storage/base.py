"""Storage protocols: what the bridge, broker and API need from a backend.

:class:`MessageStore` keeps each channel's ordered history. The bridge is its only writer: it
assigns ``seq`` and hands finished messages to :meth:`MessageStore.append`, which returns only once
they are durable. The store guards the order it is given: an append whose first ``seq`` is not the
channel's ``last_seq + 1`` in the current ``epoch`` is refused, so a bug or a stale writer can never
leave a gap or a duplicate. An appended ``delete`` erases, in the same write, the body of its
target and of the target's ``edit`` events: a deleted message's words leave the store.

:class:`Directory` keeps users, channels and memberships; the API writes it, the broker and bridge
read it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mqchat import schema

#: ``(channel, sender, cmid)``: the idempotency key of a send.
CmidKey = tuple[str, str, str]
ChannelKind = Literal["direct", "group"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    channel: str
    seq: int
    epoch: int
    sender: str
    device: str
    cmid: str
    ts: int
    """Milliseconds since the Unix epoch, when the bridge ordered the message."""
    kind: str
    body: str
    """Empty once the message (or the message an ``edit`` changed) is deleted."""
    target: int | None = None
    """The seq an ``edit``/``delete``/``reaction``/``pin``/``unpin`` changes."""
    emoji: str | None = None
    op: str | None = None
    reply_to: int | None = None
    thread: int | None = None
    count_seq: int = 0
    """Counting events (``schema.COUNTING_KINDS``) in the epoch up to and including this one."""

    @property
    def cmid_key(self) -> CmidKey:
        return (self.channel, self.sender, self.cmid)

    @property
    def counts(self) -> bool:
        """Whether this event counts toward unread, mentions and pushes."""
        return self.kind in schema.COUNTING_KINDS

    def to_wire(self) -> schema.ChannelMessage:
        return schema.ChannelMessage(
            id=str(self.id), seq=self.seq, epoch=self.epoch, channel=self.channel, sender=self.sender,
            device=self.device, cmid=self.cmid, ts=self.ts, kind=self.kind, body=self.body, target=self.target,
            emoji=self.emoji, op=self.op, reply_to=self.reply_to, thread=self.thread, count_seq=self.count_seq,
        )


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel's sequence stands. A channel with no messages is at ``(1, 0)``."""

    epoch: int
    last_seq: int
    last_count: int | None = field(default=None, compare=False)
    """The ``count_seq`` of the last event (what unread counts against); ``None`` where the
    caller built a position by hand with no events but counting ones (then it is ``last_seq``).
    Not part of equality: it follows from the events up to ``last_seq``, so two positions at the
    same ``(epoch, last_seq)`` of one channel are the same place."""

    @property
    def count(self) -> int:
        return self.last_seq if self.last_count is None else self.last_count


EMPTY_POSITION = Position(epoch=1, last_seq=0, last_count=0)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[StoredMessage]
    """In ascending ``seq`` order."""
    epoch: int
    last_seq: int
    has_more: bool
    """More messages exist beyond this page in the direction asked for."""


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str
    password_hash: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Channel:
    channel_id: str
    kind: ChannelKind
    name: str | None
    created_by: str
    created_ms: int


class MessageStore(Protocol):
    async def positions(self, channels: Collection[str]) -> dict[str, Position]:
        """Current position of each channel (``EMPTY_POSITION`` for channels with no messages)."""
        ...

    async def find_cmids(self, keys: Collection[CmidKey]) -> dict[CmidKey, StoredMessage]:
        """The stored messages among ``keys`` (idempotency lookups)."""
        ...

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        """Persist ``messages`` atomically; durable when this returns.

        Raises:
            StorageError: nothing was stored. ``Conflict`` when the batch does not continue each
                channel's sequence or repeats a cmid; ``StorageUnavailable`` for temporary faults.
        """
        ...

    async def history(
        self, channel: str, *, before: int | None = None, after: int | None = None, limit: int = 50,
    ) -> HistoryPage:
        """Messages of the current epoch: the newest ``limit`` below ``before``, or the oldest
        ``limit`` above ``after``, or the newest ``limit`` when neither is given."""
        ...

    async def related(self, wanted: Mapping[str, Collection[int]]) -> dict[str, list[StoredMessage]]:
        """For each channel, in its current epoch and ascending seq: the events at the given seqs,
        those whose ``target`` is one of them, and the replies whose ``thread`` is one of them:
        exactly what :func:`mqchat.fold.fold` needs for those messages' states. One round trip
        for the whole mapping (the bridge calls it once per batch)."""
        ...

    async def thread(
        self, channel: str, root: int, *, after: int = 0, limit: int = 50,
    ) -> tuple[list[StoredMessage], bool]:
        """The replies whose ``thread`` is ``root`` with seq above ``after``, ascending, at most
        ``limit``, and whether more follow."""
        ...

    async def pin_events(self, channel: str) -> list[StoredMessage]:
        """The channel's ``pin`` and ``unpin`` events (current epoch, ascending seq)."""
        ...

    async def counts_at(self, points: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """``count_seq`` of the event at each ``(channel, seq)`` of the current epoch (0 for seq 0):
        what unread subtracts for a read marker at that seq."""
        ...

    async def close(self) -> None: ...


class Directory(Protocol):
    async def create_user(self, username: str, password_hash: str, *, now_ms: int) -> User:
        """Raises ``Conflict`` when the username is taken (case-insensitive)."""
        ...

    async def user_by_name(self, username: str) -> User | None: ...

    async def existing_users(self, user_ids: Collection[str]) -> set[str]: ...

    async def create_channel(
        self, kind: ChannelKind, name: str | None, creator: str, members: Collection[str], *, now_ms: int,
    ) -> tuple[Channel, bool]:
        """Create a channel whose members are ``creator`` plus ``members``.

        A direct channel between two users is unique: asking again returns the existing one with
        ``False`` as the second item.
        """
        ...

    async def get_channel(self, channel_id: str) -> Channel | None: ...

    async def add_member(self, channel_id: str, user_id: str, *, now_ms: int) -> bool:
        """True when the user was not a member before."""
        ...

    async def remove_member(self, channel_id: str, user_id: str) -> bool:
        """True when the user was a member."""
        ...

    async def members(self, channel_id: str) -> list[str]: ...

    async def channels_of(self, user_id: str) -> list[Channel]: ...

    async def channel_ids_of(self, user_id: str) -> frozenset[str]: ...

    async def memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(channel_id, user_id)`` pairs are memberships (one round trip for a batch)."""
        ...

    async def shares_channel(self, a: str, b: str) -> bool: ...

    async def close(self) -> None: ...


def direct_key(a: str, b: str) -> str:
    """The identity of the direct channel between two users, whatever the order."""
    return "|".join(sorted((a, b)))


# --- presence and read state (Redis) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserPresence:
    status: Literal["online", "away", "offline"] | str
    last_seen: int | None
    """Milliseconds since the Unix epoch; ``None`` if never seen."""


@dataclass(frozen=True, slots=True)
class ReadMarker:
    epoch: int
    seq: int


class PresenceStore(Protocol):
    async def presence_event(self, user: str, member: str, op: Literal["connect", "refresh", "status", "disconnect"],
                             *, now_ms: int, ttl_ms: int, status: str = "online") -> str:
        """Apply one connection event; returns the user's aggregate status."""
        ...

    async def expire_leases(self, *, now_ms: int, limit: int = 1000) -> int: ...

    async def presence_of(self, users: Collection[str]) -> dict[str, UserPresence]: ...

    async def online_count(self, channel: str) -> int: ...


class ReadStateStore(Protocol):
    async def mark_read(self, user: str, channel: str, epoch: int, seq: int) -> ReadMarker:
        """Move the marker forward (never back); returns the marker after the call."""
        ...

    async def mark_read_many(self, markers: Sequence[tuple[str, str, int, int]]) -> None: ...

    async def read_markers(self, user: str, channels: Collection[str]) -> dict[str, ReadMarker | None]: ...

    async def add_mentions(self, mentions: Sequence[tuple[str, str, int]]) -> None: ...

    async def mention_counts(self, user: str, read_seqs: dict[str, int]) -> dict[str, int]: ...


class FanoutQueue(Protocol):
    async def enqueue_fanout(self, messages: Sequence[StoredMessage], *, bodies: bool = True) -> None:
        """Queue one push fan-out job per new (durable, already published) message. The queue is
        durable and consumed at least once by the push workers. ``bodies=False`` (privacy mode):
        the jobs carry no message text."""
        ...
