"""The real cassandra-driver against the stand-in: error mapping, re-preparing, paging, reconnects,
and an event loop that keeps running while requests are in flight.

The stand-in is one node with one copy of the data: these tests prove our use of the driver and
the protocol, not Cassandra's replication or Paxos (see tests/cassandra_standin/server.py).
"""

from __future__ import annotations

import asyncio

import pytest

from mqchat.errors import StorageUnavailable
from mqchat.storage.base import StoredMessage
from mqchat.storage.cassandra import STATEMENTS, CassandraMessageStore, bucket_of, head_timestamp
from tests.cassandra_standin import StandIn


def msg(seq: int, channel: str = "c1") -> StoredMessage:
    return StoredMessage(id=5000 + seq, channel=channel, seq=seq, epoch=1, sender="u1", device="d1",
                         cmid=f"m{seq}", ts=seq, kind="text", body=f"b{seq}")


async def until_ok(store: CassandraMessageStore, channel: str = "c1", attempts: int = 100) -> None:
    """Wait (bounded) until the driver has reconnected and reads work again."""
    for _ in range(attempts):
        try:
            await store.positions([channel])
            return
        except StorageUnavailable:
            await asyncio.sleep(0.05)
    raise AssertionError("the store did not recover")


def test_bucket_and_timestamp_arithmetic() -> None:
    assert [bucket_of(s, 4) for s in (1, 4, 5, 8, 9)] == [0, 0, 1, 1, 2]
    assert bucket_of(4096) == 0
    assert bucket_of(4097) == 1
    # The hint's write timestamp orders by (epoch, seq): a later position always wins.
    assert head_timestamp(1, 10) < head_timestamp(1, 11) < head_timestamp(2, 0)


@pytest.mark.parametrize(("kind", "on"), [
    ("write_timeout", "cmid_put"),
    ("write_timeout", "head_set"),
    ("unavailable", "bucket_cas"),
    ("overloaded", "bucket_cas"),
])
async def test_temporary_write_faults_are_storage_unavailable_and_the_retry_is_exact(
    store: CassandraMessageStore, standin: StandIn, kind: str, on: str,
) -> None:
    await store.append([msg(1)])
    standin.inject(kind, on=on)  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):
        await store.append([msg(2), msg(3)])
    await store.append([msg(2), msg(3)])  # the caller retries the same batch
    assert [m.seq for m in (await store.history("c1")).messages] == [1, 2, 3]


async def test_read_faults_are_storage_unavailable(store: CassandraMessageStore, standin: StandIn) -> None:
    await store.append([msg(1)])
    standin.inject("read_timeout", on="message_range")
    with pytest.raises(StorageUnavailable):
        await store.history("c1")
    assert [m.seq for m in (await store.history("c1")).messages] == [1]


async def test_a_node_that_forgot_its_prepared_statements_is_reprepared_transparently(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    await store.append([msg(1)])
    before = standin.prepares["head_get"]
    standin.forget_prepared()  # as after a node restart
    assert (await store.positions(["c1"]))["c1"].last_seq == 1
    standin.inject("unprepared", on="bucket_cas")
    await store.append([msg(2)])
    assert standin.prepares["head_get"] == before + 1
    assert standin.faults_fired["unprepared"] == 1
    assert [m.seq for m in (await store.history("c1")).messages] == [1, 2]


async def test_dropped_connections_are_unavailable_then_the_driver_reconnects(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    await store.append([msg(1)])
    standin.inject("drop", on="head_get")
    with pytest.raises(StorageUnavailable):
        await store.positions(["c1"])
    await until_ok(store)
    standin.drop_connections()  # every connection at once, as a node restart does
    await until_ok(store)
    await store.append([msg(2)])
    assert [m.seq for m in (await store.history("c1")).messages] == [1, 2]


async def test_reads_follow_paging_state_across_pages(store: CassandraMessageStore, standin: StandIn) -> None:
    # fetch_size is 7 in the test tuning; one bucket holds 4 (tests/cassandra/conftest.py), so use
    # a store with big buckets to get one partition read that needs several pages.
    big = await CassandraMessageStore(store._cql.settings, tuning=store._cql.tuning, bucket_size=64).open()
    try:
        await big.append([msg(s, "paged") for s in range(1, 31)])
        pages = standin.pages_served
        page = await big.history("paged", limit=25)
        assert [m.seq for m in page.messages] == list(range(6, 31))
        assert standin.pages_served - pages >= 3  # 25 rows in pages of 7
    finally:
        await big.close()


async def test_the_event_loop_runs_while_a_request_is_in_flight(
    store: CassandraMessageStore, standin: StandIn,
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    standin.inject("delay", on="head_get", delay_s=0.4)
    task = asyncio.create_task(ticker(), name="test.ticker")
    try:
        started = asyncio.get_running_loop().time()
        await store.positions(["c1"])
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        task.cancel()
    assert elapsed >= 0.4
    assert ticks >= 10  # the loop kept ticking while the driver waited


async def test_only_prepared_statements_carry_data(store: CassandraMessageStore, standin: StandIn) -> None:
    await store.append([msg(s) for s in range(1, 10)])
    await store.history("c1", before=5, limit=2)
    await store.find_cmids([("c1", "u1", "m3")])
    assert standin.refused_queries == []
    assert set(standin.executed) <= set(STATEMENTS)
    assert all(q.split(" ", 1)[0] in ("CREATE", "ALTER") for q in standin.ddl)  # only migrations used QUERY
