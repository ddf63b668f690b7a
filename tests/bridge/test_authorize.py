"""Send authorization: the pure decision per draft, the slow-mode gates (in memory and on a real
redis-server), and the pipeline over a memory directory with a server, roles and overwrites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge import authorize
from bridge.authorize import MemorySlowMode, Refusal, decide
from bridge.pipeline import Inbound, Pipeline
from bridge.sequencer import Sequencer
from mqchat import schema
from mqchat.ids import Snowflake
from mqchat.permissions import DEFAULT_EVERYONE, DIRECT_MEMBER, NONE, Permission
from mqchat.storage.base import ChannelAccess, SlowModeClaim, SlowModeGate
from mqchat.storage.memory import MemoryDirectory, MemoryMessageStore
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from tests.bridge.recording import RecordingPublisher
from tests.conftest import RedisServer

NOW = 1_800_000_000_000
P = Permission


def test_no_view_channel_is_not_member() -> None:
    verdict = decide(ChannelAccess(perms=NONE), NOW)
    assert isinstance(verdict, Refusal)
    assert verdict.code == "not_member"
    assert verdict.retry_after_ms is None
    assert decide(ChannelAccess(perms=P.SEND_MESSAGES), NOW) == verdict  # send without view is nothing


def test_no_send_messages_is_forbidden_and_names_the_permission() -> None:
    verdict = decide(ChannelAccess(perms=P.VIEW_CHANNEL, timeout_until_ms=NOW + 5), NOW)
    assert isinstance(verdict, Refusal)
    assert verdict.code == "forbidden"
    assert "send_messages" in verdict.message


def test_timeout_gives_the_time_left() -> None:
    verdict = decide(ChannelAccess(perms=DEFAULT_EVERYONE, timeout_until_ms=NOW + 1234, slow_mode_s=5), NOW)
    assert verdict == Refusal("timed_out", verdict.message, 1234)  # type: ignore[union-attr]
    assert decide(ChannelAccess(perms=DEFAULT_EVERYONE, timeout_until_ms=NOW), NOW) == 0  # over exactly now


def test_slow_mode_interval_and_exemptions() -> None:
    assert decide(ChannelAccess(perms=DEFAULT_EVERYONE, slow_mode_s=7), NOW) == 7000
    assert decide(ChannelAccess(perms=DEFAULT_EVERYONE), NOW) == 0
    for exempt in (P.MANAGE_MESSAGES, P.MANAGE_CHANNELS):
        assert decide(ChannelAccess(perms=DEFAULT_EVERYONE | exempt, slow_mode_s=7), NOW) == 0
    assert decide(ChannelAccess(perms=DIRECT_MEMBER), NOW) == 0


async def check_gate(gate: SlowModeGate) -> None:
    a1, a2, b1 = (SlowModeClaim("c", "alice", "1", 10_000), SlowModeClaim("c", "alice", "2", 10_000),
                  SlowModeClaim("c", "bob", "1", 10_000))
    first = await gate.claim_slow_mode([a1, a2, b1], now_ms=NOW)
    assert first[0] == 0
    assert 9_000 < first[1] <= 10_000
    assert first[2] == 0
    assert await gate.claim_slow_mode([a1], now_ms=NOW + 10) == [0]  # a retry of the same send
    assert await gate.claim_slow_mode([SlowModeClaim("other", "alice", "3", 10_000)], now_ms=NOW) == [0]
    assert await gate.claim_slow_mode([], now_ms=NOW) == []


async def test_memory_gate() -> None:
    gate = MemorySlowMode()
    await check_gate(gate)
    assert await gate.claim_slow_mode([SlowModeClaim("c", "alice", "9", 10_000)], now_ms=NOW + 5_000) == [5_000]
    assert await gate.claim_slow_mode([SlowModeClaim("c", "alice", "9", 10_000)], now_ms=NOW + 10_000) == [0]


@pytest.fixture
async def redis_state(redis_server: RedisServer) -> AsyncIterator[RedisState]:
    redis = RedisClient.from_url(redis_server.url, prefix="t:")
    yield RedisState(redis)
    await redis.close()


async def test_redis_gate(redis_state: RedisState) -> None:
    await check_gate(redis_state)
    ttl = await redis_state._redis.driver.pttl("t:slow:c:alice")  # the slot expires with the interval
    assert 0 < ttl <= 10_000
    await redis_state._redis.driver.delete("t:slow:c:alice")
    assert await redis_state.claim_slow_mode([SlowModeClaim("c", "alice", "9", 10_000)], now_ms=NOW) == [0]


def send(user: str, channel: str, cmid: str) -> Inbound:
    return Inbound(user, "d1", channel, schema.encode(schema.SendRequest(cmid=cmid, kind="text", body="hi")))


class Guild:
    """A server owned by ``owner`` with members ``alice`` (no role) and ``mod`` (manage_messages)."""

    async def setup(self, *, slow_mode_s: int = 0) -> None:
        self.now = NOW
        self.directory = d = MemoryDirectory()
        self.ids = {n: (await d.create_user(n, "x", now_ms=1)).user_id for n in ("owner", "alice", "mod", "eve")}
        owner, alice, mod = self.ids["owner"], self.ids["alice"], self.ids["mod"]
        server = await d.create_server(owner, "Guild", discoverable=True, now_ms=1)
        self.server = server.server_id
        for u in (alice, mod):
            await d.join_server(u, self.server, now_ms=2)
        role = await d.create_role(owner, self.server, "Mod", P.MANAGE_MESSAGES, position=5, now_ms=3)
        await d.add_member_role(owner, self.server, mod, role.role_id, now_ms=3)
        self.channel = (await d.create_server_channel(owner, self.server, "general", slow_mode_s=slow_mode_s,
                                                      now_ms=4)).channel_id
        self.pub = RecordingPublisher()
        self.pipe = Pipeline(MemoryMessageStore(), d, Sequencer(Snowflake(1)), self.pub,
                             clock_ms=lambda: self.now)

    async def send(self, name: str, cmid: str) -> schema.Ack:
        self.pub.sent.clear()
        await self.pipe.process([send(self.ids[name], self.channel, cmid)])
        [ack] = self.pub.acks()
        return ack


def code(ack: schema.Ack) -> str:
    return ack.error.code if ack.error else "ok"


async def test_pipeline_enforces_view_and_send_overwrites() -> None:
    g = Guild()
    await g.setup()
    owner, alice = g.ids["owner"], g.ids["alice"]
    assert code(await g.send("alice", "1")) == "ok"
    assert code(await g.send("eve", "1")) == "not_member"  # not in the server
    await g.directory.set_overwrite(owner, g.channel, "member", alice, allow=NONE, deny=P.SEND_MESSAGES, now_ms=5)
    ack = await g.send("alice", "2")
    assert code(ack) == "forbidden"
    assert ack.error is not None
    assert "send_messages" in ack.error.message
    await g.directory.set_overwrite(owner, g.channel, "role", g.server, allow=NONE, deny=P.VIEW_CHANNEL, now_ms=6)
    assert code(await g.send("alice", "3")) == "not_member"
    assert code(await g.send("owner", "1")) == "ok"  # the owner wins


async def test_pipeline_timeout_and_kick() -> None:
    g = Guild()
    await g.setup()
    owner, alice = g.ids["owner"], g.ids["alice"]
    await g.directory.timeout(owner, g.server, alice, NOW + 60_000, now_ms=NOW)
    ack = await g.send("alice", "1")
    assert code(ack) == "timed_out"
    assert ack.error is not None
    assert ack.error.retry_after_ms == 60_000
    g.now = NOW + 60_000
    assert code(await g.send("alice", "2")) == "ok"
    await g.directory.kick(owner, g.server, alice, now_ms=g.now)
    assert code(await g.send("alice", "3")) == "not_member"


async def test_pipeline_slow_mode() -> None:
    g = Guild()
    await g.setup(slow_mode_s=10)
    assert code(await g.send("alice", "1")) == "ok"
    g.now += 4_000
    ack = await g.send("alice", "2")
    assert code(ack) == "slow_mode"
    assert ack.error is not None
    assert ack.error.retry_after_ms == 6_000
    assert code(await g.send("alice", "1")) == "ok"  # the retry of the accepted send is answered
    assert code(await g.send("mod", "1")) == "ok"
    assert code(await g.send("mod", "2")) == "ok"
    g.now += 6_000
    assert code(await g.send("alice", "2")) == "ok"


async def test_batch_keeps_arrival_order_of_accepted_sends() -> None:
    g = Guild()
    await g.setup(slow_mode_s=10)
    alice, mod = g.ids["alice"], g.ids["mod"]
    await g.pipe.process([send(mod, g.channel, "m1"), send(alice, g.channel, "a1"), send(mod, g.channel, "m2"),
                          send(alice, g.channel, "a2")])
    assert [(m.sender, m.cmid) for m in g.pub.stream()] == [(mod, "m1"), (alice, "a1"), (mod, "m2")]
    assert sorted(code(a) for a in g.pub.acks()) == ["ok", "ok", "ok", "slow_mode"]


async def test_directory_without_servers_answers_from_memberships() -> None:
    class Flat:
        def __init__(self, d: MemoryDirectory) -> None:
            self.memberships = d.memberships

    d = MemoryDirectory()
    channel, _ = await d.create_channel("group", None, "alice", ["bob"], now_ms=1)
    got = await authorize.channel_access(Flat(d), [(channel.channel_id, "bob"), (channel.channel_id, "eve")])  # type: ignore[arg-type]
    assert got == {(channel.channel_id, "bob"): ChannelAccess(perms=DIRECT_MEMBER),
                   (channel.channel_id, "eve"): ChannelAccess()}
