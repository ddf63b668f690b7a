"""``mqchat migrate-redis``: a Redis written with the earlier single-Redis key layout is brought to the
cluster-safe one, and the stores read what it held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mqchat.cli import main
from mqchat.errors import ConfigError
from mqchat.storage.base import ReadMarker
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_migrate import migrate_key_layout, new_name
from mqchat.storage.redis_state import RedisState
from tests.conftest import RedisClusterServers, RedisServer

P = "mqchat:"


async def write_earlier_layout(redis: RedisClient) -> None:
    """What an earlier mqchat left: read markers, mentions, push queues with a pending job, presence."""
    r = redis.driver
    await r.hset(P + "read:alice", mapping={"c1": "1:7", "c2": "2:3"})
    await r.zadd(P + "mentions:alice:c1", {"9": 9})
    await r.expire(P + "mentions:alice:c1", 3600)
    await r.xgroup_create(P + "push:jobs", "push-fanout", id="0", mkstream=True)
    await r.xadd(P + "push:jobs", {"id": "1", "channel": "c1"})
    await r.xreadgroup("push-fanout", "w1", {P + "push:jobs": ">"}, count=10)  # now pending
    await r.set(P + "push:fanout:1-0", "bob", ex=3600)
    await r.zadd(P + "push:retry", {"{}": 1})
    await r.zadd(P + "presence:leases", {"alice|phone|c1": 1})
    await r.hset(P + "presence:conns:alice", "phone|c1", "online|1")
    await r.hset(P + "presence:user:alice", mapping={"status": "online", "last_seen": 1, "ver": 1})
    await r.xadd(P + "presence:changes", {"user": "alice", "status": "online"})
    await r.sadd(P + "presence:online:c1", "alice")
    await r.set(P + "auth:family:f1", "kept")  # never renamed


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_server.url, P)
    yield client
    await client.close()


async def test_the_earlier_layout_is_renamed_and_presence_starts_over(redis: RedisClient) -> None:
    await write_earlier_layout(redis)
    done = await migrate_key_layout(redis)
    assert (done.renamed, done.conflicts) == (5, [])  # read, mentions, push:jobs, push:retry, fanout cursor
    assert done.deleted == 5  # four presence keys and the online set
    state, push = RedisState(redis), PushState(redis)
    assert await state.read_markers("alice", ["c1", "c2"]) == {"c1": ReadMarker(1, 7), "c2": ReadMarker(2, 3)}
    assert await state.mention_counts("alice", {"c1": 7}) == {"c1": 1}
    assert 0 < await redis.driver.ttl(redis.keys.mentions("alice", "c1")) <= 3600
    assert await push.fanout_progress("1-0") == "bob"
    pending = await redis.driver.xpending(redis.keys.push_jobs, "push-fanout")
    assert pending["pending"] == 1  # the stream moved with its consumer group and pending job
    assert await push.retries_waiting() == 1
    assert (await state.presence_of(["alice"]))["alice"].status == "offline"
    assert await state.online_count("c1") == 0
    left = sorted([k.decode() async for k in redis.driver.scan_iter(match="*")])
    assert P + "auth:family:f1" in left
    assert not [k for k in left if new_name(P, k) is not None or k.startswith(P + "presence:")]

    again = await migrate_key_layout(redis)  # idempotent
    assert (again.renamed, again.deleted, again.conflicts) == (0, 0, [])


async def test_a_key_whose_new_name_exists_is_left_and_reported(redis: RedisClient) -> None:
    await redis.driver.hset(P + "read:alice", "c1", "1:1")
    await RedisState(redis).mark_read("alice", "c1", 1, 5)  # the new version ran first
    done = await migrate_key_layout(redis)
    assert done.conflicts == [P + "read:alice"]
    assert await RedisState(redis).read_markers("alice", ["c1"]) == {"c1": ReadMarker(1, 5)}


@pytest.mark.parametrize(("key", "new"), [
    (P + "read:alice", P + "read:{alice}"),
    (P + "read:{alice}", None),
    (P + "mentions:alice:c1", P + "mentions:{alice}:c1"),
    (P + "mentions:{alice}:c1", None),
    (P + "push:sends", P + "push:{queues}:sends"),
    (P + "push:fanout:17-0", P + "push:{queues}:fanout:17-0"),
    (P + "push:{queues}:fanout:17-0", None),
    (P + "push:devices:alice", None),
    ("other:read:alice", None),
])
def test_new_names(key: str, new: str | None) -> None:
    assert new_name(P, key) == new


def test_the_command_migrates_and_refuses_a_cluster(redis_server: RedisServer,
                                                    redis_cluster: RedisClusterServers,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> None:
        redis = RedisClient.from_url(redis_server.url, P)
        await write_earlier_layout(redis)
        await redis.close()

    asyncio.run(seed())
    assert main(["migrate-redis", "--url", redis_server.url]) == 0
    assert "5 keys renamed, 5 earlier presence keys deleted" in capsys.readouterr().err
    assert main(["migrate-redis", "--url", redis_server.url]) == 0
    assert "0 keys renamed" in capsys.readouterr().err

    async def on_cluster() -> None:
        redis = RedisClient.from_url(redis_cluster.url, P)
        try:
            with pytest.raises(ConfigError, match="single Redis"):
                await migrate_key_layout(redis)
        finally:
            await redis.close()

    asyncio.run(on_cluster())
