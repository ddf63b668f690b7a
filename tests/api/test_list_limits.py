"""Every list endpoint is paged or bounded: servers, invites and bans come a page at a time (each entry
exactly once), and roles, server channels and overwrites stop at their caps with a stable code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mqchat.storage.directory import DirectoryRules
from tests.api.conftest import PW, Ctx, bearer, error, user


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


async def walk(ctx: Ctx, h: dict[str, str], path: str, field: str, key: str, *, limit: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = ok(await ctx.client.get(path, headers=h, params=params))
        assert len(page[field]) <= limit
        seen += [entry[key] for entry in page[field]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


async def test_my_servers_invites_and_bans_are_paged(ctx: Ctx) -> None:
    _, at = await user(ctx.client, "alice")
    h = bearer(at)
    servers = [ok(await ctx.client.post("/v1/servers", headers=h, json={"name": f"S{i}"}), 201)["server_id"]
               for i in range(5)]
    sid = servers[0]
    codes = [ok(await ctx.client.post(f"/v1/servers/{sid}/invites", headers=h, json={}), 201)["code"]
             for _ in range(5)]
    banned = [(await ctx.directory.create_user(f"spam{i}", "x", now_ms=1)).user_id for i in range(5)]
    for u in banned:
        assert (await ctx.client.put(f"/v1/servers/{sid}/bans/{u}", headers=h)).status_code == 204

    for limit in (1, 2, 5, 100):
        assert await walk(ctx, h, "/v1/me/servers", "servers", "server_id", limit=limit) == servers
        assert await walk(ctx, h, f"/v1/servers/{sid}/invites", "invites", "code", limit=limit) == codes
        assert await walk(ctx, h, f"/v1/servers/{sid}/bans", "bans", "user_id", limit=limit) == banned
    # a cursor is good for its own listing only, and a limit is 1-500
    cursor = ok(await ctx.client.get("/v1/me/servers", headers=h, params={"limit": 1}))["next_cursor"]
    for path in (f"/v1/servers/{sid}/invites", f"/v1/servers/{sid}/bans", f"/v1/servers/{servers[1]}/bans"):
        assert error(await ctx.client.get(path, headers=h, params={"cursor": cursor})) == (422, "invalid_cursor")
    bans_cursor = ok(await ctx.client.get(f"/v1/servers/{sid}/bans", headers=h, params={"limit": 1}))["next_cursor"]
    r = await ctx.client.get(f"/v1/servers/{servers[1]}/bans", headers=h, params={"cursor": bans_cursor})
    assert error(r) == (422, "invalid_cursor")
    for bad in ("0", "501"):
        assert error(await ctx.client.get("/v1/me/servers", headers=h, params={"limit": bad})) == (
            422, "invalid_request")


async def test_roles_channels_and_overwrites_stop_at_their_caps(ctx: Ctx) -> None:
    directory = ctx.directory
    assert isinstance(directory, DirectoryRules)
    directory.max_roles, directory.max_server_channels, directory.max_overwrites = 1, 1, 1
    _, at = await user(ctx.client, "owner")
    h = bearer(at)
    sid = ok(await ctx.client.post("/v1/servers", headers=h, json={"name": "G"}), 201)["server_id"]
    ok(await ctx.client.post(f"/v1/servers/{sid}/roles", headers=h, json={"name": "one"}), 201)
    r = await ctx.client.post(f"/v1/servers/{sid}/roles", headers=h, json={"name": "two"})
    assert error(r) == (409, "too_many_roles")
    assert "at most 1 roles" in r.json()["error"]["message"]
    cid = ok(await ctx.client.post(f"/v1/servers/{sid}/channels", headers=h, json={"name": "a"}), 201)["channel_id"]
    r = await ctx.client.post(f"/v1/servers/{sid}/channels", headers=h, json={"name": "b"})
    assert error(r) == (409, "too_many_channels")
    ok(await ctx.client.put(f"/v1/channels/{cid}/permissions/role/{sid}", headers=h, json={"deny": ["add_reactions"]}))
    bob, _ = await user(ctx.client, "bob")
    code = ok(await ctx.client.post(f"/v1/servers/{sid}/invites", headers=h, json={}), 201)["code"]
    await directory.use_invite(bob, code, now_ms=2)
    r = await ctx.client.put(f"/v1/channels/{cid}/permissions/member/{bob}", headers=h,
                             json={"deny": ["send_messages"]})
    assert error(r) == (409, "too_many_overwrites")
    assert len(ok(await ctx.client.get(f"/v1/channels/{cid}/permissions", headers=h))["overwrites"]) == 1


async def test_push_devices_are_capped_and_the_least_recent_is_replaced(ctx: Ctx, tmp_path: Path) -> None:
    from mqchat.storage.push_state import PushRegistration

    def reg(ms: int) -> PushRegistration:
        return PushRegistration(platform="fcm", token=f"token-{ms:08d}", updated_ms=ms)

    push = ctx.push
    assert [await push.register("u1", d, reg(ms), keep=3) for d, ms in (("a", 5), ("b", 1), ("c", 3))] == [[]] * 3
    assert await push.register("u1", "d", reg(9), keep=3) == ["b"]  # the oldest registration, not the first
    assert await push.register("u1", "a", reg(10), keep=3) == []  # a refresh takes no room
    assert sorted(await push.registrations("u1")) == ["a", "c", "d"]
    assert await push.register("u1", "e", reg(11), keep=2) == ["c", "d"]  # a lowered cap sheds the excess
    assert sorted(await push.registrations("u1")) == ["a", "e"]
    assert await push.registrations("u2") == {}

    # the API keeps limits.max_push_devices per user
    from api.app import create_app
    from mqchat.config import load_settings

    settings = load_settings(data_dir=tmp_path, limits={"max_push_devices": 2})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        await user(c, "alice", "phone")
        logins = [await c.post("/v1/login", json={"username": "alice", "password": PW, "device_id": d})
                  for d in ("phone", "tablet", "laptop")]
        tokens = [ok(r)["token"] for r in logins]
        for t in tokens:
            r = await c.put("/v1/me/push", headers=bearer(t), json={"platform": "fcm", "token": "t" * 40})
            assert r.status_code == 200, r.text
        listed = ok(await c.get("/v1/me/push", headers=bearer(tokens[0])))["devices"]
        assert sorted(d["device_id"] for d in listed) == ["laptop", "tablet"]
