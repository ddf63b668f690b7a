"""``mqchat reindex``: rebuild a search index from the message store (docs/search.md, "Reindex").

::

    mark = the message log's newest entry id
    for each channel (all, or one): index its messages of the current epoch, oldest first, in batches
    full rebuild only: sweep the index, deleting documents the store no longer has
    replay the log after ``mark``: every message changed while we were reading is written again
        from the store (so an edit the live indexer applied before we wrote our older copy wins)

It is safe while the live indexer runs: both write what the store holds, and the replay closes the
window in which this job could have written a copy older than the live indexer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mqchat.search.base import SearchIndex
from mqchat.search.feed import MessageRef, ServerOf, apply_changes, fetch_messages, is_live, reindex_channel
from mqchat.storage.base import MessageStore, ServerDirectory
from mqchat.storage.message_log import MessageEvent, MessageLog

CHANNEL_PAGE = 1000


@dataclass(slots=True)
class ReindexReport:
    channels: int = 0
    messages: int = 0
    swept: int = 0
    """Documents deleted because the store no longer has their message (full rebuild only)."""
    replayed: int = 0
    """Log entries written again after the rebuild."""


async def all_channels(directory: ServerDirectory) -> list[str]:
    out: list[str] = []
    after = ""
    while True:
        page = await directory.all_channel_ids(after=after, limit=CHANNEL_PAGE)
        out += page
        if len(page) < CHANNEL_PAGE:
            return out
        after = page[-1]


async def reindex(index: SearchIndex, store: MessageStore, directory: ServerDirectory, log: MessageLog | None, *,
                  channel: str | None = None, batch: int = 500,
                  on_total: Callable[[int], None] | None = None,
                  on_progress: Callable[[int], None] | None = None) -> ReindexReport:
    """Rebuild ``index`` from ``store`` for every channel, or for ``channel`` only.

    Args:
        log: the message log to replay afterwards (``None``: no live changes to catch up on).
        on_total: told the number of messages to read (the channels' last seqs), once.
        on_progress: told each batch's size as it is indexed.
    """
    report = ReindexReport()
    mark = await log.last_id() if log is not None else None
    channels = [channel] if channel is not None else await all_channels(directory)
    positions = await store.positions(channels)
    if on_total is not None:
        on_total(sum(p.last_seq for p in positions.values()))
    server_of = ServerOf(directory)
    for c in channels:
        report.messages += await reindex_channel(index, store, c, server_of, batch=batch, progress=on_progress)
        report.channels += 1
    if channel is None:
        after = -1
        while True:
            docs = await index.list_docs(after_id=after, limit=batch)
            if not docs:
                break
            found = await fetch_messages(store, [MessageRef(d.id, d.channel, d.seq) for d in docs])
            gone = [d.id for d in docs if d.id not in found or not is_live(found[d.id])]
            if gone:
                await index.delete(gone)
            report.swept += len(gone)
            after = docs[-1].id
    if log is not None and mark is not None:
        while True:
            entries = await log.entries_after(mark, count=batch)
            if not entries:
                break
            refs = []
            for _entry_id, fields in entries:
                event = MessageEvent.from_fields(fields)
                if event is not None and (channel is None or event.channel == channel):
                    refs.append(MessageRef(event.id, event.channel, event.seq))
            if refs:
                await apply_changes(index, store, refs, server_of)
            report.replayed += len(refs)
            mark = entries[-1][0]
    return report
