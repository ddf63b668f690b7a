"""The message log, the indexer and reindex, on a real Redis, a real SQLite message store and index.

The message store here is changed directly (an UPDATE, a DELETE of a row), as edits and deletes
will change it: the indexer only ever reads what the store holds now.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqchat.search import SearchIndex, parse
from mqchat.search.reindex import reindex
from mqchat.search.sqlite import SqliteSearchIndex
from mqchat.storage.base import StoredMessage
from mqchat.storage.keys import MESSAGE_LOG_MAXLEN
from mqchat.storage.memory import MemoryDirectory
from mqchat.storage.message_log import MessageEvent, MessageLog
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.sqlite import SqliteMessageStore
from tests.conftest import RedisServer
from tests.waiting import wait_for
from workers.search import Indexer

CHANNELS: list[str] = []
"""The two channels of the current test: ``CHANNELS[0]`` (most messages) and ``CHANNELS[1]``."""


def message(seq: int, body: str, channel: int = 0, kind: str = "text") -> StoredMessage:
    return StoredMessage(id=100_000 * channel + seq, channel=CHANNELS[channel], seq=seq, epoch=1,
                         sender="alice", device="phone", cmid=f"m{seq}", ts=1_000 + seq, kind=kind,
                         body=body)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_server.url, "t:")
    yield client
    await client.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteMessageStore]:
    opened = await SqliteMessageStore(tmp_path / "messages.db").open()
    yield opened
    await opened.close()


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[SearchIndex]:
    opened = await SqliteSearchIndex.open(str(tmp_path / "search.db"))
    yield opened
    await opened.close()


@pytest.fixture
async def directory() -> MemoryDirectory:
    d = MemoryDirectory()
    CHANNELS[:] = [(await d.create_channel("group", name, "alice", [], now_ms=0))[0].channel_id
                   for name in ("team", "other")]
    return d


async def found(index: SearchIndex, text: str) -> list[int]:
    page = await index.search(parse(text), visible_channels=CHANNELS, limit=100)
    return [h.id for h in page.hits]


async def has(index: SearchIndex, text: str) -> bool:
    return bool(await found(index, text))


async def drain(indexer: Indexer, log: MessageLog, consumer: str = "i1") -> None:
    """Index everything the group has not seen yet (one read per call)."""
    while entries := await log.read(consumer, count=100, block_ms=10):
        await indexer.apply(entries)


async def test_new_edited_and_deleted_messages_follow_the_store(
        redis: RedisClient, store: SqliteMessageStore, index: SearchIndex, directory: MemoryDirectory,
        tmp_path: Path) -> None:
    log = MessageLog(redis)
    await log.ensure_group()
    indexer = Indexer(log, index, store, directory, "i1")
    msgs = [message(1, "deploy on friday"), message(2, "lunch at noon"), message(3, "file here", kind="file")]
    await store.append(msgs)
    await log.append_messages(msgs)
    await drain(indexer, log)
    assert await found(index, "deploy") == [msgs[0].id]
    assert await index.count() == 3

    # an edit: the store holds new text; the notice says only "message 1 changed"
    with sqlite3.connect(tmp_path / "messages.db") as db:
        db.execute("UPDATE messages SET body='deploy on monday' WHERE seq=1")
    await log.append([MessageEvent.of(msgs[0], "edit")])
    await drain(indexer, log)
    assert await found(index, "monday") == [msgs[0].id]
    assert await found(index, "friday") == []

    # a delete: the store no longer has message 2
    with sqlite3.connect(tmp_path / "messages.db") as db:
        db.execute("DELETE FROM messages WHERE seq=2")
    await log.append([MessageEvent.of(msgs[1], "delete")])
    await drain(indexer, log)
    assert await found(index, "lunch") == []
    assert await index.count() == 2

    # a stale notice replayed late (the edit again) writes the current state again
    await log.append([MessageEvent.of(msgs[0], "new"), MessageEvent.of(msgs[1], "new")])
    await drain(indexer, log)
    assert await found(index, "monday") == [msgs[0].id]
    assert await found(index, "lunch") == []
    assert (await log.lag()) == 0


async def test_unreadable_entries_are_skipped_and_acknowledged(
        redis: RedisClient, store: SqliteMessageStore, index: SearchIndex, directory: MemoryDirectory) -> None:
    log = MessageLog(redis)
    await log.ensure_group()
    await redis.driver.xadd(redis.keys.message_log, {"op": "explode", "id": "x"})
    indexer = Indexer(log, index, store, directory, "i1")
    await drain(indexer, log)
    assert await redis.driver.xpending(redis.keys.message_log, log.group) == {
        "pending": 0, "min": None, "max": None, "consumers": []}


async def test_a_dead_indexers_entries_are_claimed_and_indexed(
        redis: RedisClient, store: SqliteMessageStore, index: SearchIndex, directory: MemoryDirectory) -> None:
    log = MessageLog(redis)
    await log.ensure_group()
    m = message(1, "orphaned words")
    await store.append([m])
    await log.append_messages([m])
    assert len(await log.read("dead", count=10, block_ms=10)) == 1  # read, never acknowledged
    survivor = Indexer(log, index, store, directory, "alive", claim_idle_ms=100, block_ms=20)
    stop = asyncio.Event()
    task = asyncio.create_task(survivor.run(stop))
    try:
        await wait_for(lambda: has(index, "orphaned"), 10, what="the claimed entry indexed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await found(index, "orphaned") == [m.id]
    pending = await redis.driver.xpending(redis.keys.message_log, log.group)
    assert pending["pending"] == 0


async def test_the_log_is_bounded(redis: RedisClient, directory: MemoryDirectory) -> None:
    log = MessageLog(redis)
    await log.append_messages([message(i, "x") for i in range(1, 4)])
    assert await log.length() == 3
    info = await redis.driver.xinfo_stream(redis.keys.message_log)
    assert info["length"] == 3
    assert MESSAGE_LOG_MAXLEN == 1_000_000  # documented in keys.py and docs/search.md


async def test_reindex_rebuilds_an_equal_index_and_catches_up_with_the_log(
        redis: RedisClient, store: SqliteMessageStore, index: SearchIndex, directory: MemoryDirectory,
        tmp_path: Path) -> None:
    log = MessageLog(redis)
    await log.ensure_group()
    live = Indexer(log, index, store, directory, "i1")
    msgs = [message(i, f"word{i} common") for i in range(1, 301)] + [message(1, "elsewhere", channel=1)]
    await store.append(msgs)
    await log.append_messages(msgs)
    await drain(live, log)
    # a document the store no longer has (its delete notice was lost): a full rebuild drops it
    with sqlite3.connect(tmp_path / "messages.db") as db:
        db.execute("DELETE FROM messages WHERE channel_id=? AND seq=7", [CHANNELS[0]])
    await live.apply([("1-0", MessageEvent.of(msgs[6]).fields())])
    rebuilt = await SqliteSearchIndex.open(str(tmp_path / "rebuilt.db"))
    totals: list[int] = []
    progress: list[int] = []
    try:
        report = await reindex(rebuilt, store, directory, log, batch=64, on_total=totals.append,
                               on_progress=progress.append)
        assert report.channels == 2
        assert report.messages == 300
        assert totals == [301]
        assert sum(progress) == 300
        assert await rebuilt.list_docs(limit=1000) == await index.list_docs(limit=1000)
        assert await rebuilt.count() == 300

        # one channel into the live index: a no-op on an index already equal
        one = await reindex(index, store, directory, log, channel=CHANNELS[1])
        assert one.messages == 1
        assert await rebuilt.list_docs(limit=1000) == await index.list_docs(limit=1000)
    finally:
        await rebuilt.close()


async def test_reindex_sweeps_documents_the_store_no_longer_has(
        store: SqliteMessageStore, index: SearchIndex, directory: MemoryDirectory, tmp_path: Path) -> None:
    msgs = [message(i, f"text{i}") for i in range(1, 4)]
    await store.append(msgs)
    await reindex(index, store, directory, None)
    with sqlite3.connect(tmp_path / "messages.db") as db:
        db.execute("DELETE FROM messages WHERE seq=2")
    report = await reindex(index, store, directory, None)
    assert report.swept == 1
    assert await found(index, "text2") == []
    assert await index.count() == 2


def test_reindex_command_refuses_a_bad_channel_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mqchat.cli import main

    assert main(["reindex", "--channel", "../etc", "--data-dir", str(tmp_path)]) == 2
    assert "not a channel id" in capsys.readouterr().err


def test_reindex_command_rebuilds_an_embedded_index(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mqchat.cli import main

    monkeypatch.delenv("MQCHAT_REDIS__URL", raising=False)
    assert main(["reindex", "--data-dir", str(tmp_path)]) == 0
    assert "reindexed 0 messages of 0 channel(s)" in capsys.readouterr().err
    assert (tmp_path / "search.db").exists()
