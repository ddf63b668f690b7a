"""The search indexer: the message log → the search index, in batches.

::

    messages:log ──XREADGROUP (group search-indexer) / XAUTOCLAIM──▶ batch of "message M changed"
        store.history for the batch's positions (what the store holds now)
        index.index(live messages) · index.delete(gone or tombstoned ids)
        XACK the batch

Entries are acknowledged only after the index committed them, so a crash re-delivers them (to this
consumer after a restart under the same name, or to another one by XAUTOCLAIM); applying them
again writes the store's current state again (docs/search.md, "Feeding the index").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from mqchat.search.base import SearchIndex
from mqchat.search.feed import MessageRef, ServerOf, apply_changes
from mqchat.storage.base import Directory, MessageStore
from mqchat.storage.message_log import MessageEvent, MessageLog
from workers.push.sender import keep_claimed

logger = logging.getLogger(__name__)

INDEXED = Counter("mqchat_search_indexed_total", "Messages written to the search index by the indexer.")
DELETED = Counter("mqchat_search_deleted_total", "Messages removed from the search index by the indexer.")
BATCHES = Counter("mqchat_search_batches_total", "Log batches the indexer committed.")
LAG = Gauge("mqchat_search_log_lag", "Entries of the message log not yet delivered to the search indexer.")
AGE = Gauge("mqchat_search_last_entry_age_seconds",
            "How old the last indexed log entry was when its batch committed (end-to-end indexing delay).")


class Indexer:
    """Consumes ``messages:log`` with its consumer group and keeps ``index`` in line with ``store``.

    Args:
        log: the message log, for the ``search-indexer`` group.
        index: the search index.
        store: the message store (the source of truth for every message's current text).
        directory: the server of each channel.
        consumer: this indexer's consumer name (fixed per process role: a restarted indexer re-reads
            what it left unacknowledged).
        batch: entries per read.
        claim_idle_ms: entries of a dead consumer are taken over after this long.
        block_ms: how long one read waits for new entries.
    """

    def __init__(self, log: MessageLog, index: SearchIndex, store: MessageStore, directory: Directory,
                 consumer: str, *, batch: int = 500, claim_idle_ms: int = 30_000, block_ms: int = 1000) -> None:
        self._log = log
        self._index = index
        self._store = store
        self._server_of = ServerOf(directory)
        self._consumer = consumer
        self._batch = batch
        self._claim_idle_ms = claim_idle_ms
        self._block_ms = block_ms

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until ``stop`` is set: take over entries of dead consumers, else read new ones; index; ack."""
        await self._log.ensure_group()
        last_claim = -1e18
        last_lag = -1e18
        while stop is None or not stop.is_set():
            entries: list[tuple[str, dict[str, str]]] = []
            if time.monotonic() - last_claim >= self._claim_idle_ms / 2000:
                last_claim = time.monotonic()
                entries = await self._log.claim(self._consumer, min_idle_ms=self._claim_idle_ms, count=self._batch)
                if entries:
                    logger.info("took over %d message log entries from a stopped indexer", len(entries))
            if not entries:
                entries = await self._log.read(self._consumer, count=self._batch, block_ms=self._block_ms)
            if entries:
                async with keep_claimed(lambda i: self._log.touch(self._consumer, i), [e for e, _ in entries],
                                        self._claim_idle_ms / 3000):
                    await self.apply(entries)
            if time.monotonic() - last_lag >= 1.0:
                last_lag = time.monotonic()
                LAG.set(await self._log.lag())

    async def apply(self, entries: Sequence[tuple[str, dict[str, str]]]) -> tuple[int, int]:
        """Index one batch of log entries and acknowledge them; returns ``(indexed, deleted)``."""
        refs: dict[int, MessageRef] = {}
        for _entry_id, fields in entries:
            event = MessageEvent.from_fields(fields)
            if event is None:
                logger.warning("skipping an unreadable message log entry: %r", fields)
                continue
            refs[event.id] = MessageRef(event.id, event.channel, event.seq)
        indexed = deleted = 0
        if refs:
            indexed, deleted = await apply_changes(self._index, self._store, list(refs.values()), self._server_of)
        await self._log.ack([e for e, _ in entries])
        INDEXED.inc(indexed)
        DELETED.inc(deleted)
        BATCHES.inc()
        if entries:
            ms = int(entries[-1][0].split("-", 1)[0])
            AGE.set(max(0.0, time.time() - ms / 1000))
        return indexed, deleted
