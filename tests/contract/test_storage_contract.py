"""One contract suite over every storage backend: memory, SQLite, PostgreSQL (directory) and Cassandra.

Cassandra runs twice: through the real cassandra-driver against the CQL stand-in
(tests/cassandra_standin, always), and against a real node when ``CASSANDRA_HOSTS`` is set
(otherwise skipped, saying so). The stand-in proves our driver path, statements and algorithms;
it does not prove real Cassandra's consistency, Paxos under contention, compaction or multi-node
behaviour — the real-node variant and deploy/cassandra/ci-workflow.yml are for that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from mqchat import fold
from mqchat.errors import Conflict
from mqchat.storage.base import EMPTY_POSITION, Directory, MessageStore, Position, StoredMessage
from mqchat.storage.cassandra import CassandraDirectory, CassandraMessageStore
from mqchat.storage.memory import MemoryMessageStore
from mqchat.storage.sqlite import SqliteMessageStore
from tests.cassandra_standin.harness import NO_REAL_NODE, TEST_BUCKET_SIZE, cassandra_target, real_hosts
from tests.contract.conftest import SERVER_DIRECTORIES, open_server_directory

Reopen = Callable[[], Awaitable[MessageStore]]

BACKENDS = [
    "memory",
    "sqlite",
    "cassandra-standin",
    pytest.param("cassandra", marks=pytest.mark.skipif(real_hosts() is None, reason=NO_REAL_NODE)),
]


def _cassandra_kind(param: str) -> Literal["standin", "real"]:
    return "standin" if param == "cassandra-standin" else "real"


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[MessageStore, Reopen]]:
    if request.param == "memory":
        store = MemoryMessageStore()

        async def same() -> MessageStore:
            return store

        yield store, same
        return
    if request.param.startswith("cassandra"):
        async with cassandra_target(_cassandra_kind(request.param)) as target:

            def make() -> CassandraMessageStore:
                return CassandraMessageStore(target.settings, tuning=target.tuning, bucket_size=TEST_BUCKET_SIZE)

            stores = [await make().open()]

            async def reopen_cassandra() -> MessageStore:
                await stores[-1].close()
                stores.append(await make().open())
                return stores[-1]

            try:
                yield stores[0], reopen_cassandra
            finally:
                await stores[-1].close()
        return
    opened: list[SqliteMessageStore] = [await SqliteMessageStore(tmp_path / "m.db").open()]

    async def reopen() -> MessageStore:
        await opened[-1].close()
        opened.append(await SqliteMessageStore(tmp_path / "m.db").open())
        return opened[-1]

    yield opened[0], reopen
    await opened[-1].close()


@pytest.fixture(params=[*SERVER_DIRECTORIES, *BACKENDS[2:]])
async def directory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Directory]:
    """Every directory: memory, SQLite, PostgreSQL, and the retired Cassandra directory (still at
    parity for direct and group channels until it is removed; docs/storage-cassandra.md)."""
    if request.param.startswith("cassandra"):
        async with cassandra_target(_cassandra_kind(request.param)) as target:
            cd = await CassandraDirectory(target.settings, tuning=target.tuning).open()
            try:
                yield cd
            finally:
                await cd.close()
        return
    d = await open_server_directory(request.param, request, tmp_path)
    yield d
    await d.close()


def msg(channel: str, seq: int, *, epoch: int = 1, sender: str = "u1", cmid: str | None = None) -> StoredMessage:
    return StoredMessage(id=1000 + seq, channel=channel, seq=seq, epoch=epoch, sender=sender, device="d1",
                         cmid=cmid or f"{channel}-{seq}", ts=1_700_000_000_000 + seq, kind="text", body=f"b{seq}")


async def test_new_channel_starts_empty(backend: tuple[MessageStore, Reopen]) -> None:
    store, _ = backend
    assert await store.positions(["c1"]) == {"c1": EMPTY_POSITION}
    page = await store.history("c1")
    assert (page.messages, page.epoch, page.last_seq, page.has_more) == ([], 1, 0, False)


async def test_append_advances_positions_and_round_trips(backend: tuple[MessageStore, Reopen]) -> None:
    store, _ = backend
    batch = [msg("c1", 1), msg("c2", 1), msg("c1", 2)]
    await store.append(batch)
    assert await store.positions(["c1", "c2", "c3"]) == {
        "c1": Position(1, 2), "c2": Position(1, 1), "c3": EMPTY_POSITION}
    assert (await store.history("c1")).messages == [batch[0], batch[2]]


@pytest.mark.parametrize("bad", [
    [msg("c1", 2)],  # gap
    [msg("c1", 1), msg("c1", 1, cmid="other")],  # repeated seq
    [msg("c1", 1), msg("c1", 3)],  # gap inside the batch
    [msg("c1", 1), msg("c1", 2, cmid="c1-1")],  # repeated cmid
])
async def test_append_refuses_what_breaks_the_order_and_stores_nothing(
    backend: tuple[MessageStore, Reopen], bad: list[StoredMessage]
) -> None:
    store, _ = backend
    with pytest.raises(Conflict):
        await store.append(bad)
    assert await store.positions(["c1"]) == {"c1": EMPTY_POSITION}
    assert (await store.history("c1")).messages == []


async def test_cmid_already_stored_is_refused(backend: tuple[MessageStore, Reopen]) -> None:
    store, _ = backend
    await store.append([msg("c1", 1, cmid="x")])
    with pytest.raises(Conflict):
        await store.append([msg("c1", 2, cmid="x")])
    found = await store.find_cmids([("c1", "u1", "x"), ("c1", "u2", "x"), ("c2", "u1", "x")])
    assert list(found) == [("c1", "u1", "x")]
    assert found[("c1", "u1", "x")].seq == 1


async def test_history_paging(backend: tuple[MessageStore, Reopen]) -> None:
    store, _ = backend
    await store.append([msg("c1", s) for s in range(1, 101)])

    latest = await store.history("c1", limit=10)
    assert [m.seq for m in latest.messages] == list(range(91, 101))
    assert latest.has_more
    older = await store.history("c1", before=91, limit=10)
    assert [m.seq for m in older.messages] == list(range(81, 91))
    first = await store.history("c1", before=4, limit=10)
    assert ([m.seq for m in first.messages], first.has_more) == ([1, 2, 3], False)
    newer = await store.history("c1", after=95, limit=3)
    assert ([m.seq for m in newer.messages], newer.has_more) == ([96, 97, 98], True)
    tail = await store.history("c1", after=98, limit=3)
    assert ([m.seq for m in tail.messages], tail.has_more) == ([99, 100], False)
    between = await store.history("c1", after=10, before=14, limit=50)
    assert [m.seq for m in between.messages] == [11, 12, 13]
    assert (latest.epoch, latest.last_seq) == (1, 100)


async def test_paging_walks_the_whole_history_both_ways(backend: tuple[MessageStore, Reopen]) -> None:
    """Batches that straddle partition boundaries (Cassandra: every 8 seqs here) read back exactly."""
    store, _ = backend
    for start in range(1, 61, 12):
        await store.append([msg("c1", s) for s in range(start, start + 12)])
    assert await store.positions(["c1"]) == {"c1": Position(1, 60)}

    newest_first: list[int] = []
    before: int | None = None
    for _ in range(20):  # bounded: 60 messages in pages of 7
        page = await store.history("c1", before=before, limit=7)
        newest_first = [m.seq for m in page.messages] + newest_first
        if not page.has_more:
            break
        before = page.messages[0].seq
    assert newest_first == list(range(1, 61))

    oldest_first: list[int] = []
    after = 0
    for _ in range(20):
        page = await store.history("c1", after=after, limit=9)
        oldest_first += [m.seq for m in page.messages]
        if not page.has_more:
            break
        after = page.messages[-1].seq
    assert oldest_first == list(range(1, 61))
    assert [m.body for m in (await store.history("c1", after=15, before=18)).messages] == ["b16", "b17"]


async def test_a_retried_batch_that_landed_is_not_stored_twice_and_a_foreign_one_conflicts(
    backend: tuple[MessageStore, Reopen],
) -> None:
    """The position moved past the batch: a different batch for those seqs is refused."""
    store, _ = backend
    await store.append([msg("c1", 1), msg("c1", 2)])
    impostor = [msg("c1", 2, cmid="other")]
    with pytest.raises(Conflict):
        await store.append(impostor)
    assert [m.cmid for m in (await store.history("c1")).messages] == ["c1-1", "c1-2"]
    assert await store.find_cmids([("c1", "u1", "other")]) == {}


async def test_a_new_epoch_restarts_seq_and_hides_the_old_one(backend: tuple[MessageStore, Reopen]) -> None:
    store, _ = backend
    await store.append([msg("c1", 1), msg("c1", 2)])
    await store.append([msg("c1", 1, epoch=2, cmid="e2-1")])
    assert await store.positions(["c1"]) == {"c1": Position(2, 1)}
    page = await store.history("c1")
    assert [(m.epoch, m.seq) for m in page.messages] == [(2, 1)]


async def test_concurrent_appends_to_different_channels_all_land(backend: tuple[MessageStore, Reopen]) -> None:
    store, _ = backend
    await asyncio.gather(*(store.append([msg(f"c{i}", 1), msg(f"c{i}", 2)]) for i in range(20)))
    positions = await store.positions([f"c{i}" for i in range(20)])
    assert set(positions.values()) == {Position(1, 2)}


async def test_history_and_positions_survive_a_restart(backend: tuple[MessageStore, Reopen]) -> None:
    store, reopen = backend
    await store.append([msg("c1", s) for s in range(1, 6)])
    store = await reopen()
    assert await store.positions(["c1"]) == {"c1": Position(1, 5)}
    await store.append([msg("c1", 6)])
    assert [m.seq for m in (await store.history("c1")).messages] == [1, 2, 3, 4, 5, 6]


# --- directory -------------------------------------------------------------------------------------


async def test_usernames_are_unique_case_insensitively(directory: Directory) -> None:
    alice = await directory.create_user("Alice", "h1", now_ms=1)
    with pytest.raises(Conflict):
        await directory.create_user("alice", "h2", now_ms=2)
    assert await directory.user_by_name("ALICE") == alice
    assert await directory.user_by_name("nobody") is None
    assert await directory.existing_users([alice.user_id, "u-missing"]) == {alice.user_id}


async def test_direct_channels_are_unique_per_pair(directory: Directory) -> None:
    a = (await directory.create_user("a", "h", now_ms=1)).user_id
    b = (await directory.create_user("b", "h", now_ms=1)).user_id
    first, created = await directory.create_channel("direct", None, a, [b], now_ms=5)
    again, created_again = await directory.create_channel("direct", None, b, [a], now_ms=6)
    assert created
    assert not created_again
    assert again == first
    assert await directory.members(first.channel_id) == sorted([a, b])


async def test_membership(directory: Directory) -> None:
    a, b, c = "ua", "ub", "uc"
    group, _ = await directory.create_channel("group", "team", a, [b], now_ms=1)
    cid = group.channel_id
    assert await directory.channel_ids_of(a) == frozenset({cid})
    assert await directory.memberships([(cid, a), (cid, b), (cid, c)]) == {(cid, a), (cid, b)}
    assert await directory.shares_channel(a, b)
    assert not await directory.shares_channel(a, c)
    assert await directory.add_member(cid, c, now_ms=2)
    assert not await directory.add_member(cid, c, now_ms=3)
    assert await directory.remove_member(cid, b)
    assert not await directory.remove_member(cid, b)
    assert await directory.members(cid) == [a, c]
    assert [ch.channel_id for ch in await directory.channels_of(c)] == [cid]
    assert await directory.channels_of(b) == []
    assert await directory.get_channel(cid) == group
    assert await directory.get_channel("c-missing") is None


def event(seq: int, sender: str, kind: str, count: int, **fields: object) -> StoredMessage:
    base = msg("ch", seq, sender=sender)
    return replace(base, kind=kind, body=str(fields.pop("body", "")), count_seq=count, **fields)  # type: ignore[arg-type]


RICH = [
    event(1, "ann", "text", 1, body="root"),
    event(2, "bob", "text", 2, body="reply", thread=1),
    event(3, "ann", "edit", 2, body="root v2", target=1),
    event(4, "bob", "reaction", 2, target=1, emoji="👍", op="add"),
    event(5, "ann", "pin", 2, target=1),
    event(6, "cy", "text", 3, body="quote", reply_to=1),
    event(7, "bob", "edit", 3, body="reply v2", target=2),
    event(8, "bob", "delete", 3, target=2),
    event(9, "ann", "pin", 3, target=6),
    event(10, "ann", "unpin", 3, target=1),
]


async def test_rich_events_round_trip_and_fold(backend: tuple[MessageStore, Reopen]) -> None:
    store, reopen = backend
    await store.append(RICH[:4])
    await store.append(RICH[4:])
    for attempt in range(2):
        current = store if attempt == 0 else await reopen()
        pos = (await current.positions(["ch"]))["ch"]
        assert (pos.last_seq, pos.count) == (10, 3)
        history = {m.seq: m for m in (await current.history("ch")).messages}
        # The delete erased the words of its target and of the target's edit; nothing else.
        assert [history[s].body for s in range(1, 11)] == ["root", "", "root v2", "", "", "quote", "", "", "", ""]
        assert history[4] == RICH[3]
        assert history[6] == RICH[5]
        related = await current.related({"ch": [1, 2], "nowhere": [1]})
        assert [m.seq for m in related["ch"]] == [1, 2, 3, 4, 5, 7, 8, 10]
        assert related["nowhere"] == []
        states = fold.fold(related["ch"]).messages
        assert (states[1].body, states[1].reply_count, states[1].pinned) == ("root v2", 1, False)
        assert states[1].out("bob").reactions[0].me
        assert (states[2].deleted, states[2].body) == (True, "")
        replies, more = await current.thread("ch", 1)
        assert ([m.seq for m in replies], more) == ([2], False)
        assert await current.thread("ch", 1, after=2) == ([], False)
        assert await current.thread("ch", 1, limit=0) == ([], True)
        assert fold.fold(await current.pin_events("ch")).pinned() == []  # pin targets are not in the pin list
        assert [m.seq for m in await current.pin_events("ch")] == [5, 9, 10]
        assert await current.counts_at([("ch", 1), ("ch", 4), ("ch", 6), ("ch", 10), ("none", 3)]) == {
            ("ch", 1): 1, ("ch", 4): 2, ("ch", 6): 3, ("ch", 10): 3, ("none", 3): 0}


async def test_a_version_1_sqlite_file_migrates_and_counts_its_texts(tmp_path: Path) -> None:
    """Messages stored before rich messages existed were all texts: each counts toward unread."""
    import sqlite3

    from mqchat.storage.sqlite import MESSAGES_SCHEMA

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(MESSAGES_SCHEMA[0] + "PRAGMA user_version=1;")
        conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?)",
                         [("c1", 1, s, 100 + s, "u1", "d1", f"m{s}", s, "text", f"b{s}") for s in (1, 2, 3)])
        conn.execute("INSERT INTO positions VALUES ('c1', 1, 3)")
    store = await SqliteMessageStore(path).open()
    try:
        assert (await store.positions(["c1"]))["c1"].count == 3
        assert await store.counts_at([("c1", 2)]) == {("c1", 2): 2}
        await store.append([replace(msg("c1", 4), kind="reaction", body="", target=2, emoji="👍", op="add",
                                    count_seq=3)])
        assert (await store.positions(["c1"]))["c1"].count == 3
        assert [m.count_seq for m in (await store.history("c1")).messages] == [1, 2, 3, 3]
    finally:
        await store.close()
