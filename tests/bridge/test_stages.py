"""The pipelined stages of the bridge (bridge/stages.py) over a real SQLite store (fsync'd writes),
publishing into a recording publisher that the tests can hold back, as a slow broker would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bridge.pipeline import BatchStats, Inbound, Pipeline
from bridge.sequencer import Sequencer
from bridge.stages import run_stages, take_batch
from mqchat import schema
from mqchat.ids import Snowflake
from mqchat.mqtt.client import ConnectionLost
from mqchat.storage.memory import MemoryDirectory
from mqchat.storage.sqlite import SqliteMessageStore
from tests.bridge.recording import RecordingPublisher
from tests.waiting import wait_for


def send(user: str, channel: str, cmid: str, body: str = "hi") -> Inbound:
    return Inbound(user, "d1", channel, schema.encode(schema.SendRequest(cmid=cmid, kind="text", body=body)))


class GatedPublisher(RecordingPublisher):
    """Records publishes; while ``gate`` is clear, each call waits (the broker's PUBACKs are late).
    ``fail_next``: the next call raises, as a lost broker connection does."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self.fail_next = False

    async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.calls += 1
        if self.fail_next:
            self.fail_next = False
            raise ConnectionLost("broker connection lost")
        await self.gate.wait()
        await super().publish(items)


class World:
    def __init__(self, store: SqliteMessageStore, pipe: Pipeline, pub: GatedPublisher, channels: list[str]) -> None:
        self.store, self.pipe, self.pub, self.channels = store, pipe, pub, channels
        self.queue: asyncio.Queue[Inbound | None] = asyncio.Queue()
        self.batches: list[tuple[BatchStats, list[str]]] = []

    def done(self, stats: BatchStats, batch: Sequence[Inbound]) -> None:
        self.batches.append((stats, [schema.decode_send(i.payload).cmid for i in batch]))

    def run(self, batch_max: int = 100) -> asyncio.Task[None]:
        return asyncio.create_task(run_stages(self.pipe, self.queue, batch_max, self.done))

    def put(self, *items: Inbound | None) -> None:
        for i in items:
            self.queue.put_nowait(i)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await SqliteMessageStore(tmp_path / "m.db").open()
    directory = MemoryDirectory()
    channels = []
    for _ in range(2):
        channel, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=1)
        channels.append(channel.channel_id)
    pub = GatedPublisher()
    pipe = Pipeline(store, directory, Sequencer(Snowflake(1)), pub, clock_ms=lambda: 1_800_000_000_000)
    yield World(store, pipe, pub, channels)
    await store.close()


async def test_the_next_batch_is_written_while_the_previous_waits_for_the_broker_and_acks_wait_their_turn(
        world: World) -> None:
    a, b = world.channels
    world.pub.gate.clear()  # the broker is slow to answer
    task = world.run(batch_max=2)
    world.put(send("alice", a, "1"), send("bob", b, "2"))
    await wait_for(lambda: world.pub.calls == 1)  # batch 1 durable, its publish waits
    world.put(send("alice", a, "3"), send("bob", a, "4"))

    async def written() -> bool:
        return (await world.store.history(a)).last_seq == 3
    await wait_for(written)  # batch 2 written meanwhile ...
    assert world.pub.sent == []  # ... but nothing published, no ack sent
    world.put(None)
    world.pub.gate.set()
    await asyncio.wait_for(task, 10)
    # Each channel's stream in seq order, every ack after its own batch's stream.
    topics = [t.split("/")[0] for t, _ in world.pub.sent]
    assert topics == ["ch", "ch", "dev", "dev", "ch", "ch", "dev", "dev"]
    stream = [(m.channel, m.seq) for m in world.pub.stream()]
    assert sorted(stream[:2]) == sorted([(a, 1), (b, 1)])  # batch 1 (channels in id order)
    assert stream[2:] == [(a, 2), (a, 3)]
    assert [(x.cmid, x.seq) for x in world.pub.acks()] == [("1", 1), ("2", 1), ("3", 2), ("4", 3)]
    assert [cmids for _, cmids in world.batches] == [["1", "2"], ["3", "4"]]


async def test_a_batch_across_channels_with_a_duplicate_and_a_retry_acks_each_send_once_per_try(
        world: World) -> None:
    a, b = world.channels
    task = world.run()
    world.put(send("alice", a, "x", "first"))
    await wait_for(lambda: len(world.batches) == 1)
    # one batch: a retry of x, a new send in each channel, the same new cmid twice
    world.put(send("alice", a, "x", "again"), send("bob", b, "y"), send("alice", a, "z"), send("alice", a, "z"),
              None)
    await asyncio.wait_for(task, 10)
    stats = world.batches[-1][0]
    assert (stats.accepted, stats.duplicates) == (2, 2)
    stream = [(m.channel, m.seq, m.cmid, m.body) for m in world.pub.stream()]
    assert stream[0] == (a, 1, "x", "first")
    assert sorted(stream[1:]) == sorted([(a, 2, "z", "hi"), (b, 1, "y", "hi")])
    acks = [(x.cmid, x.channel, x.seq) for x in world.pub.acks()]
    assert acks == [("x", a, 1), ("x", a, 1), ("y", b, 1), ("z", a, 2), ("z", a, 2)]
    assert len({x.id for x in world.pub.acks() if x.cmid == "z"}) == 1


async def test_a_lost_broker_connection_mid_run_acks_nothing_more_and_the_retries_get_the_originals(
        world: World) -> None:
    a, _ = world.channels
    task = world.run(batch_max=1)
    world.put(send("alice", a, "1"))
    await wait_for(lambda: len(world.batches) == 1)
    world.pub.fail_next = True  # the next batch's publish finds the connection gone
    world.put(send("alice", a, "2"), send("alice", a, "3"))
    with pytest.raises(ExceptionGroup) as failed:
        await asyncio.wait_for(task, 10)
    assert failed.group_contains(ConnectionLost)
    assert [x.cmid for x in world.pub.acks()] == ["1"]  # 2 was durable but is not acked, 3 neither
    assert (await world.store.history(a)).last_seq >= 2
    # After a reconnect the devices retry with the same cmids: acked once, published in order, no duplicate.
    task = world.run()
    world.put(send("alice", a, "2"), send("alice", a, "3"), None)
    await asyncio.wait_for(task, 10)
    assert [(x.cmid, x.seq) for x in world.pub.acks()] == [("1", 1), ("2", 2), ("3", 3)]
    assert [m.seq for m in world.pub.stream()] == [1, 2, 3]


async def test_the_end_of_the_queue_drains_every_send_before_it_through_every_stage(world: World) -> None:
    a, b = world.channels
    world.pub.gate.clear()
    task = world.run(batch_max=7)
    world.put(*(send("alice", (a, b)[i % 2], str(i)) for i in range(60)), None)
    await asyncio.sleep(0)
    world.pub.gate.set()
    await asyncio.wait_for(task, 10)
    assert sorted(int(x.cmid or "") for x in world.pub.acks() if x.ok) == list(range(60))
    assert [m.seq for m in world.pub.stream() if m.channel == a] == list(range(1, 31))
    assert all(len(cmids) <= 7 for _, cmids in world.batches)


async def test_a_batch_ends_at_batch_max_or_at_the_end_of_the_queue() -> None:
    queue: asyncio.Queue[Inbound | None] = asyncio.Queue()
    for i in range(5):
        queue.put_nowait(send("alice", "c", str(i)))
    queue.put_nowait(None)
    first = await take_batch(queue, 3)
    second = await take_batch(queue, 3)
    assert [i.payload for i in first or []] == [send("alice", "c", str(i)).payload for i in range(3)]
    assert second is not None
    assert len(second) == 2  # stops at the end, which stays queued
    assert await take_batch(queue, 3) is None
    assert await take_batch(queue, 3) is None
