"""Message state as a fold of the channel's event stream. Pure: no I/O, no clock.

Every change to a message (edit, delete, reaction, pin) is an event in the channel's total order
(docs/protocol.md, *Rich messages*). The state of every message is ``fold(events in seq order)``;
the server (history, threads, pins), the bridge (validating a batch against the state it would
change) and clients (mobile_sim's devices) all use this one module, so they agree by
construction.

The rules, for one event ``e`` applied to the states ``S`` (a mapping seq → :class:`MessageState`):

* ``text`` (any content kind): ``S[e.seq]`` = a new message with ``e.body``. If ``e.thread`` names
  a message in ``S``, that root's ``reply_count`` += 1 and ``last_reply_ts`` = ``e.ts``.
* ``edit``: if ``S[e.target]`` exists and is not deleted: its ``body`` = ``e.body``,
  ``edited_ts`` = ``e.ts``.
* ``delete``: if ``S[e.target]`` exists and is not deleted: ``deleted`` = true, ``body`` = "",
  reactions cleared, ``pinned`` = false. A deleted reply still counts in its root's
  ``reply_count`` (the thread keeps its tombstone).
* ``reaction``: if ``S[e.target]`` exists and is not deleted: ``add`` puts ``e.sender`` in the set
  of users of ``e.emoji`` (a new emoji only while the message has fewer than
  :data:`~mqchat.schema.MAX_REACTION_EMOJI`); ``remove`` takes the user out, and an emoji with no
  user left disappears. Idempotent per (user, message, emoji): a second ``add`` changes nothing.
* ``pin`` / ``unpin``: if ``S[e.target]`` exists and is not deleted: ``pinned`` = true / false.
* anything else, or a target not in ``S``: no change.

The fold trusts authorization to the bridge (only the bridge publishes on ``ch/``, and it stores
only events that :func:`refusal` accepts): it does not re-check who may edit or delete, which is
what lets permissions (``manage_messages``) change without changing the fold. It does check what
the stream itself decides (a target that exists, is not deleted), so it is total: any sequence of
events folds.

Because a message's state depends only on its own event, the events whose ``target`` is it, and
the replies whose ``thread`` is it, folding just those rows (what ``MessageStore.related`` returns)
gives the same state as folding the whole channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from mqchat.schema import MAX_REACTION_EMOJI, TARGETED_KINDS, MessageStateOut, ReactionOut


class Event(Protocol):
    """What the fold reads of an event: a stored message and a stream payload both fit."""

    @property
    def seq(self) -> int: ...
    @property
    def sender(self) -> str: ...
    @property
    def ts(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def target(self) -> int | None: ...
    @property
    def emoji(self) -> str | None: ...
    @property
    def op(self) -> str | None: ...
    @property
    def thread(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class MessageState:
    seq: int
    sender: str
    kind: str
    ts: int
    body: str
    thread: int | None = None
    edited_ts: int | None = None
    deleted: bool = False
    pinned: bool = False
    reactions: tuple[tuple[str, frozenset[str]], ...] = ()
    """``(emoji, users)`` in order of each emoji's first reaction; no empty set."""
    reply_count: int = 0
    last_reply_ts: int | None = None

    def reacted(self, emoji: str) -> frozenset[str]:
        return next((users for e, users in self.reactions if e == emoji), frozenset())

    def out(self, me: str) -> MessageStateOut:
        """The state as history returns it to ``me``."""
        return MessageStateOut(
            body=self.body, edited_ts=self.edited_ts, deleted=self.deleted, pinned=self.pinned,
            reactions=[ReactionOut(emoji=e, count=len(users), me=me in users) for e, users in self.reactions],
            reply_count=self.reply_count, last_reply_ts=self.last_reply_ts,
        )


@dataclass(frozen=True, slots=True)
class ChannelState:
    """The folded states of one channel's messages (by seq), and the last seq folded."""

    messages: Mapping[int, MessageState] = field(default_factory=dict)
    last_seq: int = 0

    def pinned(self) -> list[int]:
        return sorted(seq for seq, m in self.messages.items() if m.pinned)


def _react(m: MessageState, user: str, emoji: str, op: str | None) -> MessageState:
    users = m.reacted(emoji)
    if op == "add":
        if user in users or (not users and len(m.reactions) >= MAX_REACTION_EMOJI):
            return m
        if users:
            reactions = tuple((e, u | {user}) if e == emoji else (e, u) for e, u in m.reactions)
        else:
            reactions = (*m.reactions, (emoji, frozenset({user})))
    elif op == "remove" and user in users:
        left = ((e, u - {user} if e == emoji else u) for e, u in m.reactions)
        reactions = tuple((e, u) for e, u in left if u)
    else:
        return m
    return replace(m, reactions=reactions)


def apply(state: ChannelState, e: Event) -> ChannelState:
    """The state after one event (``state`` is not changed: the touched message is copied)."""
    msgs = state.messages
    changed: dict[int, MessageState] = {}
    if e.kind in TARGETED_KINDS:
        t = msgs.get(e.target) if e.target is not None else None
        if t is not None and not t.deleted:
            if e.kind == "edit":
                changed[t.seq] = replace(t, body=e.body, edited_ts=e.ts)
            elif e.kind == "delete":
                changed[t.seq] = replace(t, deleted=True, body="", reactions=(), pinned=False)
            elif e.kind == "reaction" and e.emoji is not None:
                changed[t.seq] = _react(t, e.sender, e.emoji, e.op)
            elif e.kind in ("pin", "unpin"):
                changed[t.seq] = replace(t, pinned=e.kind == "pin")
    else:
        changed[e.seq] = MessageState(seq=e.seq, sender=e.sender, kind=e.kind, ts=e.ts, body=e.body,
                                      thread=e.thread)
        root = msgs.get(e.thread) if e.thread is not None else None
        if root is not None:
            changed[root.seq] = replace(root, reply_count=root.reply_count + 1, last_reply_ts=e.ts)
    if not changed:
        return replace(state, last_seq=max(state.last_seq, e.seq))
    return ChannelState({**msgs, **changed}, max(state.last_seq, e.seq))


def fold(events: Iterable[Event], state: ChannelState | None = None) -> ChannelState:
    """Fold ``events`` (ascending seq) onto ``state`` (empty by default).

    ``fold(rest, fold(prefix)) == fold(prefix + rest)``: a device that folded up to seq N and
    receives the rest ends where one that folds everything at once does.
    """
    current = state if state is not None else ChannelState()
    for e in events:
        current = apply(current, e)
    return current


# --- validation (the bridge) -----------------------------------------------------------------------

NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
TARGET_DELETED = "target_deleted"
TOO_MANY_REACTIONS = "too_many_reactions"
INVALID_THREAD = "invalid_thread"


def may_delete(actor: str, author: str, *, manage_messages: bool = False) -> bool:
    """Whether ``actor`` may delete a message of ``author``: their own always; anyone's with the
    ``manage_messages`` permission (passed in by the caller once servers and roles exist)."""
    return actor == author or manage_messages


def may_edit(actor: str, author: str) -> bool:
    """Only the author edits a message (no permission lets anyone put words in another's mouth)."""
    return actor == author


def refusal(state: ChannelState, e: Event, *, manage_messages: bool = False) -> tuple[str, str] | None:
    """Why the bridge refuses event ``e`` given the channel's current ``state`` (which must hold
    every message ``e`` names), as ``(code, message)``; ``None`` when it is accepted."""
    msgs = state.messages
    for name in ("reply_to", "thread"):
        ref: int | None = getattr(e, name, None)
        if ref is None:
            continue
        root = msgs.get(ref)
        if root is None:
            return NOT_FOUND, f"{name} {ref}: no such message in this channel"
        if root.deleted:
            return TARGET_DELETED, f"{name} {ref} was deleted"
        if name == "thread" and root.thread is not None:
            return INVALID_THREAD, f"message {ref} is itself a thread reply; reply under its root {root.thread}"
    if e.kind not in TARGETED_KINDS:
        return None
    t = msgs.get(e.target) if e.target is not None else None
    if t is None:
        return NOT_FOUND, f"target {e.target}: no such message in this channel"
    if t.deleted:
        return TARGET_DELETED, f"message {t.seq} was deleted"
    if e.kind == "edit" and not may_edit(e.sender, t.sender):
        return FORBIDDEN, "you can only edit your own messages"
    if e.kind == "delete" and not may_delete(e.sender, t.sender, manage_messages=manage_messages):
        return FORBIDDEN, "you can only delete your own messages"
    if (e.kind == "reaction" and e.op == "add" and e.emoji is not None and not t.reacted(e.emoji)
            and len(t.reactions) >= MAX_REACTION_EMOJI):
        return TOO_MANY_REACTIONS, f"a message can carry at most {MAX_REACTION_EMOJI} distinct emoji"
    return None
