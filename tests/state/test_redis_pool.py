"""The Redis connection pool is bounded (``redis.max_connections``), and a CONNECT storm's
revocation checks share a few pipelined round trips instead of opening a connection each (a
1 → 10,000 run once failed with "redis: Too many connections" and a starved broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from broker.plugins import PRINCIPAL, TokenLifecyclePlugin
from broker.session import Session
from mqchat import auth
from mqchat.config import RedisSettings, load_settings
from mqchat.errors import ConfigError, StorageUnavailable
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.tokens import TokenStore
from tests.conftest import RedisServer

NAME = "pool-under-test"


@pytest_asyncio.fixture
async def observer(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A raw client that counts the connections of the client under test (by CLIENT SETNAME)."""
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        yield raw
    finally:
        await raw.aclose()


async def connections(observer: aioredis.Redis, name: str = NAME) -> int:
    clients = await observer.client_list()
    return sum(1 for c in clients if c.get("name") == name)


def named(url: str) -> str:
    return f"{url}?client_name={NAME}"


async def test_many_concurrent_commands_share_a_bounded_pool(redis_server: RedisServer,
                                                             observer: aioredis.Redis) -> None:
    redis = RedisClient.from_url(named(redis_server.url), max_connections=4)
    tokens = TokenStore(redis, refresh_ttl_s=3600, access_ttl_s=3600)
    try:
        await tokens.logout("u7", "phone")
        answers = await asyncio.gather(*(tokens.revoked_before(f"u{i % 10}", "phone") for i in range(500)))
        assert sum(1 for a in answers if a > 0) == 50  # every u7 check saw the revocation
        assert 1 <= await connections(observer) <= 4
    finally:
        await redis.close()


async def test_a_command_waits_for_a_free_connection_then_fails_as_unavailable(
        redis_server: RedisServer, observer: aioredis.Redis) -> None:
    redis = RedisClient.from_url(named(redis_server.url), max_connections=1, pool_timeout_s=0.3)
    tokens = TokenStore(redis, refresh_ttl_s=3600, access_ttl_s=3600)
    try:
        holder = asyncio.ensure_future(tokens.read_revocations("$", block_ms=3000))  # holds the one connection
        await asyncio.sleep(0)
        start = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await tokens.revoked_before("u1", "phone")
        assert 0.2 < time.monotonic() - start < 2.5
        assert await connections(observer) == 1
        holder.cancel()
    finally:
        await redis.close()


def test_a_pool_bound_below_one_is_refused() -> None:
    with pytest.raises(ConfigError):
        RedisClient.from_url("redis://127.0.0.1:1/0", max_connections=0)
    with pytest.raises(ConfigError, match=r"redis\.max_connections"):
        load_settings(redis={"url": "redis://127.0.0.1:1/0", "max_connections": 0})


async def test_a_connect_storm_s_revocation_checks_are_coalesced(redis_server: RedisServer,
                                                                 observer: aioredis.Redis) -> None:
    settings = load_settings(auth={"secret": "s" * 32})
    plugin = TokenLifecyclePlugin(auth.load_keys(settings), RedisSettings(url=named(redis_server.url)))
    redis = RedisClient.from_url(redis_server.url)
    try:
        await TokenStore(redis, refresh_ttl_s=3600, access_ttl_s=3600).logout("u3", None)
        issued = time.time() - 60  # before the logout
        sessions = []
        for i in range(3000):
            session = Session(f"u{i}:phone", max_inflight=10, max_queued=10)
            session.attributes[PRINCIPAL] = auth.Principal(f"u{i}", "phone", "device", int(time.time()) + 3600,
                                                           issued_at=issued)
            sessions.append(session)
        answers = await asyncio.gather(*(plugin.authenticate(s) for s in sessions))
        assert [i for i, ok in enumerate(answers) if not ok] == [3]
        assert await connections(observer) == 1  # one batch at a time, on one connection
    finally:
        await plugin.close()
        await redis.close()
