"""Access decisions decided once and invalidated by events (mqchat/access.py, docs/permissions.md):
verdicts memoized per principal, the membership cache's lifetimes, fed and unfed, its race with
invalidations, and the feed followed on a real Redis, lost and found again."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.processes import wait_port
from harness.redis import RedisServer, redis_binary
from mqchat import access, auth, policy, topics
from mqchat import invalidation as inv
from mqchat.storage.base import AccessScope
from mqchat.storage.invalidations import InvalidationFeed
from mqchat.storage.memory import MemoryDirectory
from mqchat.storage.redis_client import RedisClient
from tests.waiting import wait_for

NOW = 1_700_000_000_000
A = policy.Action


@dataclass
class W:
    d: MemoryDirectory
    alice: str
    bob: str
    server: str
    channel: str
    group: str


@pytest.fixture
async def w() -> W:
    d = MemoryDirectory()
    alice, bob = [(await d.create_user(n, "x", now_ms=NOW)).user_id for n in ("alice", "bob")]
    server = (await d.create_server(alice, "S", discoverable=True, now_ms=NOW)).server_id
    await d.join_server(bob, server, now_ms=NOW)
    channel = (await d.create_server_channel(alice, server, "general", now_ms=NOW)).channel_id
    group = (await d.create_channel("group", "g", alice, [], now_ms=NOW))[0].channel_id
    return W(d, alice, bob, server, channel, group)


def device(user: str) -> auth.Principal:
    return auth.Principal(user, "phone", "device", expires_at=0)


# --- verdicts --------------------------------------------------------------------------------------


def test_verdicts_judge_each_topic_once_per_principal_and_stay_bounded() -> None:
    v = access.Verdicts(device("u1"), max_topics=3)
    first = v.verdict(A.RECEIVE, "ch/c1")
    assert first == policy.if_member("c1")
    assert v.verdict(A.RECEIVE, "ch/c1") is first  # memoized: not parsed again
    assert v.verdict(A.SUBSCRIBE, "ch/c1") is not first  # per action
    assert v.verdict(A.RECEIVE, "ch/../x").kind == "deny"  # refusals are memoized as well
    for i in range(2, 5):
        v.verdict(A.RECEIVE, f"ch/c{i}")
    assert v.verdict(A.RECEIVE, "ch/c1") is not first  # the memo started again past its bound
    assert v.verdict(A.RECEIVE, "ch/c1") == first


async def test_check_with_verdicts_decides_as_without(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=60)
    for user in (w.alice, w.bob):
        v = access.Verdicts(device(user))
        for action, topic in ((A.RECEIVE, topics.stream(w.channel)), (A.RECEIVE, topics.stream(w.group)),
                              (A.SUBSCRIBE, topics.user_presence(w.alice)), (A.PUBLISH, "ch/x"),
                              (A.SUBSCRIBE, "#")):
            plain = await access.check(device(user), action, topic, cache)
            assert await access.check(device(user), action, topic, cache, verdicts=v) == plain


async def test_decide_cached_answers_without_waiting_only_what_it_knows(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=3600)
    stranger = (await w.d.create_user("stranger", "x", now_ms=NOW)).user_id
    bob, outsider = access.Verdicts(device(w.bob)), access.Verdicts(device(stranger))
    stream, presence = topics.stream(w.channel), topics.user_presence(w.alice)
    assert access.decide_cached(bob, A.RECEIVE, topics.user_events(w.bob), cache) is True  # no membership needed
    assert access.decide_cached(bob, A.RECEIVE, "ch/a/b", cache) is False
    assert access.decide_cached(bob, A.RECEIVE, stream, cache) is None  # not loaded yet: check() loads it
    assert access.decide_cached(bob, A.RECEIVE, presence, cache) is None
    for u in (w.alice, w.bob, stranger):
        await cache.channels(u)
    assert access.decide_cached(bob, A.RECEIVE, stream, cache) is True
    assert access.decide_cached(bob, A.RECEIVE, presence, cache) is True  # bob and alice share a channel
    assert access.decide_cached(outsider, A.RECEIVE, stream, cache) is False
    assert access.decide_cached(outsider, A.RECEIVE, presence, cache) is False
    assert access.decide_cached(outsider, A.SUBSCRIBE, stream, cache) is None  # a refusal is re-read by check()
    cache.invalidate(inv.user(w.bob))
    assert access.decide_cached(bob, A.RECEIVE, stream, cache) is None


# --- the membership cache --------------------------------------------------------------------------


async def test_lifetime_is_long_only_while_fed_and_every_switch_drops_everything(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=0.5, fed_ttl_s=3600)
    assert (cache.fed, cache.ttl_s) == (False, 0.5)
    await cache.channels(w.bob)
    cache.set_fed(True)
    assert (cache.fed, cache.ttl_s) == (True, 3600)
    assert cache.fresh(w.bob) is None  # loaded before the feed was followed: it may have missed events
    assert w.channel in await cache.channels(w.bob)
    cache.set_fed(False)
    assert (cache.fed, cache.ttl_s) == (False, 0.5)
    assert cache.fresh(w.bob) is None  # the feed was lost: events may be missed from now on


async def test_unfed_entries_expire(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=0.2, fed_ttl_s=3600)
    await cache.channels(w.bob)
    loaded = time.monotonic()
    assert cache.fresh(w.bob) is not None
    await wait_for(lambda: time.monotonic() > loaded + 0.25, within=5)  # not used meanwhile
    assert cache.fresh(w.bob) is None


async def test_an_entry_used_near_its_end_is_read_again_in_the_background(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=0.3, fed_ttl_s=3600)
    await cache.channels(w.bob)
    loads = cache.loads
    # the per-delivery path never waits: it keeps getting an answer while the entry is re-read
    await wait_for(lambda: cache.fresh(w.bob) is not None and cache.loads > loads, within=5)


async def test_events_drop_exactly_their_scope(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=3600)
    for u in (w.alice, w.bob):
        await cache.channels(u)
    assert cache.invalidate(inv.user(w.bob)) == 1
    assert cache.fresh(w.bob) is None
    assert cache.fresh(w.alice) is not None
    await cache.channels(w.bob)
    assert cache.invalidate(inv.server("s-elsewhere")) == 0
    assert cache.invalidate(inv.channel(w.group, None)) == 1  # alice's group channel: alice only
    assert cache.fresh(w.alice) is None
    assert cache.fresh(w.bob) is not None
    await cache.channels(w.alice)
    assert cache.invalidate(inv.server(w.server)) == 2
    await cache.channels(w.alice)
    assert cache.invalidate(None) == 1  # an event this version does not understand: everything


async def test_a_full_cache_drops_its_oldest_entries(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=3600, max_entries=10)
    names = [(await w.d.create_user(f"user{i}", "x", now_ms=NOW)).user_id for i in range(11)]
    for u in names:
        await cache.channels(u)
    assert [u for u in names if cache.fresh(u) is not None] == names[-9:]


async def test_without_servers_in_the_answer_any_server_change_drops_the_entry(w: W) -> None:
    class ChannelsOnly:  # a directory without access_scope (the flat model)
        async def channel_ids_of(self, user_id: str) -> frozenset[str]:
            return await w.d.channel_ids_of(user_id)

    cache = access.MembershipCache(ChannelsOnly(), ttl_s=3600)
    await cache.channels(w.bob)
    assert cache.invalidate(inv.server("any")) == 1


class HeldDirectory:
    """The memory directory, with ``access_scope`` held until :attr:`release` is set."""

    def __init__(self, d: MemoryDirectory) -> None:
        self.d = d
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        return (await self.access_scope(user_id)).channels

    async def access_scope(self, user_id: str) -> AccessScope:
        scope = await self.d.access_scope(user_id)  # read first: the answer goes stale while held
        self.started.set()
        await self.release.wait()
        return scope


async def test_a_load_overtaken_by_an_invalidation_is_not_kept(w: W) -> None:
    held = HeldDirectory(w.d)
    cache = access.MembershipCache(held, ttl_s=3600)
    load = asyncio.create_task(cache.channels(w.bob))
    await held.started.wait()
    await w.d.kick(w.alice, w.server, w.bob, now_ms=NOW)
    cache.invalidate(inv.user(w.bob))  # the kick's event arrives while the old answer is in flight
    held.release.set()
    assert w.channel in await load  # the waiting check gets the answer it asked for...
    assert cache.fresh(w.bob) is None  # ...but it is not kept
    assert w.channel not in await cache.channels(w.bob)


async def test_a_refused_subscribe_rereads_an_answer_older_than_a_second(w: W) -> None:
    cache = access.MembershipCache(w.d, ttl_s=3600)  # no event will come: only the re-read can help
    newcomer = (await w.d.create_user("newcomer", "x", now_ms=NOW)).user_id
    topic = topics.stream(w.channel)
    assert not (await access.check(device(newcomer), A.SUBSCRIBE, topic, cache)).allowed
    await w.d.join_server(newcomer, w.server, now_ms=NOW)
    assert not (await access.check(device(newcomer), A.SUBSCRIBE, topic, cache)).allowed  # a fresh answer
    await asyncio.sleep(access.RECHECK_REFUSED_S + 0.1)  # deliberately past the re-read age: no event
    assert not (await access.check(device(newcomer), A.RECEIVE, topic, cache)).allowed  # deliveries trust it
    assert (await access.check(device(newcomer), A.SUBSCRIBE, topic, cache)).allowed
    assert (await access.check(device(newcomer), A.RECEIVE, topic, cache)).allowed


# --- the feed on Redis -----------------------------------------------------------------------------


def restart_redis(server: RedisServer, workdir: Path) -> None:
    """A new redis-server on the stopped one's port (empty: the stream is gone too)."""
    binary = redis_binary()
    assert binary is not None
    server.proc = subprocess.Popen([binary, "--port", str(server.port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(workdir)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(server.port, server.proc, "redis-server", timeout=10)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_server.url)
    yield client
    await client.close()


async def test_the_feed_carries_changes_and_its_loss_shortens_the_lifetime(
        w: W, redis: RedisClient, redis_server: RedisServer, tmp_path: Path) -> None:
    feed = InvalidationFeed(redis)
    w.d.add_listener(feed.publish)
    cache = access.MembershipCache(w.d, ttl_s=0.5, fed_ttl_s=3600)
    other = access.MembershipCache(w.d, ttl_s=0.5, fed_ttl_s=3600)  # a second process's cache
    follower = asyncio.create_task(access.follow_invalidations(InvalidationFeed(redis), [cache, other],
                                                               block_ms=100, retry_s=0.05, max_retry_s=0.2))
    try:
        await wait_for(lambda: cache.fed and other.fed, within=10)
        for c in (cache, other):
            assert w.channel in await c.channels(w.bob)
            await c.channels(w.alice)
        start = time.monotonic()
        await w.d.kick(w.alice, w.server, w.bob, now_ms=NOW)
        await wait_for(lambda: cache.fresh(w.bob) is None and other.fresh(w.bob) is None, within=5)
        assert time.monotonic() - start < 2.0  # the event, not the hour-long lifetime
        assert cache.fresh(w.alice) is not None  # alice was not concerned
        assert w.channel not in await cache.channels(w.bob)

        redis_server.stop()
        await wait_for(lambda: not cache.fed, within=15)
        assert cache.ttl_s == 0.5
        assert cache.fresh(w.alice) is None
        restart_redis(redis_server, tmp_path)
        await wait_for(lambda: cache.fed, within=15)
        await cache.channels(w.alice)
        await w.d.join_server(w.bob, w.server, now_ms=NOW)  # published on the new server
        await wait_for(lambda: cache.fresh(w.bob) is None, within=5)
        assert w.channel in await cache.channels(w.bob)
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)


async def test_an_entry_not_understood_is_read_as_drop_everything(redis: RedisClient) -> None:
    feed = InvalidationFeed(redis)
    after = await feed.tail()
    await redis.call(redis.driver.xadd(redis.keys.acl_invalidations, {"scope": "role", "id": "r1"}))
    await feed.publish([inv.channel("c1", "s1")])
    entries = await feed.read(after, block_ms=100)
    assert [e.event for e in entries] == [None, inv.channel("c1", "s1")]
    assert inv.Invalidation.from_fields({"scope": "user"}) is None
