"""The bridge pipeline over real stores (memory and SQLite), publishing into a recording publisher."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from bridge.pipeline import Inbound, Pipeline
from bridge.sequencer import Sequencer
from mqchat import schema, topics
from mqchat.errors import StorageUnavailable
from mqchat.ids import Snowflake
from mqchat.storage.base import StoredMessage
from mqchat.storage.memory import MemoryDirectory, MemoryMessageStore
from mqchat.storage.sqlite import SqliteMessageStore
from tests.bridge.recording import RecordingPublisher


def send(user: str, channel: str, cmid: str, body: str = "hi") -> Inbound:
    return Inbound(user, "d1", channel, schema.encode(schema.SendRequest(cmid=cmid, kind="text", body=body)))


async def setup(store: object = None) -> tuple[Pipeline, RecordingPublisher, str]:
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=1)
    pub = RecordingPublisher()
    pipe = Pipeline(store or MemoryMessageStore(), directory, Sequencer(Snowflake(1)), pub,  # type: ignore[arg-type]
                    clock_ms=lambda: 1_800_000_000_000, write_deadline_s=0.3)
    return pipe, pub, channel.channel_id


async def test_stream_is_published_before_acks_and_in_seq_order() -> None:
    pipe, pub, ch = await setup()
    stats = await pipe.process([send("alice", ch, "1"), send("bob", ch, "2"), send("alice", ch, "3")])
    assert stats.accepted == 3
    kinds = [t.split("/")[0] for t, _ in pub.sent]
    assert kinds == ["ch", "ch", "ch", "dev", "dev", "dev"]
    assert [m.seq for m in pub.stream()] == [1, 2, 3]
    assert [(a.cmid, a.seq, a.ok) for a in pub.acks()] == [("1", 1, True), ("2", 2, True), ("3", 3, True)]
    assert pub.sent[3][0] == topics.ack("alice", "d1")


async def test_sender_comes_from_the_topic() -> None:
    pipe, pub, ch = await setup()
    await pipe.process([send("bob", ch, "1")])
    assert pub.stream()[0].sender == "bob"


async def test_rejections_are_acked_in_arrival_order_with_codes() -> None:
    pipe, pub, ch = await setup()
    batch = [
        Inbound("alice", "d1", ch, b"{oops"),
        send("mallory", ch, "m1"),
        send("alice", ch, "ok"),
        Inbound("alice", "d1", ch, b'{"cmid": "k", "kind": "gif", "body": ""}'),
    ]
    stats = await pipe.process(batch)
    assert stats.rejected == {"malformed": 1, "not_member": 1, "unknown_kind": 1}
    codes = [(a.cmid, a.error.code if a.error else "ok") for a in pub.acks()]
    assert sorted(codes, key=str) == sorted([(None, "malformed"), ("m1", "not_member"), ("ok", "ok"),
                                             ("k", "unknown_kind")], key=str)
    assert [m.cmid for m in pub.stream()] == ["ok"]


async def test_duplicate_is_acked_with_the_original_and_not_republished() -> None:
    pipe, pub, ch = await setup()
    await pipe.process([send("alice", ch, "x", "first")])
    await pipe.process([send("alice", ch, "x", "second")])
    assert [m.body for m in pub.stream()] == ["first"]
    first, second = pub.acks()
    assert (first.id, first.seq) == (second.id, second.seq)


async def test_locked_store_gives_a_retryable_error_and_the_retry_continues_the_order(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = await SqliteMessageStore(path, busy_timeout_ms=50).open()
    pipe, pub, ch = await setup(store)
    await pipe.process([send("alice", ch, "1")])

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        stats = await pipe.process([send("alice", ch, "2")])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stats.rejected == {"unavailable": 1}
    failed = pub.acks()[-1]
    assert failed.cmid == "2"
    assert failed.error is not None
    assert failed.error.code == "unavailable"

    await pipe.process([send("alice", ch, "2")])  # the device retries with the same cmid
    assert [m.seq for m in pub.stream()] == [1, 2]
    assert pub.acks()[-1].seq == 2
    await store.close()


async def test_sends_for_channels_another_bridge_owns_are_left_alone() -> None:
    directory = MemoryDirectory()
    mine, _ = await directory.create_channel("group", None, "alice", [], now_ms=1)
    theirs, _ = await directory.create_channel("group", None, "alice", [], now_ms=1)
    pub = RecordingPublisher()
    pipe = Pipeline(MemoryMessageStore(), directory, Sequencer(Snowflake(1)), pub,
                    owns=lambda channel: channel == mine.channel_id)
    stats = await pipe.process([send("alice", mine.channel_id, "1"), send("alice", theirs.channel_id, "2")])
    assert (stats.accepted, stats.not_owned) == (1, 1)
    assert [a.cmid for a in pub.acks()] == ["1"]  # nothing at all for the other bridge's channel


class LostReplyStore(SqliteMessageStore):
    """A real SQLite store whose next append commits and then reports a timeout, as a database whose
    answer is lost on the way back does (the fault is injected at the store's boundary)."""

    lose_next_reply = False

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        await super().append(messages)
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise StorageUnavailable("timed out waiting for the database")


async def test_a_durable_message_whose_reply_was_lost_is_published_when_the_sender_retries(tmp_path: Path) -> None:
    store = LostReplyStore(tmp_path / "m.db")
    await store.open()
    pipe, pub, ch = await setup(store)
    await pipe.process([send("alice", ch, "1")])
    store.lose_next_reply = True
    stats = await pipe.process([send("alice", ch, "2")])
    assert stats.rejected == {"unavailable": 1}  # stored, but the bridge could not know: no ok ack
    assert [m.seq for m in pub.stream()] == [1]
    await pipe.process([send("alice", ch, "2"), send("alice", ch, "3")])  # the retry, and a new send
    assert [m.seq for m in pub.stream()] == [1, 2, 3]  # 2 is published once, before 3
    assert [(a.cmid, a.seq) for a in pub.acks() if a.ok] == [("1", 1), ("2", 2), ("3", 3)]
    await pipe.process([send("alice", ch, "2")])  # a third try: acked, not published again
    assert [m.seq for m in pub.stream()] == [1, 2, 3]
    await store.close()


async def test_background_follow_ups_move_read_markers_after_the_acks(redis_server) -> None:  # type: ignore[no-untyped-def]
    from mqchat.storage.base import ReadMarker
    from mqchat.storage.redis_client import RedisClient
    from mqchat.storage.redis_state import RedisState

    redis = RedisClient.from_url(redis_server.url)
    state = RedisState(redis)
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", [], now_ms=1)
    pub = RecordingPublisher()
    pipe = Pipeline(MemoryMessageStore(), directory, Sequencer(Snowflake(1)), pub, read_state=state,
                    background_followups=True)
    await pipe.process([send("alice", channel.channel_id, "1"), send("alice", channel.channel_id, "2")])
    assert len(pub.acks()) == 2  # acked before any read-state work
    assert await state.read_markers("alice", [channel.channel_id]) == {channel.channel_id: None}
    await pipe.flush_followups()
    assert await state.read_markers("alice", [channel.channel_id]) == {channel.channel_id: ReadMarker(1, 2)}
    await redis.close()


def event(user: str, channel: str, cmid: str, **fields: object) -> Inbound:
    return Inbound(user, "d1", channel, schema.encode(schema.SendRequest(cmid=cmid, **fields)))  # type: ignore[arg-type]


class CountingStore(MemoryMessageStore):
    """The memory store, counting the target lookups the pipeline makes."""

    def __init__(self) -> None:
        super().__init__()
        self.related_calls = 0

    async def related(self, wanted: Mapping[str, Collection[int]]) -> dict[str, list[StoredMessage]]:
        self.related_calls += 1
        return await super().related(wanted)


async def test_events_are_checked_against_their_targets_in_one_lookup_per_batch() -> None:
    store = CountingStore()
    pipe, pub, ch = await setup(store)
    await pipe.process([send("alice", ch, "a1", "mine"), send("bob", ch, "b1", "bob's")])
    assert store.related_calls == 0  # plain texts need no lookup
    stats = await pipe.process([
        event("alice", ch, "e1", kind="edit", target=1, body="mine, edited"),
        event("alice", ch, "e2", kind="edit", target=2, body="not mine"),
        event("alice", ch, "e3", kind="delete", target=2),
        event("alice", ch, "e4", kind="reaction", target=2, emoji="👍", op="add"),
        event("bob", ch, "e5", kind="delete", target=2),
        event("alice", ch, "e6", kind="reaction", target=2, emoji="🎉", op="add"),  # deleted just before
        event("alice", ch, "e7", kind="pin", target=9),
        event("alice", ch, "e8", kind="text", body="re", thread=1, reply_to=2),  # quotes a deleted message
        event("alice", ch, "e9", kind="text", body="re", thread=1),
    ])
    assert store.related_calls == 1
    assert stats.accepted == 4
    assert stats.rejected == {"forbidden": 2, "target_deleted": 2, "not_found": 1}
    codes = {a.cmid: a.error.code if a.error else a.seq for a in pub.acks()[2:]}
    assert codes == {"e1": 3, "e2": "forbidden", "e3": "forbidden", "e4": 4, "e5": 5, "e6": "target_deleted",
                     "e7": "not_found", "e8": "target_deleted", "e9": 6}
    history = (await store.history(ch)).messages
    assert [(m.seq, m.kind, m.body) for m in history] == [
        (1, "text", "mine"), (2, "text", ""), (3, "edit", "mine, edited"), (4, "reaction", ""), (5, "delete", ""),
        (6, "text", "re")]
    assert [m.count_seq for m in history] == [1, 2, 2, 2, 2, 3]
    # A retried delete is acked with its original seq, not refused as target_deleted.
    await pipe.process([event("bob", ch, "e5", kind="delete", target=2)])
    assert pub.acks()[-1].seq == 5


async def test_stream_messages_carry_the_event_fields() -> None:
    pipe, pub, ch = await setup()
    await pipe.process([send("alice", ch, "a1")])
    await pipe.process([event("bob", ch, "r", kind="reaction", target=1, emoji=":tada:", op="remove")])
    m = pub.stream()[-1]
    assert (m.kind, m.target, m.emoji, m.op, m.body, m.count_seq) == ("reaction", 1, ":tada:", "remove", "", 1)


async def test_only_texts_move_markers_record_mentions_and_queue_pushes(redis_server) -> None:  # type: ignore[no-untyped-def]
    from mqchat.storage.base import ReadMarker
    from mqchat.storage.push_state import PushState
    from mqchat.storage.redis_client import RedisClient
    from mqchat.storage.redis_state import RedisState

    redis = RedisClient.from_url(redis_server.url)
    state, push = RedisState(redis), PushState(redis)
    await push.ensure_groups()
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=1)
    ch = channel.channel_id
    pipe = Pipeline(MemoryMessageStore(), directory, Sequencer(Snowflake(1)), RecordingPublisher(),
                    read_state=state, fanout=state)
    await pipe.process([send("alice", ch, "1", "hi <@bob>")])
    await pipe.process([event("alice", ch, "2", kind="edit", target=1, body="hi again <@bob>"),
                        event("alice", ch, "3", kind="reaction", target=1, emoji="👍", op="add"),
                        event("alice", ch, "4", kind="pin", target=1)])
    assert await state.read_markers("alice", [ch]) == {ch: ReadMarker(1, 1)}  # not moved to 4
    assert await state.mention_counts("bob", {ch: 0}) == {ch: 1}  # the edit's mention is not counted again
    jobs = await push.read_fanout_jobs("f1", block_ms=100)
    await redis.close()
    assert [fields["seq"] for _, fields in jobs] == ["1"]  # one push job: the text
async def test_new_messages_are_logged_for_search_after_the_acks(redis_server) -> None:  # type: ignore[no-untyped-def]
    from mqchat.storage.message_log import MessageEvent, MessageLog
    from mqchat.storage.redis_client import RedisClient

    redis = RedisClient.from_url(redis_server.url)
    log = MessageLog(redis)
    await log.ensure_group()
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", [], now_ms=1)
    pub = RecordingPublisher()
    pipe = Pipeline(MemoryMessageStore(), directory, Sequencer(Snowflake(1)), pub, message_log=log,
                    background_followups=True)
    batch = [send("alice", channel.channel_id, "1"), send("alice", channel.channel_id, "2", body="secret")]
    await pipe.process(batch)
    assert len(pub.acks()) == 2  # acked before anything is logged
    assert await log.length() == 0
    await pipe.flush_followups()
    await pipe.process([send("alice", channel.channel_id, "1")])  # a duplicate: not new, not logged again
    await pipe.flush_followups()
    entries = await log.read("t", count=10, block_ms=10)
    events = [MessageEvent.from_fields(f) for _, f in entries]
    stream = pub.stream()
    assert events == [MessageEvent("new", int(m.id), m.channel, m.epoch, m.seq) for m in stream[:2]]
    assert all("secret" not in str(f) for _, f in entries)  # notices, no text
    await redis.close()
