"""The whole system (``mqchat up``: broker, bridge, API, workers) on a three-node Redis Cluster: a
message sent, acknowledged, delivered and counted unread, a read marker, presence online and offline."""

from __future__ import annotations

import pytest

from harness.client import Device
from mqchat.storage.keys import Keys, presence_shard
from mqchat.storage.redis_client import RedisClient
from tests.conftest import RedisClusterServers, System
from tests.e2e.conftest import World
from tests.e2e.test_presence import PresenceWatcher, watcher
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

__all__ = ["watcher"]  # the presence watcher fixture, on this module's system


@pytest.fixture
def system(system_factory, redis_cluster: RedisClusterServers) -> System:  # type: ignore[no-untyped-def]
    """``mqchat up`` with ``redis.url`` pointing at the (emptied) session cluster."""
    for port in redis_cluster.ports:
        redis_cluster.cli(port, "flushall")
        redis_cluster.cli(port, "script", "flush")
    s: System = system_factory()
    s.env["MQCHAT_REDIS__URL"] = redis_cluster.url
    s.start()
    return s


async def test_messages_unread_counts_and_presence_on_a_redis_cluster(
        system: System, world: World, watcher: PresenceWatcher, redis_cluster: RedisClusterServers) -> None:
    api = world.api
    async with Device(world.bob_phone) as bob:
        await bob.join(world.channel)
        async with Device(world.alice_phone) as alice:
            await watcher.wait_for(world.alice, "online", within=10)
            ack = await alice.send(world.channel, "hello over the cluster")
            assert ack.ok
            await wait_for(lambda: [m.body for m in bob.received[world.channel]] == ["hello over the cluster"],
                           10, what="bob receives alice's message")

            inbox = await api._call("GET", "/v1/me/inbox", world.bob_phone.token)
            entry = next(c for c in inbox["channels"] if c["channel_id"] == world.channel)
            assert (entry["last_seq"], entry["read_seq"], entry["unread"], inbox["badge"]) == (ack.seq, 0, 1, 1)
            marked = await api._call("POST", f"/v1/channels/{world.channel}/read", world.bob_phone.token,
                                     json={"seq": ack.seq})
            assert (marked["seq"], marked["unread"], marked["badge"]) == (ack.seq, 0, 0)
        await watcher.wait_for(world.alice, "offline", within=10)

    # The state is in the cluster, spread over its nodes by hash tag.
    redis = RedisClient.from_url(redis_cluster.url)
    try:
        keys = Keys()
        assert await redis.driver.hget(keys.read(world.bob), world.channel) == f"1:{ack.seq}".encode()
        assert (await redis.driver.hget(keys.user_presence(world.alice), "status")) == b"offline"
        assert await redis.driver.xlen(keys.changes(presence_shard(world.alice))) >= 2
        per_node = [int(redis_cluster.cli(p, "dbsize").strip()) for p in redis_cluster.ports]
        assert sum(1 for n in per_node if n > 0) >= 2, per_node
    finally:
        await redis.close()
