"""Every list endpoint is paged or bounded: servers, invites and bans come a page at a time (each entry
exactly once), and roles, server channels and overwrites stop at their caps with a stable code."""

from __future__ import annotations

from typing import Any

import httpx

from mqchat.storage.directory import DirectoryRules
from tests.api.conftest import Ctx, bearer, error, user


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
