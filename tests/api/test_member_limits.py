"""Member lists and the member cap over HTTP: channel objects embed a bounded first page, the rest comes
from ``GET /v1/channels/{id}/members`` (every member exactly once across pages), and every path that
adds a member answers 409 ``channel_full`` / ``server_full`` at ``limits.max_channel_members``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from api.deps import EMBEDDED_MEMBERS
from mqchat.config import load_settings
from mqchat.storage.directory import DirectoryRules
from mqchat.storage.factory import open_directory
from mqchat.storage.sqlite import SqliteDirectory
from tests.api.conftest import Ctx, bearer, error, open_ctx, user
from tests.conftest import RedisServer


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


async def quiet_users(ctx: Ctx, prefix: str, n: int) -> list[str]:
    """Accounts that never log in (made in the directory: sign-ups are rate limited per address)."""
    return [(await ctx.directory.create_user(f"{prefix}{i:03d}", "x", now_ms=1)).user_id for i in range(n)]


async def walk(ctx: Ctx, h: dict[str, str], channel: str, *, limit: int, cursor: str | None = None) -> list[str]:
    seen: list[str] = []
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = ok(await ctx.client.get(f"/v1/channels/{channel}/members", headers=h, params=params))
        assert page["channel_id"] == channel
        assert len(page["members"]) <= limit
        seen += page["members"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


async def test_group_members_are_paged_and_channel_objects_embed_the_first_ones(ctx: Ctx) -> None:
    alice, at = await user(ctx.client, "alice")
    h = bearer(at)
    others = await quiet_users(ctx, "m", 30)
    created = ok(await ctx.client.post("/v1/channels", headers=h,
                                       json={"kind": "group", "name": "big", "members": others}), 201)
    cid = created["channel_id"]
    everyone = sorted([alice, *others])
    assert created["members"] == everyone[:EMBEDDED_MEMBERS]
    # the embedded cursor continues the member listing where the embedded page stops
    assert created["members"] + await walk(ctx, h, cid, limit=7, cursor=created["members_next_cursor"]) == everyone
    for limit in (1, 7, 31, 500):
        assert await walk(ctx, h, cid, limit=limit) == everyone
    listed = ok(await ctx.client.get("/v1/me/channels", headers=h))["channels"]
    assert [(c["members"], c["members_next_cursor"] is not None) for c in listed] == [
        (everyone[:EMBEDDED_MEMBERS], True)]
    inbox = ok(await ctx.client.get("/v1/me/inbox", headers=h))["channels"]
    assert inbox[0]["members"] == everyone[:EMBEDDED_MEMBERS]
    assert inbox[0]["members"] + await walk(ctx, h, cid, limit=50, cursor=inbox[0]["members_next_cursor"]) == everyone

    # a small channel embeds everyone and no cursor
    bob, _ = await user(ctx.client, "bob")
    direct = ok(await ctx.client.post("/v1/channels", headers=h, json={"kind": "direct", "members": [bob]}), 201)
    assert (direct["members"], direct["members_next_cursor"]) == (sorted([alice, bob]), None)

    # refusals: a cursor of another channel, bad limits, a channel you are not in
    other = ok(await ctx.client.get(f"/v1/channels/{direct['channel_id']}/members", headers=h, params={"limit": 1}))
    r = await ctx.client.get(f"/v1/channels/{cid}/members", headers=h, params={"cursor": other["next_cursor"]})
    assert error(r) == (422, "invalid_cursor")
    for limit in (0, 501):
        r = await ctx.client.get(f"/v1/channels/{cid}/members", headers=h, params={"limit": limit})
        assert error(r) == (422, "invalid_request")
    _, ct = await user(ctx.client, "carol")
    assert error(await ctx.client.get(f"/v1/channels/{cid}/members", headers=bearer(ct))) == (404, "channel_not_found")
    assert error(await ctx.client.get(f"/v1/channels/{cid}/members")) == (401, "unauthorized")


async def test_server_channel_members_are_the_members_who_see_it(ctx: Ctx) -> None:
    owner, ot = await user(ctx.client, "owner")
    h = bearer(ot)
    sid = ok(await ctx.client.post("/v1/servers", headers=h, json={"name": "Guild", "discoverable": True}),
             201)["server_id"]
    joined = await quiet_users(ctx, "j", 25)
    for u in joined:
        assert await ctx.directory.join_server(u, sid, now_ms=2)
    general = ok(await ctx.client.post(f"/v1/servers/{sid}/channels", headers=h, json={"name": "general"}),
                 201)["channel_id"]
    private = ok(await ctx.client.post(f"/v1/servers/{sid}/channels", headers=h,
                                       json={"name": "staff", "private": True}), 201)["channel_id"]
    assert await walk(ctx, h, general, limit=4) == sorted([owner, *joined])
    assert await walk(ctx, h, private, limit=4) == [owner]
    mine = {c["channel_id"]: c for c in ok(await ctx.client.get("/v1/me/channels", headers=h))["channels"]}
    assert mine[general]["members"] == sorted([owner, *joined])[:EMBEDDED_MEMBERS]
    assert mine[general]["members_next_cursor"] is not None
    assert (mine[private]["members"], mine[private]["members_next_cursor"]) == ([owner], None)


async def test_every_path_that_adds_a_member_answers_409_at_the_cap(tmp_path: Path,
                                                                     redis_server: RedisServer) -> None:
    capped = await SqliteDirectory(tmp_path / "capped.db", max_channel_members=3).open()
    async with open_ctx(tmp_path, redis_server, capped) as ctx:
        alice, at = await user(ctx.client, "alice")
        h = bearer(at)
        b, c, d = await quiet_users(ctx, "u", 3)
        r = await ctx.client.post("/v1/channels", headers=h, json={"kind": "group", "members": [b, c, d]})
        assert error(r) == (409, "channel_full")
        assert "3 members" in r.json()["error"]["message"]
        assert ok(await ctx.client.get("/v1/me/channels", headers=h))["channels"] == []
        cid = ok(await ctx.client.post("/v1/channels", headers=h, json={"kind": "group", "members": [b, c]}),
                 201)["channel_id"]
        r = await ctx.client.post(f"/v1/channels/{cid}/members", headers=h, json={"user_id": d})
        assert error(r) == (409, "channel_full")
        assert await walk(ctx, h, cid, limit=10) == sorted([alice, b, c])

        sid = ok(await ctx.client.post("/v1/servers", headers=h, json={"name": "G", "discoverable": True}),
                 201)["server_id"]
        code = ok(await ctx.client.post(f"/v1/servers/{sid}/invites", headers=h, json={}), 201)["code"]
        _, bt = await user(ctx.client, "bob")
        _, ct = await user(ctx.client, "carol")
        dave, dt = await user(ctx.client, "dave")
        assert ok(await ctx.client.post(f"/v1/servers/{sid}/join", headers=bearer(bt)))["joined"] is True
        assert ok(await ctx.client.post(f"/v1/invites/{code}/accept", headers=bearer(ct)))["joined"] is True
        assert error(await ctx.client.post(f"/v1/servers/{sid}/join", headers=bearer(dt))) == (409, "server_full")
        assert error(await ctx.client.post(f"/v1/invites/{code}/accept", headers=bearer(dt))) == (409, "server_full")
        assert error(await ctx.client.get(f"/v1/servers/{sid}/members", headers=bearer(dt))) == (
            404, "server_not_found")
        assert not [e for u, e in ctx.events.sent if u == dave]  # told of no join


async def test_a_user_at_their_caps_gets_409(tmp_path: Path, redis_server: RedisServer) -> None:
    capped = await SqliteDirectory(tmp_path / "capped.db", max_channels_per_user=1, max_servers_per_user=1).open()
    async with open_ctx(tmp_path, redis_server, capped) as ctx:
        _, at = await user(ctx.client, "alice")
        h = bearer(at)
        bob, = await quiet_users(ctx, "b", 1)
        ok(await ctx.client.post("/v1/channels", headers=h, json={"kind": "direct", "members": [bob]}), 201)
        r = await ctx.client.post("/v1/channels", headers=h, json={"kind": "group", "members": []})
        assert error(r) == (409, "user_channels_full")
        assert "leave one first" in r.json()["error"]["message"]
        ok(await ctx.client.post("/v1/servers", headers=h, json={"name": "S"}), 201)
        assert error(await ctx.client.post("/v1/servers", headers=h, json={"name": "T"})) == (409, "user_servers_full")


async def test_the_setting_reaches_the_directory(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, limits={"max_channel_members": 7, "max_channels_per_user": 8,
                                                        "max_servers_per_user": 9})
    directory = await open_directory(settings)
    try:
        assert isinstance(directory, DirectoryRules)
        assert (directory.max_channel_members, directory.max_channels_per_user, directory.max_servers_per_user) == (
            7, 8, 9)
    finally:
        await directory.close()
