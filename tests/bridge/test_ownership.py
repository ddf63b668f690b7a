"""Partition assignment (pure) and leases (real Redis) for several bridges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.ownership import Ownership, assign, partition_of
from mqchat.storage.leases import ChannelLeases
from mqchat.storage.redis_client import RedisClient


def test_partition_is_stable_and_spread() -> None:
    parts = [partition_of(f"c{i}", 64) for i in range(6400)]
    assert parts == [partition_of(f"c{i}", 64) for i in range(6400)]
    counts = [parts.count(p) for p in range(64)]
    assert min(counts) > 50  # roughly 100 each


def test_rendezvous_moves_only_the_leaving_bridges_partitions() -> None:
    three = ["b0", "b1", "b2"]
    before = {p: assign(p, three) for p in range(256)}
    after = {p: assign(p, ["b0", "b2"]) for p in range(256)}
    moved = {p for p in before if before[p] != after[p]}
    assert moved == {p for p in before if before[p] == "b1"}
    assert assign(0, []) is None
    shares = [list(before.values()).count(b) for b in three]
    assert min(shares) > 50


@pytest.fixture
async def states(redis_url: str) -> AsyncIterator[list[ChannelLeases]]:
    """Three bridges' lease stores, each on its own client (as in three processes), on a single Redis
    and on a Redis Cluster."""
    made = [RedisClient.from_url(redis_url, prefix="t:") for _ in range(3)]
    yield [ChannelLeases(r) for r in made]
    for r in made:
        await r.close()


async def test_each_partition_has_exactly_one_owner_and_a_dead_bridge_is_replaced(states: list[ChannelLeases]) -> None:
    bridges = [Ownership(s, f"b{i}", partitions=32, lease_ms=600) for i, s in enumerate(states)]
    for _ in range(2):  # the first round registers everyone; the second settles the assignment
        for b in bridges:
            await b.tick()
    for b in bridges:  # leases released by the previous owners are claimed now
        await b.tick()
    owners = [set(b.owned) for b in bridges]
    assert set().union(*owners) == set(range(32))
    assert sum(len(o) for o in owners) == 32  # no partition owned twice
    # b1 dies (stops ticking): after its lease ends, b0 and b2 take its partitions over
    dead = owners[1]
    await asyncio.sleep(0.7)  # deliberately past b1's 600 ms lease: expiry is time passing, not an event
    for _ in range(2):
        for b in (bridges[0], bridges[2]):
            await b.tick()
    assert set(bridges[0].owned) | set(bridges[2].owned) == set(range(32))
    assert dead <= set(bridges[0].owned) | set(bridges[2].owned)
    assert not set(bridges[0].owned) & set(bridges[2].owned)


async def test_a_live_lease_is_not_taken_and_release_hands_it_over(states: list[ChannelLeases]) -> None:
    a = Ownership(states[0], "a", partitions=4, lease_ms=5000)
    await a.tick()
    assert set(a.owned) == {0, 1, 2, 3}
    b = Ownership(states[1], "b", partitions=4, lease_ms=5000)
    await b.tick()  # b joins: some partitions are assigned to it, but a's leases are still live
    assert b.owned == {}
    assert a.owns("any-channel")
    await a.tick()  # a releases what is now assigned to b
    gained, _ = await b.tick()
    assert gained
    assert not set(a.owned) & set(b.owned)
    await a.release_all()
    await b.tick()
    assert set(b.owned) == {0, 1, 2, 3}


async def test_own_lease_is_trusted_only_within_its_lifetime(states: list[ChannelLeases]) -> None:
    # A lease long enough that a slow claim round trip (a loaded machine, a cluster) still leaves it
    # trusted right after the tick.
    a = Ownership(states[0], "a", partitions=1, lease_ms=2000)
    await a.tick()
    assert a.owns("c")
    await asyncio.sleep(1.7)  # deliberately past 80% of the lease without a renewal (time, not an event)
    assert not a.owns("c")
