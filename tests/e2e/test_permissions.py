"""Permissions enforced end to end with real processes (docs/permissions.md): SUBSCRIBE, delivery and
send on MQTT, history / sync / inbox / read / presence over HTTP, and changes taking effect live,
without a reconnect, by their invalidation events.

Servers, roles and moderation are set up through the directory itself (the same database the running
system uses), as the HTTP endpoints for them are built separately; like the API, that directory
publishes its changes on the system's Redis (``acl:invalidations``). The system's broker caches
channel sets for ten minutes while fed and a minute without the feed, so a change seen within a second
or two was carried by its event, never by expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from harness.client import Device
from harness.http import ApiError
from harness.redis import RedisServer
from mqchat import topics
from mqchat.permissions import NONE, Permission
from mqchat.storage.base import ServerDirectory
from mqchat.storage.factory import open_directory_from
from mqchat.storage.invalidations import InvalidationFeed
from mqchat.storage.redis_client import RedisClient
from tests.conftest import System
from tests.e2e.conftest import World
from tests.e2e.test_message_path import granted
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

P = Permission
#: ``broker.membership_cache_s`` and ``broker.membership_cache_unfed_s`` (its maximum) of the system under
#: test: far longer than any test here, so only an invalidation event can make a change take effect in time.
CACHE_S = 600
UNFED_CACHE_S = 60
#: How soon a change must take effect: its event's way through Redis to the broker, plus scheduling
#: slack on a loaded machine.
EVENT_WINDOW_S = 2.0
#: ``http.hooks_secret`` of the system under test (the EMQX/VerneMQ hooks are on).
HOOKS_SECRET = "hooks-secret-for-the-permission-tests"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def system(system_factory, redis_server: RedisServer) -> System:  # type: ignore[no-untyped-def]
    s: System = system_factory()
    s.env.update({"MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_BROKER__MEMBERSHIP_CACHE_S": str(CACHE_S),
                  "MQCHAT_BROKER__MEMBERSHIP_CACHE_UNFED_S": str(UNFED_CACHE_S),
                  "MQCHAT_HTTP__HOOKS_SECRET": HOOKS_SECRET})
    s.start()
    return s


async def open_system_directory(system: System, redis: RedisClient) -> ServerDirectory:
    """The system's directory, announcing its changes on the system's Redis as the API does."""
    url = system.env.get("MQCHAT_DIRECTORY__URL")
    d = await open_directory_from("sqlite", system.data_dir / "directory.db", url=url)
    d.add_listener(InvalidationFeed(redis).publish)
    return d


@dataclass
class Guild:
    """A server owned by alice, with bob and carol as members and a public channel ``general``."""

    directory: ServerDirectory
    server: str
    channel: str


@pytest.fixture
async def guild(system: System, world: World) -> AsyncIterator[Guild]:
    redis = RedisClient.from_url(system.env["MQCHAT_REDIS__URL"])
    d = await open_system_directory(system, redis)
    server = await d.create_server(world.alice, "Guild", discoverable=True, now_ms=now_ms())
    for user in (world.bob, world.carol):
        await d.join_server(user, server.server_id, now_ms=now_ms())
    channel = await d.create_server_channel(world.alice, server.server_id, "general", now_ms=now_ms())
    yield Guild(d, server.server_id, channel.channel_id)
    await d.close()
    await redis.close()


async def assert_delivery_stops(world: World, g: Guild, revoke: Callable[[], Awaitable[object]]) -> None:
    """Bob (revoked) and carol (a control) listen to ``general`` while alice sends a probe every 100 ms;
    after ``revoke``, bob must stop receiving within :data:`EVENT_WINDOW_S` (the cache would keep him
    for :data:`CACHE_S`), on the same connection."""
    async with (Device(world.alice_phone) as alice, Device(world.bob_phone) as bob,
                Device(world.carol_phone) as carol):
        await bob.join(g.channel)
        await carol.join(g.channel)
        assert (await alice.send(g.channel, "before")).ok
        await wait_for(lambda: [m.body for m in bob.received[g.channel]] == ["before"])
        start = time.monotonic()
        await revoke()
        sent_at: dict[str, float] = {}
        i = 0
        while time.monotonic() - start < EVENT_WINDOW_S + 0.5:
            body = f"probe-{i}"
            sent_at[body] = time.monotonic() - start
            assert (await alice.send(g.channel, body)).ok
            i += 1
            await asyncio.sleep(0.1)
        last = f"probe-{i - 1}"
        await wait_for(lambda: any(m.body == last for m in carol.received[g.channel]))  # all delivered by now
        got = [m.body for m in bob.received[g.channel][1:]]
        late = [b for b in got if sent_at[b] > EVENT_WINDOW_S]
        assert not late, f"delivered after the event window: {late}"
        assert last not in got
        assert len(carol.received[g.channel]) == i + 1
        # The revoked device is still connected, and its sends are refused.
        refused = await bob.send(g.channel, "still here?", retries=0)
        assert refused.error is not None
        assert refused.error.code == "not_member"
        assert granted(await bob.client.subscribe(topics.stream(g.channel), qos=1)) == [0x80]


async def test_view_channel_denied_mid_stream_stops_delivery(system: System, world: World, guild: Guild) -> None:
    g = guild
    await assert_delivery_stops(world, g, lambda: g.directory.set_overwrite(
        world.alice, g.channel, "member", world.bob, allow=NONE, deny=P.VIEW_CHANNEL, now_ms=now_ms()))


async def test_role_change_stops_delivery(system: System, world: World, guild: Guild) -> None:
    g = guild
    muted = await g.directory.create_role(world.alice, g.server, "Muted", NONE, position=1, now_ms=now_ms())
    await g.directory.set_overwrite(world.alice, g.channel, "role", muted.role_id, allow=NONE,
                                    deny=P.VIEW_CHANNEL, now_ms=now_ms())
    await assert_delivery_stops(world, g, lambda: g.directory.add_member_role(
        world.alice, g.server, world.bob, muted.role_id, now_ms=now_ms()))


async def test_kicked_member_stops_receiving(system: System, world: World, guild: Guild) -> None:
    g = guild
    await assert_delivery_stops(world, g, lambda: g.directory.kick(world.alice, g.server, world.bob, now_ms=now_ms()))


async def test_banned_member_stops_receiving(system: System, world: World, guild: Guild) -> None:
    g = guild
    await assert_delivery_stops(world, g, lambda: g.directory.ban(world.alice, g.server, world.bob,
                                                                 now_ms=now_ms()))


async def test_private_channel_hidden_on_mqtt_and_http(system: System, world: World, guild: Guild) -> None:
    g = guild
    staff = (await g.directory.create_server_channel(world.alice, g.server, "staff", private=True,
                                                     now_ms=now_ms())).channel_id
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        assert granted(await bob.client.subscribe(topics.stream(staff), qos=1)) == [0x80]
        assert granted(await bob.client.subscribe(topics.stream(g.channel), qos=1)) == [1]
        assert (await alice.send(staff, "secret")).ok
        refused = await bob.send(staff, "let me in", retries=0)
        assert refused.error is not None
        assert refused.error.code == "not_member"
    api, token = world.api, world.bob_phone.token
    for method, path, body in (("GET", f"/v1/channels/{staff}/messages", None),
                               ("POST", f"/v1/channels/{staff}/read", {"epoch": 1, "seq": 1}),
                               ("GET", f"/v1/channels/{staff}/presence", None)):
        with pytest.raises(ApiError) as err:
            await api._call(method, path, token, json=body)
        assert (err.value.status, err.value.code) == (404, "channel_not_found"), path
    synced = await api._call("POST", "/v1/sync", token, json={"channels": [{"channel": staff, "epoch": 1,
                                                                            "last_seq": 0}]})
    assert staff not in [c["channel"] for c in synced["channels"]]
    assert staff in synced["removed"]
    inbox = await api._call("GET", "/v1/me/inbox", token)
    listed = [c["channel_id"] for c in inbox["channels"]]
    assert g.channel in listed
    assert staff not in listed
    # Alice (the owner) sees it everywhere.
    assert [m["body"] for m in (await api.history(world.alice_phone.token, staff))["messages"]] == ["secret"]


async def test_send_messages_denied_is_forbidden(system: System, world: World, guild: Guild) -> None:
    g = guild
    await g.directory.set_overwrite(world.alice, g.channel, "role", g.server, allow=NONE, deny=P.SEND_MESSAGES,
                                    now_ms=now_ms())
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        assert granted(await bob.client.subscribe(topics.stream(g.channel), qos=1)) == [1]  # reads, cannot send
        refused = await bob.send(g.channel, "hello?", retries=0)
        assert refused.error is not None
        assert refused.error.code == "forbidden"
        assert "send_messages" in refused.error.message
        assert (await alice.send(g.channel, "announcement")).ok
        await wait_for(lambda: [m.body for m in bob.received[g.channel]] == ["announcement"])
    assert [m["body"] for m in (await world.api.history(world.bob_phone.token, g.channel))["messages"]] == [
        "announcement"]


async def test_timed_out_member_gets_timed_out(system: System, world: World, guild: Guild) -> None:
    g = guild
    await g.directory.timeout(world.alice, g.server, world.bob, now_ms() + 60_000, now_ms=now_ms())
    async with Device(world.bob_phone) as bob:
        refused = await bob.send(g.channel, "hello?", retries=0)
    assert refused.error is not None
    assert refused.error.code == "timed_out"
    assert refused.error.retry_after_ms is not None
    assert 50_000 < refused.error.retry_after_ms <= 60_000


async def test_slow_mode(system: System, world: World, guild: Guild) -> None:
    g = guild
    await g.directory.edit_server_channel(world.alice, g.channel, slow_mode_s=30, now_ms=now_ms())
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        first = await bob.send(g.channel, "one", cmid="slow-1")
        second = await bob.send(g.channel, "two", retries=0)
        again = await bob.send(g.channel, "one", cmid="slow-1")  # a retry of the accepted send
        owner = [await alice.send(g.channel, f"owner {i}") for i in range(2)]  # exempt
    assert first.ok
    assert second.error is not None
    assert second.error.code == "slow_mode"
    assert second.error.retry_after_ms is not None
    assert 20_000 < second.error.retry_after_ms <= 30_000
    assert (again.ok, again.seq) == (True, first.seq)
    assert all(a.ok for a in owner)


async def test_external_broker_hooks_follow_the_invalidations(system: System, world: World, guild: Guild) -> None:
    """The API's hooks for EMQX/VerneMQ cache channel sets like the broker, and drop them on the event."""
    g = guild
    ask = {"clientid": f"{world.bob}:phone", "username": world.bob, "topic": topics.stream(g.channel),
           "action": "subscribe"}
    async with httpx.AsyncClient(base_url=system.api, headers={"Authorization": f"Bearer {HOOKS_SECRET}"}) as http:

        async def answer() -> str:
            reply = await http.post("/hooks/emqx/authz", json=ask)
            reply.raise_for_status()
            result: str = reply.json()["result"]
            return result

        assert await answer() == "allow"  # cached now, for ten minutes unless an event says otherwise
        start = time.monotonic()
        await g.directory.kick(world.alice, g.server, world.bob, now_ms=now_ms())

        async def refused() -> bool:
            return await answer() == "deny"

        await wait_for(refused, within=EVENT_WINDOW_S * 2, what="the hooks refusing bob")
        assert time.monotonic() - start < EVENT_WINDOW_S * 2
