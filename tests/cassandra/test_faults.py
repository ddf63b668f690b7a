"""Fault injection through the whole send path: bridge pipeline → Cassandra store → real driver → stand-in.

Each test drives :class:`bridge.pipeline.Pipeline` (with a recording publisher in place of MQTT),
makes the stand-in answer WriteTimeout / Unavailable / a dropped connection at the commit, and
checks the three promises: nothing is acked (or published) before it is written, nothing acked is
lost, nothing is stored or acked twice. The device's retry with the same cmid is replayed by hand.

The stand-in applies or skips the write exactly as told (``apply=``); what it cannot show is how a
real cluster's Paxos resolves a timed-out CAS — that the retry then sees one outcome or the other
is the assumption these tests build on (see docs/storage-cassandra.md).
"""

from __future__ import annotations

from bridge.pipeline import Inbound, Pipeline
from bridge.sequencer import Sequencer
from mqchat import schema
from mqchat.ids import Snowflake
from mqchat.storage.cassandra import CassandraMessageStore
from mqchat.storage.memory import MemoryDirectory
from tests.bridge.recording import RecordingPublisher as Recorder
from tests.cassandra_standin import StandIn


def send(user: str, channel: str, cmid: str) -> Inbound:
    return Inbound(user, "d1", channel, schema.encode(schema.SendRequest(cmid=cmid, kind="text", body=f"body {cmid}")))


async def setup(store: CassandraMessageStore, *, deadline_s: float = 0.5) -> tuple[Pipeline, Recorder, str]:
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=1)
    pub = Recorder()
    pipe = Pipeline(store, directory, Sequencer(Snowflake(1)), pub, clock_ms=lambda: 1_800_000_000_000,
                    write_deadline_s=deadline_s)
    return pipe, pub, channel.channel_id


async def stored(store: CassandraMessageStore, channel: str) -> list[tuple[int, str]]:
    return [(m.seq, m.cmid) for m in (await store.history(channel, limit=200)).messages]


def check_no_duplicates(pub: Recorder, channel: str, history: list[tuple[int, str]]) -> None:
    """Over one channel: published and acked ⊆ stored, nothing twice, seqs gap-free."""
    published = [(m.seq, m.cmid) for m in pub.stream() if m.channel == channel]
    assert len(published) == len(set(published)), "a message was published twice"
    assert set(published) <= set(history), "a published message is not in the store"
    ok = [(a.seq, a.cmid) for a in pub.acks() if a.ok and a.channel == channel]
    assert set(ok) <= set(history), "an acked message is not in the store"
    cmids = [c for _, c in history]
    assert len(cmids) == len(set(cmids)), "a cmid is stored twice"
    assert [s for s, _ in history] == list(range(1, len(history) + 1)), "seqs are not gap-free"


async def test_write_timeout_before_the_write_is_not_acked_and_the_retry_lands_once(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    pipe, pub, ch = await setup(store)
    await pipe.process([send("alice", ch, "1")])
    standin.inject("write_timeout", on="bucket_cas", times=1000, write_type="CAS")  # outlasts the deadline

    stats = await pipe.process([send("alice", ch, "2")])

    assert stats.rejected == {"unavailable": 1}
    failed = pub.acks()[-1]
    assert (failed.cmid, failed.ok, failed.error and failed.error.code) == ("2", False, "unavailable")
    assert [m.cmid for m in pub.stream()] == ["1"]  # nothing published that is not durable
    assert await stored(store, ch) == [(1, "1")]
    assert standin.faults_fired["write_timeout"] >= 2  # the bridge did retry before giving up

    standin.clear_faults()
    await pipe.process([send("alice", ch, "2")])  # the device retries with the same cmid
    ack = pub.acks()[-1]
    assert (ack.cmid, ack.ok, ack.seq) == ("2", True, 2)
    history = await stored(store, ch)
    assert history == [(1, "1"), (2, "2")]
    assert [m.cmid for m in pub.stream()] == ["1", "2"]
    check_no_duplicates(pub, ch, history)


async def test_write_timeout_after_the_write_is_resolved_by_the_retry_without_a_duplicate(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    pipe, pub, ch = await setup(store)
    await pipe.process([send("alice", ch, "1")])
    standin.inject("write_timeout", on="bucket_cas", times=1, apply=True, write_type="CAS")

    stats = await pipe.process([send("alice", ch, "2")])

    assert stats.accepted == 1
    assert standin.faults_fired["write_timeout"] == 1
    assert standin.executed["bucket_cas"] == 3  # seq 1, the write that timed out, the retry
    ack = pub.acks()[-1]
    assert (ack.cmid, ack.ok, ack.seq) == ("2", True, 2)
    history = await stored(store, ch)
    assert history == [(1, "1"), (2, "2")]
    assert [m.cmid for m in pub.stream()] == ["1", "2"]
    check_no_duplicates(pub, ch, history)


async def test_write_that_landed_but_was_never_acked_is_acked_once_on_the_device_retry(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    pipe, pub, ch = await setup(store)
    await pipe.process([send("alice", ch, "1")])
    standin.inject("write_timeout", on="bucket_cas", times=1, apply=True, write_type="CAS")
    standin.inject("unavailable", on="bucket_cas", times=1000)  # then the cluster stays unavailable

    await pipe.process([send("alice", ch, "2")])

    failed = pub.acks()[-1]
    assert (failed.ok, failed.error and failed.error.code) == (False, "unavailable")
    assert await stored(store, ch) == [(1, "1"), (2, "2")]  # durable, though not acked: allowed

    standin.clear_faults()
    await pipe.process([send("alice", ch, "2")])  # same cmid: answered with the original
    await pipe.process([send("alice", ch, "3")])
    acks = [(a.cmid, a.seq) for a in pub.acks() if a.ok]
    assert acks == [("1", 1), ("2", 2), ("3", 3)]
    history = await stored(store, ch)
    assert history == [(1, "1"), (2, "2"), (3, "3")]
    original = (await store.history(ch, after=1, before=3)).messages[0]
    assert pub.acks()[-2].id == str(original.id)
    check_no_duplicates(pub, ch, history)


async def test_unavailable_for_a_moment_is_absorbed_by_the_bridge_retry(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    pipe, pub, ch = await setup(store, deadline_s=3.0)
    standin.inject("unavailable", on="bucket_cas", times=2)
    standin.inject("unavailable", on="cmid_put", times=1)

    stats = await pipe.process([send("alice", ch, "a"), send("bob", ch, "b")])

    assert stats.accepted == 2
    assert standin.faults_fired["unavailable"] == 3
    history = await stored(store, ch)
    assert history == [(1, "a"), (2, "b")]
    check_no_duplicates(pub, ch, history)


async def test_a_batch_across_buckets_and_channels_survives_a_timeout_between_its_commits(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    """Bucket size 4: seqs 3..6 commit as [3, 4] then [5, 6]; the first commit times out after landing."""
    pipe, pub, ch = await setup(store, deadline_s=3.0)
    directory = pipe._directory  # the test's own memory directory
    other, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=2)
    await pipe.process([send("alice", ch, "1"), send("alice", ch, "2")])
    standin.inject("write_timeout", on="bucket_cas", times=1, apply=True, write_type="CAS")

    stats = await pipe.process([send("alice", ch, c) for c in ("3", "4", "5", "6")]
                               + [send("bob", other.channel_id, "x")])

    assert stats.accepted == 5
    history = await stored(store, ch)
    assert history == [(1, "1"), (2, "2"), (3, "3"), (4, "4"), (5, "5"), (6, "6")]
    assert await stored(store, other.channel_id) == [(1, "x")]
    check_no_duplicates(pub, other.channel_id, [(1, "x")])
    check_no_duplicates(pub, ch, history)


async def test_a_connection_dropped_at_the_commit_is_retried_after_the_driver_reconnects(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    pipe, pub, ch = await setup(store, deadline_s=5.0)
    standin.inject("drop", on="bucket_cas", times=1)

    stats = await pipe.process([send("alice", ch, "1")])

    assert standin.faults_fired["drop"] == 1
    assert stats.accepted == 1
    history = await stored(store, ch)
    assert history == [(1, "1")]
    check_no_duplicates(pub, ch, history)
