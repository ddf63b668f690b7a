"""Storage protocols: what the bridge, broker and API need from a backend.

:class:`MessageStore` keeps each channel's ordered history. The bridge is its only writer: it
assigns ``seq`` and hands finished messages to :meth:`MessageStore.append`, which returns only once
they are durable. The store guards the order it is given: an append whose first ``seq`` is not the
channel's ``last_seq + 1`` in the current ``epoch`` is refused, so a bug or a stale writer can never
leave a gap or a duplicate. An appended ``delete`` erases, in the same write, the body of its
target and of the target's ``edit`` events: a deleted message's words leave the store.

:class:`Directory` keeps users, channels and memberships; the API writes it, the broker and bridge
read it. :class:`ServerDirectory` extends it with servers, roles, channel overwrites, moderation,
invites, profiles and the audit log (docs/permissions.md). Its rules:

* **Writes check their actor inside the same transaction** as the change (permissions from
  :mod:`mqchat.permissions`, hierarchy included), raise a typed :class:`~mqchat.errors.DirectoryError`
  with a stable ``code`` when refused, and change nothing then. Every accepted change to a server is
  recorded in its audit log in that transaction.
* **Reads answer without an actor**: the caller decides who may read (with
  :meth:`ServerDirectory.server_permissions` or :meth:`ServerDirectory.channel_access`).
* **Membership of a server channel is visibility**: :meth:`Directory.channel_ids_of`,
  :meth:`Directory.members` and :meth:`Directory.memberships` count a server member in a server
  channel exactly when their effective permissions there include ``view_channel``. Direct and group
  channels keep explicit member lists.
* Time is passed in (``now_ms``); no rule reads a clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mqchat import schema
from mqchat.invalidation import Invalidation
from mqchat.permissions import NONE, Permission

#: ``(channel, sender, cmid)``: the idempotency key of a send.
CmidKey = tuple[str, str, str]
ChannelKind = Literal["direct", "group", "server"]
"""``direct`` and ``group`` channels have explicit members; ``server`` channels belong to a server and
are seen by the server members whose permissions include ``view_channel``."""
OverwriteTarget = Literal["role", "member"]


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
    display_name: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    channel_id: str
    kind: ChannelKind
    name: str | None
    created_by: str
    created_ms: int
    server_id: str | None = None
    """The server a ``server`` channel belongs to; None for direct and group channels."""
    slow_mode_s: int = 0
    """Seconds a member must wait between two sends (0: no slow mode)."""


@dataclass(frozen=True, slots=True)
class Server:
    server_id: str
    name: str
    owner_id: str
    discoverable: bool
    """Anyone may join a discoverable server without an invite."""
    created_ms: int


@dataclass(frozen=True, slots=True)
class Role:
    """A server role. ``@everyone`` has the server's id as its id, position 0, and every member."""

    role_id: str
    server_id: str
    name: str
    position: int
    perms: Permission

    @property
    def is_everyone(self) -> bool:
        return self.role_id == self.server_id


EVERYONE_NAME = "@everyone"


@dataclass(frozen=True, slots=True)
class Member:
    server_id: str
    user_id: str
    username: str
    display_name: str | None
    joined_ms: int
    role_ids: tuple[str, ...]
    """The member's roles (sorted), ``@everyone`` not included."""
    timeout_until_ms: int | None
    """Timed out (cannot send or react) until this time; None: never timed out."""

    def timed_out(self, now_ms: int) -> bool:
        return self.timeout_until_ms is not None and self.timeout_until_ms > now_ms


@dataclass(frozen=True, slots=True)
class MemberPage:
    members: list[Member]
    """In ascending ``user_id`` order."""
    next_after: str | None
    """Pass as ``after`` for the next page; None when this was the last."""


@dataclass(frozen=True, slots=True)
class ChannelMemberPage:
    user_ids: list[str]
    """Members of the channel in ascending order; may hold fewer than asked (even none) when more follow:
    a server channel's page scans a bounded number of server members."""
    next_after: str | None
    """Pass as ``after`` for the next page; None when this was the last."""


@dataclass(frozen=True, slots=True)
class ChannelOverwrite:
    channel_id: str
    target: OverwriteTarget
    target_id: str
    """A role id (the server id for ``@everyone``) or a user id."""
    allow: Permission
    deny: Permission


@dataclass(frozen=True, slots=True)
class Ban:
    server_id: str
    user_id: str
    actor: str
    reason: str | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class Invite:
    code: str
    server_id: str
    channel_id: str | None
    creator: str
    max_uses: int | None
    """None: unlimited."""
    uses: int
    expires_ms: int | None
    """None: never expires."""
    revoked: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: int
    """Increasing within the directory: newer entries have larger ids."""
    server_id: str
    actor: str
    action: str
    """``<object>.<verb>``: ``member.kick``, ``role.edit``, ... (docs/permissions.md lists them)."""
    target: str | None
    details: Mapping[str, Any]
    created_ms: int


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    """Newest first."""
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None when this was the last."""


@dataclass(frozen=True, slots=True)
class ChannelAccess:
    """What the bridge needs to decide a send: one answer per ``(channel, user)``."""

    perms: Permission = NONE
    """Effective permissions in the channel (NONE: not a member, or cannot view it)."""
    timeout_until_ms: int | None = None
    slow_mode_s: int = 0
    server_id: str | None = None
    """The channel's server; None for direct and group channels."""


@dataclass(frozen=True, slots=True)
class AccessScope:
    """What access caches keep per user (:meth:`ServerDirectory.access_scope`)."""

    channels: frozenset[str]
    """The channels the user can view (direct and group memberships included)."""
    servers: frozenset[str]
    """The servers the user is a member of: a change to one of them invalidates the user."""


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


class ServerDirectory(Directory, Protocol):
    """Servers, roles, overwrites, moderation, invites, profiles and the audit log.

    Every write takes the acting user and ``now_ms`` and raises a
    :class:`~mqchat.errors.DirectoryError` (``not_found``, ``forbidden``, ``role_hierarchy``, ...)
    when refused, leaving the directory unchanged.
    """

    # profiles
    async def get_user(self, user_id: str) -> User | None: ...

    async def users(self, user_ids: Collection[str]) -> dict[str, User]: ...

    async def all_channel_ids(self, *, after: str = "", limit: int = 1000) -> list[str]:
        """Every channel id above ``after`` in id order (maintenance jobs: ``mqchat reindex``)."""
        ...

    async def update_profile(self, user_id: str, *, display_name: str | None, avatar_url: str | None) -> User:
        """Set both profile fields (None clears one). Raises ``NotFound``; ``InvalidRequest`` for a
        display name that is blank or longer than 64 characters, or an avatar URL that is not http(s)."""
        ...

    # servers
    async def create_server(self, owner: str, name: str, *, discoverable: bool = False, now_ms: int) -> Server:
        """A new server with its ``@everyone`` role and ``owner`` as its only member."""
        ...

    async def get_server(self, server_id: str) -> Server | None: ...

    async def servers_of(self, user_id: str) -> list[Server]: ...

    async def discoverable_servers(self, *, after: str | None = None, limit: int = 50) -> list[Server]: ...

    async def rename_server(self, actor: str, server_id: str, name: str, *, now_ms: int) -> Server: ...

    async def set_discoverable(self, actor: str, server_id: str, discoverable: bool, *, now_ms: int) -> Server: ...

    async def delete_server(self, actor: str, server_id: str, *, now_ms: int) -> None:
        """Owner only: the server, its roles, channels, overwrites, invites, bans and audit log."""
        ...

    async def transfer_ownership(self, actor: str, server_id: str, new_owner: str, *, now_ms: int) -> Server: ...

    async def join_server(self, user_id: str, server_id: str, *, now_ms: int) -> bool:
        """Join a discoverable server (others: ``NotFound``); ``Banned`` when banned. True when new."""
        ...

    async def leave_server(self, user_id: str, server_id: str, *, now_ms: int) -> None:
        """Raises ``OwnerCannotLeave`` for the owner, ``NotFound`` for a non-member."""
        ...

    async def member(self, server_id: str, user_id: str) -> Member | None: ...

    async def server_members(self, server_id: str, *, after: str | None = None, limit: int = 100) -> MemberPage: ...

    async def channel_members(self, channel_id: str, *, after: str | None = None, limit: int = 100,
                              scan: int = 2000) -> ChannelMemberPage:
        """A page of a channel's members by user id (``after`` excluded): the explicit members of a direct
        or group channel, the server members who can see a server channel (of which one page looks at
        no more than ``scan``, at most 2000: the page may then be short). Every member is on exactly
        one page of a walk from ``after=None`` while membership does not change. A missing channel has
        no members. ``InvalidRequest`` for a ``limit`` outside 1-1000."""
        ...

    async def server_permissions(self, server_id: str, user_id: str) -> Permission:
        """Server-level permissions (NONE for a non-member)."""
        ...

    # roles
    async def roles(self, server_id: str) -> list[Role]:
        """Highest position first; ``@everyone`` last."""
        ...

    async def create_role(self, actor: str, server_id: str, name: str, perms: Permission, *,
                          position: int = 1, now_ms: int) -> Role: ...

    async def edit_role(self, actor: str, server_id: str, role_id: str, *, name: str | None = None,
                        perms: Permission | None = None, position: int | None = None, now_ms: int) -> Role: ...

    async def delete_role(self, actor: str, server_id: str, role_id: str, *, now_ms: int) -> None: ...

    async def add_member_role(self, actor: str, server_id: str, user_id: str, role_id: str, *, now_ms: int) -> bool: ...

    async def remove_member_role(self, actor: str, server_id: str, user_id: str, role_id: str, *,
                                 now_ms: int) -> bool: ...

    # server channels and overwrites
    async def create_server_channel(self, actor: str, server_id: str, name: str, *, private: bool = False,
                                    slow_mode_s: int = 0, now_ms: int) -> Channel:
        """A private channel is one whose ``@everyone`` overwrite denies ``view_channel``; its creator
        (unless an administrator) gets a member overwrite allowing it."""
        ...

    async def edit_server_channel(self, actor: str, channel_id: str, *, name: str | None = None,
                                  slow_mode_s: int | None = None, now_ms: int) -> Channel: ...

    async def delete_server_channel(self, actor: str, channel_id: str, *, now_ms: int) -> None: ...

    async def server_channels(self, server_id: str) -> list[Channel]: ...

    async def set_overwrite(self, actor: str, channel_id: str, target: OverwriteTarget, target_id: str, *,
                            allow: Permission, deny: Permission, now_ms: int) -> ChannelOverwrite | None:
        """Set (or, with both sets empty, remove) an overwrite; the overwrite after the call."""
        ...

    async def overwrites(self, channel_id: str) -> list[ChannelOverwrite]: ...

    # moderation
    async def kick(self, actor: str, server_id: str, user_id: str, *, now_ms: int) -> None: ...

    async def ban(self, actor: str, server_id: str, user_id: str, *, reason: str | None = None,
                  now_ms: int) -> None:
        """Remove the user (if a member) and refuse them every way back in until unbanned."""
        ...

    async def unban(self, actor: str, server_id: str, user_id: str, *, now_ms: int) -> bool: ...

    async def bans(self, server_id: str) -> list[Ban]: ...

    async def timeout(self, actor: str, server_id: str, user_id: str, until_ms: int | None, *, now_ms: int) -> None:
        """Time a member out until ``until_ms`` (None: lift the timeout)."""
        ...

    # invites
    async def create_invite(self, actor: str, server_id: str, *, channel_id: str | None = None,
                            max_uses: int | None = None, expires_ms: int | None = None, now_ms: int) -> Invite: ...

    async def get_invite(self, code: str) -> Invite | None: ...

    async def invites(self, server_id: str) -> list[Invite]: ...

    async def revoke_invite(self, actor: str, code: str, *, now_ms: int) -> Invite:
        """The invite's creator, or a member with ``manage_server``."""
        ...

    async def use_invite(self, user_id: str, code: str, *, now_ms: int) -> Server:
        """Join the invite's server, in one transaction with the checks: ``InviteRevoked``,
        ``InviteExpired``, ``InviteUsedUp``, ``Banned``. A member already in the server does not use
        up the invite."""
        ...

    # audit log
    async def audit_log(self, server_id: str, *, before: int | None = None, limit: int = 50) -> AuditPage: ...

    # enforcement
    async def channel_access(self, pairs: Collection[tuple[str, str]]) -> dict[tuple[str, str], ChannelAccess]:
        """For each ``(channel_id, user_id)``: effective permissions, the member's timeout and the
        channel's slow mode, in one round trip (the bridge decides a batch of sends with it). Direct
        and group members get :data:`mqchat.permissions.DIRECT_MEMBER`; strangers ``NONE``."""
        ...

    async def access_scope(self, user_id: str) -> AccessScope:
        """The channels ``user_id`` can view (as :meth:`channel_ids_of`) and the servers they are in,
        read together."""
        ...

    def add_listener(self, listener: Callable[[Sequence[Invalidation]], Awaitable[None]]) -> None:
        """Call ``listener`` with the :class:`~mqchat.invalidation.Invalidation` events of each committed
        change that can change access, before the write returns (docs/permissions.md)."""
        ...


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


@dataclass(frozen=True, slots=True)
class SlowModeClaim:
    """A send that must respect its channel's slow mode: the sender may send once per ``interval_ms``."""

    channel: str
    user: str
    cmid: str
    interval_ms: int


class SlowModeGate(Protocol):
    async def claim_slow_mode(self, claims: Sequence[SlowModeClaim], *, now_ms: int) -> list[int]:
        """Claim each sender's slot, atomically and in order: 0 when granted (the slot is then
        taken for ``interval_ms``), else the milliseconds until it frees. A claim with the cmid that
        holds the slot is granted again (a client's retry of the same send)."""
        ...


class FanoutQueue(Protocol):
    async def enqueue_fanout(self, messages: Sequence[StoredMessage], *, bodies: bool = True) -> None:
        """Queue one push fan-out job per new (durable, already published) message. The queue is
        durable and consumed at least once by the push workers. ``bodies=False`` (privacy mode):
        the jobs carry no message text."""
        ...


class MessageLogWriter(Protocol):
    async def append_messages(self, messages: Sequence[StoredMessage],
                              op: Literal["new", "edit", "delete"] = "new") -> None:
        """Append one "message changed" notice per message to the replayable message log
        (``mqchat.storage.message_log``), in order."""
        ...
