"""Presence and read state on a real redis-server and on a real three-node Redis Cluster (every test
runs on both: the ``redis_url`` fixture)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqchat.storage.base import ReadMarker
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState

TTL = 30_000
T0 = 1_800_000_000_000


@pytest.fixture
async def state(redis_url: str) -> AsyncIterator[RedisState]:
    redis = RedisClient.from_url(redis_url, prefix="t:")
    s = RedisState(redis)
    await s.ensure_change_group()
    yield s
    await redis.close()


async def changes(state: RedisState) -> list[tuple[str, str]]:
    entries = await state.read_changes("c1", block_ms=1)
    await state.ack_changes([i for i, _ in entries])
    return [(f["user"], f["status"]) for _, f in entries]


async def test_user_is_online_while_any_device_is(state: RedisState) -> None:
    assert await state.presence_event("u", "phone|c1", "connect", now_ms=T0, ttl_ms=TTL) == "online"
    assert await state.presence_event("u", "tablet|c2", "connect", now_ms=T0 + 1, ttl_ms=TTL) == "online"
    assert await state.presence_event("u", "phone|c1", "disconnect", now_ms=T0 + 2, ttl_ms=TTL) == "online"
    assert await state.presence_event("u", "tablet|c2", "disconnect", now_ms=T0 + 3, ttl_ms=TTL) == "offline"
    assert await changes(state) == [("u", "online"), ("u", "offline")]  # published only on change
    p = (await state.presence_of(["u", "nobody"]))
    assert p["u"].status == "offline"
    assert p["u"].last_seen == T0 + 3
    assert p["nobody"].status == "offline"
    assert p["nobody"].last_seen is None


async def test_away_only_when_every_live_device_is_away(state: RedisState) -> None:
    await state.presence_event("u", "phone|c1", "connect", now_ms=T0, ttl_ms=TTL)
    await state.presence_event("u", "tablet|c2", "connect", now_ms=T0, ttl_ms=TTL)
    assert await state.presence_event("u", "phone|c1", "status", status="away", now_ms=T0, ttl_ms=TTL) == "online"
    assert await state.presence_event("u", "tablet|c2", "status", status="away", now_ms=T0, ttl_ms=TTL) == "away"
    assert await state.presence_event("u", "tablet|c2", "status", status="online", now_ms=T0, ttl_ms=TTL) == "online"


async def test_a_late_disconnect_of_an_old_connection_does_not_remove_the_new_one(state: RedisState) -> None:
    await state.presence_event("u", "phone|old", "connect", now_ms=T0, ttl_ms=TTL)
    await state.presence_event("u", "phone|new", "connect", now_ms=T0 + 5, ttl_ms=TTL)
    assert await state.presence_event("u", "phone|old", "disconnect", now_ms=T0 + 6, ttl_ms=TTL) == "online"


async def test_refresh_and_status_never_resurrect_a_disconnected_connection(state: RedisState) -> None:
    await state.presence_event("u", "phone|c1", "connect", now_ms=T0, ttl_ms=TTL)
    await state.presence_event("u", "phone|c1", "disconnect", now_ms=T0 + 1, ttl_ms=TTL)
    assert await state.presence_event("u", "phone|c1", "refresh", now_ms=T0 + 2, ttl_ms=TTL) == "offline"
    assert await state.presence_event("u", "phone|c1", "status", status="online", now_ms=T0 + 3,
                                      ttl_ms=TTL) == "offline"


async def test_leases_of_a_crashed_broker_expire(state: RedisState) -> None:
    await state.presence_event("u", "phone|c1", "connect", now_ms=T0, ttl_ms=TTL)
    await state.presence_event("v", "phone|c2", "connect", now_ms=T0, ttl_ms=TTL)
    await state.presence_events([("v", "phone|c2", "refresh", "")], now_ms=T0 + 20_000, ttl_ms=TTL)
    assert await state.expire_leases(now_ms=T0 + TTL - 1) == 0
    assert await state.expire_leases(now_ms=T0 + TTL + 1) == 1  # only u's lease was not refreshed
    presence = await state.presence_of(["u", "v"])
    assert presence["u"].status == "offline"
    assert presence["v"].status == "online"
    assert ("u", "offline") in await changes(state)


async def test_interleaved_connects_and_disconnects_end_in_the_right_state(state: RedisState) -> None:
    """Flapping devices: any interleaving of connections ends in the state the survivors imply."""
    rng = random.Random(7)
    for round_ in range(30):
        user = f"flap{round_}"
        conns = [f"d{rng.randrange(3)}|c{i}" for i in range(rng.randrange(1, 8))]
        survivors = set(rng.sample(conns, rng.randrange(0, len(conns) + 1)))
        # each connection's own events stay in order; connections interleave at random
        pending = {c: ["connect"] + ([] if c in survivors else ["disconnect"]) for c in dict.fromkeys(conns)}
        ordered: list[tuple[str, str]] = []
        while any(pending.values()):
            c = rng.choice([c for c, ops in pending.items() if ops])
            ordered.append((c, pending[c].pop(0)))
        for c, op in ordered:
            await state.presence_event(user, c, op, now_ms=T0, ttl_ms=TTL)  # type: ignore[arg-type]
        expected = "online" if survivors else "offline"
        assert (await state.presence_of([user]))[user].status == expected, (ordered, survivors)


async def test_change_stream_order_matches_event_order(state: RedisState) -> None:
    for i in range(20):
        await state.presence_event("u", f"phone|c{i}", "connect", now_ms=T0 + 2 * i, ttl_ms=TTL)
        await state.presence_event("u", f"phone|c{i}", "disconnect", now_ms=T0 + 2 * i + 1, ttl_ms=TTL)
    assert await changes(state) == [("u", "online"), ("u", "offline")] * 20


async def test_online_sets_count_without_listing(state: RedisState) -> None:
    await state.set_online("u1", ["c1", "c2"], True)
    await state.set_online("u2", ["c1"], True)
    await state.set_online("u1", ["c1"], False)
    assert await state.online_count("c1") == 1
    assert await state.online_count("c2") == 1


async def test_read_markers_only_move_forward(state: RedisState) -> None:
    assert await state.mark_read("u", "c1", 1, 10) == ReadMarker(1, 10)
    assert await state.mark_read("u", "c1", 1, 4) == ReadMarker(1, 10)
    assert await state.mark_read("u", "c1", 1, 12) == ReadMarker(1, 12)
    assert await state.mark_read("u", "c1", 2, 1) == ReadMarker(2, 1)  # a new epoch replaces the marker
    assert await state.mark_read("u", "c1", 2, 0) == ReadMarker(2, 1)
    # Callers pass the channel's current epoch only: a marker of any other epoch is stale, so a
    # marker stored under a wrong epoch is replaced by the next one instead of sticking.
    assert await state.mark_read("u", "c1", 7, 20) == ReadMarker(7, 20)
    assert await state.mark_read("u", "c1", 2, 3) == ReadMarker(2, 3)
    await state.mark_read_many([("u", "c2", 1, 3), ("u", "c2", 1, 2), ("v", "c2", 1, 8)])
    assert await state.read_markers("u", ["c1", "c2", "c3"]) == {
        "c1": ReadMarker(2, 3), "c2": ReadMarker(1, 3), "c3": None}


async def test_a_batch_of_marker_moves_ends_where_moving_them_one_by_one_does(state: RedisState) -> None:
    """mark_read_many collapses and batches (one script call per slot); the end state, markers and
    mentions cleared, must be that of read_marker.lua applied to each marker in order. Users
    ``b:*`` get the batch, users ``o:*`` the same markers one at a time."""
    rng = random.Random(7)
    users, channels = [f"u{i}" for i in range(30)], ["c1", "c2", "c3"]
    markers = [(rng.choice(users), rng.choice(channels), rng.choice([1, 1, 1, 2]), rng.randint(0, 40))
               for _ in range(600)]
    mentions = [(u, c, seq) for u in users for c in channels for seq in (5, 20, 35)]
    await state.add_mentions([(f"b:{u}", c, seq) for u, c, seq in mentions]
                             + [(f"o:{u}", c, seq) for u, c, seq in mentions])
    await state.mark_read_many([(f"b:{u}", c, epoch, seq) for u, c, epoch, seq in markers])
    for u, c, epoch, seq in markers:
        await state.mark_read(f"o:{u}", c, epoch, seq)
    for u in users:
        batched, one_by_one = (await state.read_markers(f"b:{u}", channels),
                               await state.read_markers(f"o:{u}", channels))
        assert batched == one_by_one
        assert (await state.mention_counts(f"b:{u}", dict.fromkeys(channels, 0))
                == await state.mention_counts(f"o:{u}", dict.fromkeys(channels, 0)))
    assert any(m is not None for m in batched.values())


async def test_a_marker_of_a_new_epoch_in_the_middle_of_a_batch_replaces_a_higher_one(state: RedisState) -> None:
    await state.mark_read_many([("u", "c1", 1, 9), ("u", "c1", 2, 3), ("u", "c1", 2, 1), ("u", "c2", 1, 4),
                                ("u", "c2", 1, 6)])
    assert await state.read_markers("u", ["c1", "c2"]) == {"c1": ReadMarker(2, 3), "c2": ReadMarker(1, 6)}
    await state.mark_read_many([("u", "c1", 1, 2)])  # another epoch: stale, replaced as one by one would
    assert await state.read_markers("u", ["c1"]) == {"c1": ReadMarker(1, 2)}


async def test_mentions_above_the_marker_are_counted_and_cleared_by_reading(state: RedisState) -> None:
    await state.add_mentions([("u", "c1", 3), ("u", "c1", 7), ("u", "c1", 9), ("u", "c2", 1)])
    assert await state.mention_counts("u", {"c1": 0, "c2": 0}) == {"c1": 3, "c2": 1}
    await state.mark_read("u", "c1", 1, 7)
    assert await state.mention_counts("u", {"c1": 7}) == {"c1": 1}


async def test_pipelined_scripts_survive_a_redis_that_forgot_them(state: RedisState, redis_url: str) -> None:
    raw = RedisClient.from_url(redis_url)
    await raw.driver.script_flush()  # as after a Redis restart (on a cluster: every primary)
    await raw.close()
    await state.presence_events([("u", "phone|c1", "connect", "online")], now_ms=T0, ttl_ms=TTL)
    await state.mark_read_many([("u", "c1", 1, 5)])
    assert (await state.presence_of(["u"]))["u"].status == "online"
    assert await state.read_markers("u", ["c1"]) == {"c1": ReadMarker(1, 5)}


async def test_fanout_jobs_carry_what_the_push_workers_need(state: RedisState) -> None:
    from mqchat.storage.base import StoredMessage

    msgs = [StoredMessage(10 + i, "c1", i, 1, "alice", "phone", f"m{i}", T0 + i, "text", f"hi {i}") for i in (1, 2)]
    await state.enqueue_fanout(msgs)
    entries: Any = await state._r.xrange("t:push:{queues}:jobs")
    assert [{k.decode(): v.decode() for k, v in e[1].items()} for e in entries] == [
        {"id": "11", "channel": "c1", "epoch": "1", "seq": "1", "sender": "alice", "device": "phone",
         "ts": str(T0 + 1), "kind": "text", "body": "hi 1"},
        {"id": "12", "channel": "c1", "epoch": "1", "seq": "2", "sender": "alice", "device": "phone",
         "ts": str(T0 + 2), "kind": "text", "body": "hi 2"},
    ]


async def test_many_fanout_jobs_are_appended_in_order_in_several_script_calls(state: RedisState) -> None:
    from mqchat.storage.base import StoredMessage
    from mqchat.storage.redis_client import STREAM_APPEND_BATCH

    n = 2 * STREAM_APPEND_BATCH + 7
    msgs = [StoredMessage(10**18 + i, "c1", i, 1, "alice", "phone", f"m{i}", T0 + i, "text", f"é {i} \" {{}}")
            for i in range(1, n + 1)]
    await state.enqueue_fanout(msgs)
    entries: Any = await state._r.xrange("t:push:{queues}:jobs")
    fields = [{k.decode(): v.decode() for k, v in e[1].items()} for e in entries]
    assert [f["seq"] for f in fields] == [str(i) for i in range(1, n + 1)]
    assert fields[-1]["id"] == str(10**18 + n)  # 64-bit ids survive as text
    assert fields[0]["body"] == 'é 1 " {}'
    await state.enqueue_fanout([])  # nothing to do, no call


async def test_in_privacy_mode_fanout_jobs_carry_no_text(state: RedisState) -> None:
    from mqchat.storage.base import StoredMessage

    secret = "the launch code is 0000"
    await state.enqueue_fanout([StoredMessage(7, "c1", 1, 1, "alice", "phone", "m1", T0, "text", secret)],
                               bodies=False)
    raw = state._r
    entries: Any = await raw.xrange("t:push:{queues}:jobs")
    (entry,) = entries
    fields = {k.decode(): v.decode() for k, v in entry[1].items()}
    assert fields["body"] == ""
    assert fields["seq"] == "1"
    keys = [k async for k in raw.scan_iter(match="t:*")]  # on a cluster: every primary
    assert keys
    dump = [str(await raw.dump(k)) for k in keys]
    assert not any("launch code" in d for d in dump)
