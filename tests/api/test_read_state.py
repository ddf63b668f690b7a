"""Read markers, unread counts, mentions, inbox, sync and channel presence through the HTTP API, with
messages sent through the real bridge pipeline (recording its MQTT side)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.pipeline import Inbound, Pipeline
from bridge.sequencer import Sequencer
from mqchat import schema
from mqchat.ids import Snowflake
from mqchat.storage.sqlite import SqliteDirectory
from tests.api.conftest import Ctx, bearer, error, user


class Discard:
    async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        return None


async def sender(ctx: Ctx, tmp_dir) -> Pipeline:  # type: ignore[no-untyped-def]
    directory = await SqliteDirectory(tmp_dir / "directory.db").open()
    return Pipeline(ctx.store, directory, Sequencer(Snowflake(2)), Discard(), read_state=ctx.state)


def sends(user_id: str, channel: str, bodies: list[str], prefix: str) -> list[Inbound]:
    return [Inbound(user_id, "phone", channel, schema.encode(schema.SendRequest(cmid=f"{prefix}{i}", kind="text",
                                                                              body=b)))
            for i, b in enumerate(bodies)]


async def test_unread_excludes_own_messages_and_read_markers_move_forward_only(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    bob, bt = await user(c, "bob")
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": [bob]}, headers=bearer(at))).json()[
        "channel_id"]
    pipe = await sender(ctx, tmp_path)
    await pipe.process(sends(alice, gid, [f"a{i}" for i in range(5)], "a"))   # seq 1-5 from alice
    await pipe.process(sends(bob, gid, ["b0", f"hey <@{alice}>"], "b"))      # seq 6-7 from bob, 7 mentions alice

    inbox_a = (await c.get("/v1/me/inbox", headers=bearer(at))).json()
    inbox_b = (await c.get("/v1/me/inbox", headers=bearer(bt))).json()
    a_entry, b_entry = inbox_a["channels"][0], inbox_b["channels"][0]
    assert (a_entry["last_seq"], a_entry["read_seq"], a_entry["unread"], a_entry["mentions"]) == (7, 5, 2, 1)
    assert (b_entry["read_seq"], b_entry["unread"], b_entry["mentions"]) == (7, 0, 0)
    assert a_entry["last_message"]["body"] == f"hey <@{alice}>"
    assert inbox_a["badge"] == 2

    r = (await c.post(f"/v1/channels/{gid}/read", json={"seq": 6}, headers=bearer(at))).json()
    assert (r["seq"], r["unread"], r["mentions"], r["badge"]) == (6, 1, 1, 1)
    r = (await c.post(f"/v1/channels/{gid}/read", json={"seq": 3}, headers=bearer(at))).json()
    assert (r["seq"], r["unread"]) == (6, 1)  # an older marker never moves it back
    r = (await c.post(f"/v1/channels/{gid}/read", json={"seq": 7}, headers=bearer(at))).json()
    assert (r["unread"], r["mentions"], r["badge"]) == (0, 0, 0)
    reads = [e for u, e in ctx.events.sent if u == alice and e["type"] == "read"]
    assert [e["seq"] for e in reads] == [6, 6, 7]

    assert error(await c.post(f"/v1/channels/{gid}/read", json={"seq": 8}, headers=bearer(at))) == (
        422, "seq_out_of_range")
    assert error(await c.post(f"/v1/channels/{gid}/read", json={"seq": -1}, headers=bearer(at))) == (
        422, "invalid_request")
    _, ct = await user(c, "carol")
    assert error(await c.post(f"/v1/channels/{gid}/read", json={"seq": 1}, headers=bearer(ct))) == (
        404, "channel_not_found")


async def test_joining_a_channel_does_not_make_its_history_unread(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    bob, bt = await user(c, "bob")
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(at))).json()[
        "channel_id"]
    pipe = await sender(ctx, tmp_path)
    await pipe.process(sends(alice, gid, ["old"] * 3, "x"))
    await c.post(f"/v1/channels/{gid}/members", json={"user_id": bob}, headers=bearer(at))
    await pipe.process(sends(alice, gid, ["new"], "y"))
    assert (await c.get("/v1/me/inbox", headers=bearer(bt))).json()["badge"] == 1
    assert (bob, {"type": "membership", "channel": gid, "action": "added", "by": alice}) in ctx.events.sent
    await c.delete(f"/v1/channels/{gid}/members/{bob}", headers=bearer(at))
    assert (bob, {"type": "membership", "channel": gid, "action": "removed", "by": alice}) in ctx.events.sent


async def test_inbox_is_sorted_by_recent_activity(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    ids = [(await c.post("/v1/channels", json={"kind": "group", "name": n, "members": []},
                         headers=bearer(at))).json()["channel_id"] for n in ("one", "two", "three")]
    pipe = await sender(ctx, tmp_path)
    await pipe.process(sends(alice, ids[0], ["first"], "p"))
    inbox = (await c.get("/v1/me/inbox", headers=bearer(at))).json()["channels"]
    assert inbox[0]["channel_id"] == ids[0]
    assert [e["name"] for e in inbox[1:]] == ["three", "two"]  # newest created first when no messages


async def test_sync_returns_exactly_what_was_missed_per_channel(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    g1, g2, g3 = [(await c.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(at))).json()[
        "channel_id"] for _ in range(3)]
    pipe = await sender(ctx, tmp_path)
    for ch, n in ((g1, 10), (g2, 3), (g3, 4)):
        await pipe.process(sends(alice, ch, [f"{ch}:{i}" for i in range(n)], "s"))
    body = {"channels": [{"channel": g1, "epoch": 1, "last_seq": 6}, {"channel": g2, "epoch": 9, "last_seq": 1},
                         {"channel": "c-gone", "epoch": 1, "last_seq": 3}], "limit": 3}
    out = (await c.post("/v1/sync", json=body, headers=bearer(at))).json()
    by = {ch["channel"]: ch for ch in out["channels"]}
    assert (by[g1]["status"], [m["seq"] for m in by[g1]["messages"]], by[g1]["has_more"]) == ("ok", [7, 8, 9], True)
    assert (by[g2]["status"], [m["seq"] for m in by[g2]["messages"]]) == ("reset", [1, 2, 3])
    assert (by[g3]["status"], [m["seq"] for m in by[g3]["messages"]]) == ("new", [2, 3, 4])
    assert out["removed"] == ["c-gone"]
    more = (await c.post("/v1/sync", json={"channels": [{"channel": g1, "epoch": 1, "last_seq": 9}]},
                         headers=bearer(at))).json()
    g1_more = next(ch for ch in more["channels"] if ch["channel"] == g1)
    assert ([m["seq"] for m in g1_more["messages"]], g1_more["has_more"]) == ([10], False)
    for bad in ({"channels": [{"channel": "a/b", "epoch": 1, "last_seq": 0}]}, {"limit": 0},
                {"channels": [{"channel": g1, "epoch": 0, "last_seq": 0}]}, {"channels": "x"}):
        assert error(await c.post("/v1/sync", json=bad, headers=bearer(at))) == (422, "invalid_request"), bad


async def test_sync_past_the_end_of_a_channel_is_a_reset(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(at))).json()[
        "channel_id"]
    pipe = await sender(ctx, tmp_path)
    await pipe.process(sends(alice, gid, ["a", "b", "c"], "s"))
    out = (await c.post("/v1/sync", json={"channels": [{"channel": gid, "epoch": 1, "last_seq": 50}]},
                        headers=bearer(at))).json()
    (entry,) = out["channels"]
    assert (entry["status"], entry["last_seq"], [m["seq"] for m in entry["messages"]]) == ("reset", 3, [1, 2, 3])


async def test_one_sync_answer_carries_a_bounded_number_of_messages(ctx: Ctx, tmp_path,  # type: ignore[no-untyped-def]
                                                                     monkeypatch) -> None:
    from api import state_routes

    monkeypatch.setattr(state_routes, "SYNC_MAX_MESSAGES", 10)
    c = ctx.client
    alice, at = await user(c, "alice")
    g1, g2, g3 = [(await c.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(at))).json()[
        "channel_id"] for _ in range(3)]
    pipe = await sender(ctx, tmp_path)
    for ch, n in ((g1, 8), (g2, 3), (g3, 6)):
        await pipe.process(sends(alice, ch, [f"{ch}:{i}" for i in range(n)], "s"))
    cursors = {g1: 0, g2: 0, g3: 0}
    got: dict[str, list[int]] = {g1: [], g2: [], g3: []}
    calls = 0
    while True:
        calls += 1
        body = {"channels": [{"channel": ch, "epoch": 1, "last_seq": seq} for ch, seq in cursors.items()]}
        out = (await c.post("/v1/sync", json=body, headers=bearer(at))).json()
        assert sum(len(ch["messages"]) for ch in out["channels"]) <= 10
        for ch in out["channels"]:
            got[ch["channel"]] += [m["seq"] for m in ch["messages"]]
            if ch["messages"]:
                cursors[ch["channel"]] = ch["messages"][-1]["seq"]
        if not any(ch["has_more"] for ch in out["channels"]):
            break
        assert calls < 5
    # every missed message arrives exactly once, in order, over as few calls as the bound allows
    assert got == {g1: list(range(1, 9)), g2: [1, 2, 3], g3: list(range(1, 7))}
    assert calls == 2


async def test_channel_presence_counts_online_members(ctx: Ctx) -> None:
    c = ctx.client
    _alice, at = await user(c, "alice")
    bob, _ = await user(c, "bob")
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": [bob]}, headers=bearer(at))).json()[
        "channel_id"]
    assert (await c.get(f"/v1/channels/{gid}/presence", headers=bearer(at))).json() == {"channel": gid, "online": 0}
    await ctx.state.set_online(bob, [gid], True)
    assert (await c.get(f"/v1/channels/{gid}/presence", headers=bearer(at))).json()["online"] == 1


async def test_a_read_marker_of_another_epoch_is_refused_and_a_stale_one_heals(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    bob, _ = await user(c, "bob")
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": [bob]}, headers=bearer(at))).json()[
        "channel_id"]
    pipe = await sender(ctx, tmp_path)
    await pipe.process(sends(bob, gid, [f"b{i}" for i in range(30)], "b"))
    r = (await c.post(f"/v1/channels/{gid}/read", json={"seq": 10, "epoch": 1}, headers=bearer(at))).json()
    assert (r["seq"], r["unread"]) == (10, 20)

    assert error(await c.post(f"/v1/channels/{gid}/read", json={"seq": 20, "epoch": 7}, headers=bearer(at))) == (
        409, "epoch_mismatch")
    inbox = (await c.get("/v1/me/inbox", headers=bearer(at))).json()
    assert (inbox["channels"][0]["read_seq"], inbox["channels"][0]["unread"], inbox["badge"]) == (10, 20, 20)

    # A marker of a made-up epoch stored before this check existed is healed by the next correct one.
    await ctx.state.mark_read(alice, gid, 7, 20)
    r = (await c.post(f"/v1/channels/{gid}/read", json={"seq": 12}, headers=bearer(at))).json()
    assert (r["epoch"], r["seq"], r["unread"]) == (1, 12, 18)


async def test_only_members_are_mentioned_and_mentions_expire(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    c = ctx.client
    alice, at = await user(c, "alice")
    bob, bt = await user(c, "bob")
    carol, _ = await user(c, "carol")  # exists, but is not in the channel
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": [bob]}, headers=bearer(at))).json()[
        "channel_id"]
    pipe = await sender(ctx, tmp_path)
    await pipe.process(sends(alice, gid, [f"hi <@{bob}> <@{carol}> <@u-made-up-{i}>" for i in range(3)], "m"))

    raw = aioredis.Redis.from_url(ctx.state_url, decode_responses=True)
    try:
        keys = sorted(await raw.keys("*mentions:*"))
        assert keys == [ctx.state.keys.mentions(bob, gid)]  # nothing for carol nor for made-up ids
        assert 0 < await raw.ttl(keys[0]) <= 30 * 86_400
    finally:
        await raw.aclose()
    inbox = (await c.get("/v1/me/inbox", headers=bearer(bt))).json()
    assert inbox["mentions"] == 3


async def test_inbox_and_my_channels_come_in_pages_and_cursors_are_checked(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = ctx.client
    alice, at = await user(c, "alice")
    made = [(await c.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(at))).json()[
        "channel_id"] for _ in range(7)]
    pipe = await sender(ctx, tmp_path)
    for i, ch in enumerate(made):
        await pipe.process(sends(alice, ch, [f"m{i}"], f"p{i}"))

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await c.get("/v1/me/inbox", params=params, headers=bearer(at))).json()
        assert len(page["channels"]) <= 3
        assert page["badge"] == 0  # own messages; counted over every channel, not the page
        seen += [e["channel_id"] for e in page["channels"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))  # most recent activity first, each exactly once

    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await c.get("/v1/me/channels", params=params, headers=bearer(at))).json()
        ids += [ch["channel_id"] for ch in page["channels"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == sorted(made)

    other = (await c.get("/v1/me/channels", params={"limit": 2}, headers=bearer(at))).json()["next_cursor"]
    for bad in (other, "!!!", "aW5ib3g"):  # another listing's cursor, garbage, a cursor with no position
        assert error(await c.get("/v1/me/inbox", params={"cursor": bad}, headers=bearer(at))) == (
            422, "invalid_cursor"), bad
    assert error(await c.get("/v1/me/inbox", params={"limit": 501}, headers=bearer(at))) == (422, "invalid_request")
