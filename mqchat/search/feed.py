"""Feeding an index from the message store: the live indexer's step and ``mqchat reindex``.

The one rule (docs/search.md, "Feeding the index"): a log event only says "message M changed";
what gets indexed is what the message store holds for M *now*. A message the store no longer has
(another epoch, or removed), or has as a tombstone, is deleted from the index. So an event applied
twice, late, or after a reindex wrote the same message, writes the current state again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from mqchat import fold
from mqchat.search.base import SearchDoc, SearchIndex
from mqchat.storage.base import Directory, MessageStore, StoredMessage

logger = logging.getLogger(__name__)

HISTORY_SPAN = 200
"""Most seqs one history read covers when fetching messages by position."""
FILE_KINDS = frozenset({"file"})
"""Message kinds that carry an attachment (``has=file``)."""


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Where a message is: its channel and seq, and its id to check the store still has that one."""

    id: int
    channel: str
    seq: int


def is_live(m: StoredMessage) -> bool:
    """Whether a stored message should be searchable: a message (not an event), its body not erased
    by a delete (deletion empties the body in the store; :func:`apply_changes` folds the events)."""
    return m.kind in MESSAGE_KINDS and bool(m.body)


async def fetch_messages(store: MessageStore, refs: Iterable[MessageRef]) -> dict[int, StoredMessage]:
    """The stored messages among ``refs``, by id: one history read per run of nearby seqs of a channel.

    A ref whose position holds another message (the channel's epoch changed) is absent.
    """
    by_channel: dict[str, set[int]] = defaultdict(set)
    wanted: dict[int, MessageRef] = {}
    for r in refs:
        by_channel[r.channel].add(r.seq)
        wanted[r.id] = r
    found: dict[int, StoredMessage] = {}
    for channel, seqs in by_channel.items():
        ordered = sorted(s for s in seqs if s >= 1)
        i = 0
        while i < len(ordered):
            first = ordered[i]
            j = i
            while j + 1 < len(ordered) and ordered[j + 1] - first < HISTORY_SPAN:
                j += 1
            page = await store.history(channel, after=first - 1, limit=ordered[j] - first + 1)
            for m in page.messages:
                ref = wanted.get(m.id)
                if ref is not None and ref.channel == m.channel and ref.seq == m.seq:
                    found[m.id] = m
            i = j + 1
    return found


class ServerOf:
    """The server each channel belongs to, from the directory, cached (a channel never changes server)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._cache: dict[str, str | None] = {}

    async def __call__(self, channel: str) -> str | None:
        if channel not in self._cache:
            found = await self._directory.get_channel(channel)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[channel] = found.server_id if found is not None else None
        return self._cache[channel]


def to_doc(m: StoredMessage, server: str | None) -> SearchDoc:
    return SearchDoc(id=m.id, channel=m.channel, sender=m.sender, ts=m.ts, seq=m.seq, body=m.body, server=server,
                     has_file=m.kind in FILE_KINDS)


async def index_messages(index: SearchIndex, messages: Sequence[StoredMessage],
                         server_of: Callable[[str], Awaitable[str | None]]) -> tuple[int, int]:
    """Index the live ``messages`` and delete the tombstones; returns ``(indexed, deleted)``."""
    live = [m for m in messages if is_live(m)]
    gone = [m.id for m in messages if not is_live(m)]
    docs = [to_doc(m, await server_of(m.channel)) for m in live]
    if docs:
        await index.index(docs)
    if gone:
        await index.delete(gone)
    return len(docs), len(gone)


#: Kinds that are messages (searchable); every other kind is an event that changes a message.
MESSAGE_KINDS = frozenset({"text"}) | FILE_KINDS
#: Events that change what a message's searchable text is.
TEXT_EVENTS = frozenset({"edit", "delete"})


async def apply_changes(index: SearchIndex, store: MessageStore, refs: Collection[MessageRef],
                        server_of: Callable[[str], Awaitable[str | None]]) -> tuple[int, int]:
    """Bring the index in line with the store for these changed messages; returns ``(indexed, deleted)``.

    A ref may name a message (new) or an event: an ``edit`` or ``delete`` stands for its target,
    whose current text is the fold of its events (:mod:`mqchat.fold`); other events (reactions,
    pins) change nothing searchable. Events themselves are never indexed.
    """
    found = await fetch_messages(store, refs)
    affected: dict[str, set[int]] = defaultdict(set)
    for m in found.values():
        if m.kind in MESSAGE_KINDS:
            affected[m.channel].add(m.seq)
        elif m.kind in TEXT_EVENTS and m.target is not None:
            affected[m.channel].add(m.target)
    current: list[StoredMessage] = []
    gone: list[int] = [r.id for r in refs if r.id not in found]
    if affected:
        related = await store.related({c: sorted(seqs) for c, seqs in affected.items()})
        for channel, events in related.items():
            state = fold.fold(events)
            for m in events:
                if m.seq not in affected[channel] or m.kind not in MESSAGE_KINDS:
                    continue
                folded = state.messages.get(m.seq)
                if folded is None or folded.deleted:
                    gone.append(m.id)
                else:
                    current.append(dataclasses.replace(m, body=folded.body))
    indexed, deleted = await index_messages(index, current, server_of)
    if gone:
        await index.delete(gone)
    return indexed, deleted + len(gone)


async def reindex_channel(index: SearchIndex, store: MessageStore, channel: str,
                          server_of: Callable[[str], Awaitable[str | None]], *, batch: int = 500,
                          progress: Callable[[int], None] | None = None) -> int:
    """Index every message of ``channel``'s current epoch, oldest first; returns how many were read.

    Safe beside the live indexer: both write what the store holds. Documents of messages the store
    no longer has are left alone here (:func:`mqchat.search.reindex.reindex` sweeps them).
    """
    after = 0
    read = 0
    while True:
        page = await store.history(channel, after=after, limit=batch)
        if not page.messages:
            break
        refs = [MessageRef(m.id, m.channel, m.seq) for m in page.messages if m.kind in MESSAGE_KINDS]
        await apply_changes(index, store, refs, server_of)  # each message as its events leave it
        read += len(page.messages)
        if progress is not None:
            progress(len(page.messages))
        after = page.messages[-1].seq
        if not page.has_more:
            break
    return read
