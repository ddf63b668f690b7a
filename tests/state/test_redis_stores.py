"""The other Redis stores (tokens, rate limits, slow mode, the message log, thumbnail jobs) on a
single redis-server and on a three-node Redis Cluster (``redis_url``), and the cluster URL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from mqchat.errors import ConfigError
from mqchat.ratelimit import Rule
from mqchat.storage.base import SlowModeClaim, StoredMessage
from mqchat.storage.message_log import MessageEvent, MessageLog
from mqchat.storage.redis_client import RedisClient, cluster_nodes
from mqchat.storage.redis_ratelimit import RedisRateLimiter
from mqchat.storage.redis_state import RedisState
from mqchat.storage.thumbnail_jobs import ThumbnailJobs
from mqchat.storage.tokens import ALL_DEVICES, TokenStore


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_url, "t:")
    yield client
    await client.close()


async def test_the_client_knows_what_it_talks_to(redis: RedisClient, redis_url: str) -> None:
    await redis.ping()
    assert redis.cluster == redis_url.startswith("redis+cluster://")


async def test_refresh_tokens_rotate_and_a_reuse_revokes_the_family(redis: RedisClient) -> None:
    tokens = TokenStore(redis, refresh_ttl_s=600, access_ttl_s=600)
    first = await tokens.issue("alice", "phone")
    rotated = await tokens.rotate(first)
    assert (rotated.outcome, rotated.user_id, rotated.device_id) == ("ok", "alice", "phone")
    tail = await tokens.revocations_tail()
    reused = await tokens.rotate(first)  # the old token again: a stolen copy
    assert (reused.outcome, reused.user_id, reused.device_id) == ("reused", "alice", "phone")
    assert (await tokens.rotate(rotated.token)).outcome == "unknown"  # the family is gone
    assert await tokens.is_revoked("alice", "phone", time.time() - 60)
    assert not await tokens.is_revoked("alice", "laptop", time.time() - 60)
    (revocation,) = await tokens.read_revocations(tail, block_ms=1)
    assert (revocation.user_id, revocation.device_id) == ("alice", "phone")


async def test_logout_all_ends_every_login_of_the_user(redis: RedisClient) -> None:
    tokens = TokenStore(redis, refresh_ttl_s=600, access_ttl_s=600)
    mine = [await tokens.issue("alice", d) for d in ("phone", "laptop", "tablet")]
    other = await tokens.issue("bob", "phone")
    assert await tokens.logout("alice", None) == 3
    assert [(await tokens.rotate(t)).outcome for t in mine] == ["unknown"] * 3
    assert (await tokens.rotate(other)).outcome == "ok"
    assert await tokens.revoked_before("alice", ALL_DEVICES) > 0
    assert await tokens.logout("alice", None) == 0  # nothing left: the index was emptied too


async def test_rate_limits_and_slow_mode(redis: RedisClient) -> None:
    limiter = RedisRateLimiter(redis)
    rule = Rule(limit=3, period_ms=60_000)
    decisions = [await limiter.hit("login", "1.2.3.4", rule) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after_ms > 0
    assert (await limiter.hit("login", "5.6.7.8", rule)).allowed
    state = RedisState(redis)
    claims = [SlowModeClaim(c, u, "m1", 60_000) for c in ("c1", "c2") for u in ("alice", "bob")]
    assert await state.claim_slow_mode(claims, now_ms=0) == [0, 0, 0, 0]
    again = await state.claim_slow_mode([SlowModeClaim("c1", "alice", "m2", 60_000),
                                         SlowModeClaim("c1", "alice", "m1", 60_000)], now_ms=0)
    assert again[0] > 0  # another send waits
    assert again[1] == 0  # a retry of the same send passes


async def test_the_message_log_is_read_by_a_consumer_group(redis: RedisClient) -> None:
    log = MessageLog(redis)
    await log.ensure_group()
    messages = [StoredMessage(10 + i, "c1", i, 1, "alice", "phone", f"m{i}", 0, "text", "hi") for i in (1, 2, 3)]
    await log.append_messages(messages)
    entries = await log.read("indexer-1", count=10, block_ms=1)
    assert [MessageEvent.from_fields(f) for _, f in entries] == [MessageEvent.of(m) for m in messages]
    await log.ack([i for i, _ in entries[:2]])
    assert [i for i, _ in await log.claim("indexer-2", min_idle_ms=0, count=10)] == [entries[2][0]]
    assert await log.length() == 3
    assert await log.last_id() == entries[2][0]


async def test_thumbnail_jobs_are_taken_and_acknowledged(redis: RedisClient) -> None:
    jobs = ThumbnailJobs(redis)
    await jobs.ensure_group()
    await jobs.enqueue("up1")
    (taken,) = await jobs.take("w1", count=5, block_ms=1, claim_idle_ms=60_000)
    assert taken[1] == "up1"
    await jobs.ack(taken[0])
    assert await jobs.take("w2", count=5, block_ms=1, claim_idle_ms=0) == []


@pytest.mark.parametrize(("url", "nodes", "user", "password", "tls"), [
    ("redis+cluster://10.0.0.1:7000", [("10.0.0.1", 7000)], None, None, False),
    ("redis+cluster://a:7000,b:7001,c:7002/", [("a", 7000), ("b", 7001), ("c", 7002)], None, None, False),
    ("rediss+cluster://app:s%40cret@a:7000,[::1]:7001", [("a", 7000), ("::1", 7001)], "app", "s@cret", True),
    ("redis+cluster://:pw@a:7000", [("a", 7000)], None, "pw", False),
])
def test_cluster_urls_name_nodes_and_credentials(url: str, nodes: list[tuple[str, int]], user: str | None,
                                                 password: str | None, tls: bool) -> None:
    assert cluster_nodes(url) == (nodes, user, password, tls)


@pytest.mark.parametrize(("url", "message"), [
    ("redis+cluster://", "bad Redis Cluster node"),
    ("redis+cluster://a", "expected host:port"),
    ("redis+cluster://a:7000,b", "bad Redis Cluster node 'b'"),
    ("redis+cluster://a:70000", "expected host:port"),
    ("redis+cluster://a:7000/1", "no database"),
    ("redis+cluster://a:7000?ssl=true", "no database"),
    ("redis://a:7000", "not a Redis Cluster URL"),
])
def test_a_malformed_cluster_url_is_a_clear_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        cluster_nodes(url)
    if url.startswith("redis+cluster"):
        with pytest.raises(ConfigError):
            RedisClient.from_url(url)


async def test_a_transaction_across_hash_slots_is_refused_on_a_cluster(redis: RedisClient) -> None:
    from redis.asyncio.client import Pipeline

    from mqchat.errors import StorageError

    def build(pipe: Pipeline) -> None:
        pipe.set("t:{a}:x", "1")
        pipe.set("t:{b}:y", "1")

    if redis.cluster:
        with pytest.raises(StorageError, match="across hash slots"):
            await redis.pipelined(build, transaction=True)
        assert await redis.driver.get("t:{a}:x") is None  # nothing was sent
    else:
        assert await redis.pipelined(build, transaction=True) == [True, True]


def test_a_key_prefix_with_braces_is_a_settings_error() -> None:
    from mqchat.config import load_settings

    with pytest.raises(ConfigError, match="braces"):
        load_settings(redis={"key_prefix": "app{1}:"})
