"""Servers, roles, server channels, overwrites, invites, moderation and the audit log over HTTP.

``sctx`` runs a test on SQLite and again with the directory on a real PostgreSQL server. Every
refusal is checked for its stable code and for leaving the state as it was.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.api.conftest import Ctx, bearer, error, user
from tests.waiting import wait_for


class Person:
    def __init__(self, client: httpx.AsyncClient, user_id: str, token: str) -> None:
        self.client, self.id, self.h = client, user_id, bearer(token)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.h, params=params)

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.client.post(path, headers=self.h, json=body)

    async def put(self, path: str, body: Any = None) -> httpx.Response:
        return await self.client.put(path, headers=self.h, json=body)

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.client.patch(path, headers=self.h, json=body)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path, headers=self.h)


async def person(c: Ctx, name: str) -> Person:
    uid, token = await user(c.client, name)
    return Person(c.client, uid, token)


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


async def server_of(owner: Person, name: str = "Guild", **extra: Any) -> str:
    sid: str = ok(await owner.post("/v1/servers", {"name": name, **extra}), 201)["server_id"]
    return sid


async def invite_in(owner: Person, sid: str, *members: Person) -> None:
    code = ok(await owner.post(f"/v1/servers/{sid}/invites", {}), 201)["code"]
    for m in members:
        assert ok(await m.post(f"/v1/invites/{code}/accept"))["joined"] is True


# --- servers -----------------------------------------------------------------------------------------


async def test_server_lifecycle(sctx: Ctx) -> None:
    alice, bob, carol = [await person(sctx, n) for n in ("alice", "bob", "carol")]
    doc = ok(await alice.post("/v1/servers", {"name": " Guild "}), 201)
    sid = doc["server_id"]
    assert doc == {"server_id": sid, "name": "Guild", "owner_id": alice.id, "discoverable": False,
                   "created_ms": doc["created_ms"]}
    assert [s["server_id"] for s in ok(await alice.get("/v1/me/servers"))["servers"]] == [sid]
    # not discoverable: strangers see nothing, cannot join
    assert error(await bob.get(f"/v1/servers/{sid}")) == (404, "server_not_found")
    assert error(await bob.post(f"/v1/servers/{sid}/join")) == (404, "server_not_found")
    assert error(await bob.get(f"/v1/servers/{sid}/members")) == (404, "server_not_found")
    assert ok(await bob.get("/v1/servers", discoverable="true"))["servers"] == []
    # rename and make discoverable in one edit
    doc = ok(await alice.patch(f"/v1/servers/{sid}", {"name": "Guild 2", "discoverable": True}))
    assert (doc["name"], doc["discoverable"]) == ("Guild 2", True)
    assert [s["server_id"] for s in ok(await bob.get("/v1/servers"))["servers"]] == [sid]
    assert ok(await bob.get(f"/v1/servers/{sid}"))["name"] == "Guild 2"
    assert ok(await bob.post(f"/v1/servers/{sid}/join")) ["joined"] is True
    assert ok(await bob.post(f"/v1/servers/{sid}/join"))["joined"] is False
    assert ok(await carol.post(f"/v1/servers/{sid}/join"))["joined"] is True
    # a member without manage_server may not edit: 403 naming the permission, nothing changed
    r = await bob.patch(f"/v1/servers/{sid}", {"name": "Mine"})
    assert error(r) == (403, "forbidden")
    assert "manage_server" in r.json()["error"]["message"]
    assert ok(await bob.get(f"/v1/servers/{sid}"))["name"] == "Guild 2"
    # members, paged, with display names
    ok(await bob.patch("/v1/me", {"display_name": "Bobby"}))
    first = ok(await carol.get(f"/v1/servers/{sid}/members", limit=2))
    rest = ok(await carol.get(f"/v1/servers/{sid}/members", limit=2, cursor=first["next_cursor"]))
    assert rest["next_cursor"] is None
    members = {m["user_id"]: m for m in first["members"] + rest["members"]}
    assert set(members) == {alice.id, bob.id, carol.id}
    assert members[bob.id]["display_name"] == "Bobby"
    assert members[bob.id]["username"] == "bob"
    assert error(await carol.get(f"/v1/servers/{sid}/members", cursor="bm9wZXxub3Bl")) == (422, "invalid_cursor")
    # the owner cannot leave; others can; only the owner transfers or deletes
    assert error(await alice.post(f"/v1/servers/{sid}/leave")) == (409, "owner_cannot_leave")
    assert error(await bob.post(f"/v1/servers/{sid}/transfer", {"user_id": bob.id})) == (403, "forbidden")
    assert error(await bob.delete(f"/v1/servers/{sid}")) == (403, "forbidden")
    assert error(await alice.post(f"/v1/servers/{sid}/transfer", {"user_id": "nobody"})) == (404, "member_not_found")
    ok(await carol.post(f"/v1/servers/{sid}/leave"), 204)
    assert error(await carol.post(f"/v1/servers/{sid}/leave")) == (404, "server_not_found")
    assert ok(await carol.get("/v1/me/servers"))["servers"] == []
    assert ok(await alice.post(f"/v1/servers/{sid}/transfer", {"user_id": bob.id}))["owner_id"] == bob.id
    ok(await alice.post(f"/v1/servers/{sid}/leave"), 204)
    ok(await bob.delete(f"/v1/servers/{sid}"), 204)
    assert error(await bob.get(f"/v1/servers/{sid}")) == (404, "server_not_found")


async def test_ids_that_do_not_exist(ctx: Ctx) -> None:
    alice = await person(ctx, "alice")
    for method, path in [("get", "/v1/servers/nope"), ("patch", "/v1/servers/nope"), ("delete", "/v1/servers/nope"),
                         ("post", "/v1/servers/nope/join"), ("post", "/v1/servers/nope/leave"),
                         ("get", "/v1/servers/nope/members"), ("get", "/v1/servers/nope/roles"),
                         ("post", "/v1/servers/nope/roles"), ("get", "/v1/servers/nope/channels"),
                         ("post", "/v1/servers/nope/channels"), ("post", "/v1/servers/nope/invites"),
                         ("get", "/v1/servers/nope/invites"), ("get", "/v1/servers/nope/audit-log"),
                         ("delete", "/v1/servers/nope/members/x"), ("put", "/v1/servers/nope/bans/x"),
                         ("post", "/v1/servers/nope/transfer")]:
        body = {"name": "x"} if method in ("post", "patch") and path.endswith(("roles", "channels", "nope")) else {}
        if path.endswith("transfer"):
            body = {"user_id": "x"}
        r = await alice.client.request(method.upper(), path, headers=alice.h, json=body)
        assert error(r) == (404, "server_not_found"), (method, path, r.text)
    for method, path in [("get", "/v1/invites/nope"), ("post", "/v1/invites/nope/accept"),
                         ("delete", "/v1/invites/nope")]:
        assert error(await alice.client.request(method.upper(), path, headers=alice.h)) == (404, "invite_not_found")
    for path in ["/v1/channels/nope/permissions/me", "/v1/channels/nope/permissions"]:
        assert error(await alice.get(path)) == (404, "channel_not_found")
    assert error(await alice.patch("/v1/channels/nope", {"name": "x"})) == (404, "channel_not_found")
    assert error(await alice.put("/v1/channels/nope/permissions/role/x", {})) == (404, "channel_not_found")
    assert error(await alice.get("/v1/users/nope")) == (404, "user_not_found")
    assert error(await alice.get("/v1/users/by-name/nope")) == (404, "user_not_found")
    assert error(await alice.get("/v1/servers", discoverable="false")) == (422, "invalid_request")
    sid = await server_of(alice)
    for path in [f"/v1/servers/{sid}/roles/nope", f"/v1/servers/{sid}/members/{alice.id}/roles/nope"]:
        assert error(await alice.delete(path)) == (404, "role_not_found")
    assert error(await alice.delete(f"/v1/servers/{sid}/members/nope")) == (404, "member_not_found")
    assert error(await alice.put(f"/v1/servers/{sid}/bans/nope")) == (404, "user_not_found")
    assert error(await alice.post(f"/v1/servers/{sid}/invites", {"channel_id": "nope"})) == (404, "channel_not_found")


# --- roles -------------------------------------------------------------------------------------------


async def test_roles(sctx: Ctx) -> None:
    alice, mod, bob = [await person(sctx, n) for n in ("alice", "mod", "bob")]
    sid = await server_of(alice)
    await invite_in(alice, sid, mod, bob)
    roles = ok(await alice.get(f"/v1/servers/{sid}/roles"))["roles"]
    assert [(r["role_id"], r["name"], r["everyone"]) for r in roles] == [(sid, "@everyone", True)]
    assert "view_channel" in roles[0]["permissions"]
    # unknown permission names: 422, no role created
    r = await alice.post(f"/v1/servers/{sid}/roles", {"name": "Bad", "permissions": ["view_channel", "fly"]})
    assert error(r) == (422, "unknown_permission")
    assert "fly" in r.json()["error"]["message"]
    assert len(ok(await alice.get(f"/v1/servers/{sid}/roles"))["roles"]) == 1
    mod_role = ok(await alice.post(f"/v1/servers/{sid}/roles", {
        "name": "Mod", "permissions": ["Kick_Members", "manage_roles", "view_audit_log"], "position": 5}), 201)
    assert mod_role["permissions"] == ["manage_roles", "kick_members", "view_audit_log"]
    admin_role = ok(await alice.post(f"/v1/servers/{sid}/roles", {
        "name": "Admin", "permissions": ["administrator"], "position": 10}), 201)
    rid, aid = mod_role["role_id"], admin_role["role_id"]
    assert ok(await alice.put(f"/v1/servers/{sid}/members/{mod.id}/roles/{rid}")) == {"changed": True}
    assert ok(await alice.put(f"/v1/servers/{sid}/members/{mod.id}/roles/{rid}")) == {"changed": False}
    # a role cannot grant what its granter does not hold
    r = await mod.post(f"/v1/servers/{sid}/roles", {"name": "Bans", "permissions": ["ban_members"], "position": 1})
    assert error(r) == (403, "forbidden")
    assert r.json()["error"]["missing"] == "ban_members"
    assert "ban_members" in r.json()["error"]["message"]
    # roles at or above one's own are out of reach
    assert error(await mod.put(f"/v1/servers/{sid}/members/{bob.id}/roles/{aid}")) == (403, "role_hierarchy")
    assert error(await mod.patch(f"/v1/servers/{sid}/roles/{rid}", {"name": "Boss"})) == (403, "role_hierarchy")
    assert error(await mod.post(f"/v1/servers/{sid}/roles", {"name": "Hi", "position": 7})) == (403, "role_hierarchy")
    assert error(await mod.delete(f"/v1/servers/{sid}/roles/{aid}")) == (403, "role_hierarchy")
    # without manage_roles at all
    assert error(await bob.post(f"/v1/servers/{sid}/roles", {"name": "Mine"})) == (403, "forbidden")
    assert error(await alice.patch(f"/v1/servers/{sid}/roles/{rid}", {"permissions": ["nope"]})) == \
        (422, "unknown_permission")
    roles = {r["role_id"]: r for r in ok(await alice.get(f"/v1/servers/{sid}/roles"))["roles"]}
    assert set(roles) == {sid, rid, aid}
    assert roles[rid]["name"] == "Mod"
    assert roles[rid]["permissions"] == ["manage_roles", "kick_members", "view_audit_log"]
    member = {m["user_id"]: m for m in ok(await alice.get(f"/v1/servers/{sid}/members"))["members"]}
    assert member[bob.id]["role_ids"] == []
    assert member[mod.id]["role_ids"] == [rid]
    # edits, removal and deletion by those allowed
    low = ok(await mod.post(f"/v1/servers/{sid}/roles", {"name": "Helper", "position": 2}), 201)["role_id"]
    assert ok(await mod.patch(f"/v1/servers/{sid}/roles/{low}", {"name": "Helpers", "permissions": ["kick_members"]}
                              ))["permissions"] == ["kick_members"]
    assert ok(await mod.put(f"/v1/servers/{sid}/members/{bob.id}/roles/{low}")) == {"changed": True}
    assert ok(await mod.delete(f"/v1/servers/{sid}/members/{bob.id}/roles/{low}")) == {"changed": True}
    ok(await mod.delete(f"/v1/servers/{sid}/roles/{low}"), 204)
    assert error(await alice.delete(f"/v1/servers/{sid}/roles/{sid}")) == (422, "invalid")
    stranger = await person(sctx, "stranger")
    assert error(await stranger.get(f"/v1/servers/{sid}/roles")) == (404, "server_not_found")


# --- channels and overwrites -------------------------------------------------------------------------


async def test_channels_and_overwrites(sctx: Ctx) -> None:
    alice, bob, carol = [await person(sctx, n) for n in ("alice", "bob", "carol")]
    sid = await server_of(alice)
    other = await server_of(carol, "Other")
    other_role = ok(await carol.post(f"/v1/servers/{other}/roles", {"name": "X"}), 201)["role_id"]
    await invite_in(alice, sid, bob)
    general = ok(await alice.post(f"/v1/servers/{sid}/channels", {"name": "general", "slow_mode_s": 5}), 201)
    staff = ok(await alice.post(f"/v1/servers/{sid}/channels", {"name": "staff", "private": True}), 201)
    assert (general["server_id"], general["slow_mode_s"]) == (sid, 5)
    gid, stid = general["channel_id"], staff["channel_id"]
    assert [c["channel_id"] for c in ok(await bob.get(f"/v1/servers/{sid}/channels"))["channels"]] == [gid]
    assert {c["channel_id"] for c in ok(await alice.get(f"/v1/servers/{sid}/channels"))["channels"]} == {gid, stid}
    me = ok(await bob.get(f"/v1/channels/{gid}/permissions/me"))
    assert me["server_id"] == sid
    assert me["slow_mode_s"] == 5
    assert "send_messages" in me["permissions"]
    assert "manage_roles" not in me["permissions"]
    assert error(await bob.get(f"/v1/channels/{stid}/permissions/me")) == (404, "channel_not_found")
    assert error(await carol.get(f"/v1/channels/{gid}/permissions/me")) == (404, "channel_not_found")
    assert error(await bob.post(f"/v1/servers/{sid}/channels", {"name": "mine"})) == (403, "forbidden")
    assert error(await bob.patch(f"/v1/channels/{gid}", {"slow_mode_s": 0})) == (403, "forbidden")
    # overwrites: bad inputs first, each refused with nothing changed
    before = ok(await alice.get(f"/v1/channels/{stid}/permissions"))["overwrites"]
    bad = [
        (f"/v1/channels/{stid}/permissions/member/{bob.id}", {"allow": ["teleport"]}, (422, "unknown_permission")),
        (f"/v1/channels/{stid}/permissions/role/{other_role}", {"allow": ["view_channel"]}, (404, "role_not_found")),
        (f"/v1/channels/{stid}/permissions/member/{carol.id}", {"allow": ["view_channel"]},
         (404, "member_not_found")),
        (f"/v1/channels/{stid}/permissions/member/{bob.id}", {"allow": ["kick_members"]}, (422, "invalid")),
        (f"/v1/channels/{stid}/permissions/member/{bob.id}", {"allow": ["view_channel"], "deny": ["view_channel"]},
         (422, "invalid")),
    ]
    for path, body, expected in bad:
        assert error(await alice.put(path, body)) == expected, path
    assert error(await alice.put(f"/v1/channels/{stid}/permissions/group/{bob.id}", {})) == (422, "invalid_request")
    assert error(await bob.put(f"/v1/channels/{gid}/permissions/role/{sid}", {"deny": ["send_messages"]})) == \
        (403, "forbidden")
    assert ok(await alice.get(f"/v1/channels/{stid}/permissions"))["overwrites"] == before
    # a group channel is not a server channel; a stranger's is not found
    group = ok(await alice.post("/v1/channels", {"kind": "group", "name": "g", "members": [bob.id]}), 201)
    assert error(await alice.put(f"/v1/channels/{group['channel_id']}/permissions/member/{bob.id}", {})) == \
        (422, "not_server_channel")
    assert error(await carol.put(f"/v1/channels/{group['channel_id']}/permissions/member/{bob.id}", {})) == \
        (404, "channel_not_found")
    assert ok(await bob.get(f"/v1/channels/{group['channel_id']}/permissions/me"))["permissions"] == \
        ["view_channel", "send_messages", "add_reactions"]
    # let Bob into #staff, read-only, then take it back
    doc = ok(await alice.put(f"/v1/channels/{stid}/permissions/member/{bob.id}",
                             {"allow": ["view_channel"], "deny": ["send_messages"]}))
    assert doc == {"channel_id": stid, "target": "member", "target_id": bob.id, "allow": ["view_channel"],
                   "deny": ["send_messages"]}
    perms = ok(await bob.get(f"/v1/channels/{stid}/permissions/me"))["permissions"]
    assert "view_channel" in perms
    assert "send_messages" not in perms
    assert stid in {c["channel_id"] for c in ok(await bob.get(f"/v1/servers/{sid}/channels"))["channels"]}
    ok(await alice.delete(f"/v1/channels/{stid}/permissions/member/{bob.id}"), 204)
    assert error(await bob.get(f"/v1/channels/{stid}/permissions/me")) == (404, "channel_not_found")
    # @everyone overwrite (target id = the server id) removes sending in #general
    ok(await alice.put(f"/v1/channels/{gid}/permissions/role/{sid}", {"deny": ["send_messages"]}))
    assert "send_messages" not in ok(await bob.get(f"/v1/channels/{gid}/permissions/me"))["permissions"]
    # slow mode, rename, delete
    doc = ok(await alice.patch(f"/v1/channels/{gid}", {"name": "lobby", "slow_mode_s": 30}))
    assert (doc["name"], doc["slow_mode_s"]) == ("lobby", 30)
    assert error(await alice.patch(f"/v1/channels/{gid}", {"slow_mode_s": -1})) == (422, "invalid_request")
    assert error(await alice.patch(f"/v1/channels/{group['channel_id']}", {"name": "x"})) == \
        (422, "not_server_channel")
    ok(await alice.delete(f"/v1/channels/{stid}"), 204)
    assert error(await alice.get(f"/v1/channels/{stid}/permissions/me")) == (404, "channel_not_found")


async def test_server_channel_members_only_by_consent(ctx: Ctx) -> None:
    """Nobody is put into a server channel: they join the server by invite (or discovery)."""
    alice, bob = [await person(ctx, n) for n in ("alice", "bob")]
    sid = await server_of(alice)
    gid = ok(await alice.post(f"/v1/servers/{sid}/channels", {"name": "general"}), 201)["channel_id"]
    r = await alice.post(f"/v1/channels/{gid}/members", {"user_id": bob.id})
    assert error(r) == (409, "server_channel")
    assert "server" in r.json()["error"]["message"]
    assert error(await bob.get(f"/v1/channels/{gid}/permissions/me")) == (404, "channel_not_found")
    assert ok(await bob.get("/v1/me/servers"))["servers"] == []
    await invite_in(alice, sid, bob)
    for who in (alice, bob):  # leaving goes through the server (or an overwrite), not the channel
        assert error(await who.delete(f"/v1/channels/{gid}/members/{bob.id}")) == (409, "server_channel")
    assert "view_channel" in ok(await bob.get(f"/v1/channels/{gid}/permissions/me"))["permissions"]


# --- invites -----------------------------------------------------------------------------------------


async def test_invites(sctx: Ctx) -> None:
    alice, bob, carol, dave, eve = [await person(sctx, n) for n in ("alice", "bob", "carol", "dave", "eve")]
    sid = await server_of(alice, "Guild")
    staff = ok(await alice.post(f"/v1/servers/{sid}/channels", {"name": "staff", "private": True}), 201)
    once = ok(await alice.post(f"/v1/servers/{sid}/invites", {"max_uses": 1, "channel_id": staff["channel_id"]}),
              201)
    assert (once["uses"], once["max_uses"], once["revoked"], once["creator"]) == (0, 1, False, alice.id)
    preview = ok(await bob.get(f"/v1/invites/{once['code']}"))
    assert preview == {"code": once["code"], "server_id": sid, "server_name": "Guild",
                       "channel_id": staff["channel_id"], "channel_name": "staff", "expires_ms": None,
                       "usable": True, "reason": None}
    doc = ok(await bob.post(f"/v1/invites/{once['code']}/accept"))
    assert (doc["server"]["server_id"], doc["joined"]) == (sid, True)
    assert ok(await bob.post(f"/v1/invites/{once['code']}/accept"))["joined"] is False  # a member uses nothing
    # used up
    assert error(await carol.post(f"/v1/invites/{once['code']}/accept")) == (410, "invite_used_up")
    assert ok(await carol.get(f"/v1/invites/{once['code']}"))["reason"] == "invite_used_up"
    assert ok(await carol.get("/v1/me/servers"))["servers"] == []
    # revoked: only the creator or manage_server; bob (no manage_server) cannot revoke alice's
    many = ok(await alice.post(f"/v1/servers/{sid}/invites", {}), 201)["code"]
    assert error(await bob.delete(f"/v1/invites/{many}")) == (403, "forbidden")
    assert error(await carol.delete(f"/v1/invites/{many}")) == (404, "invite_not_found")
    bobs = ok(await bob.post(f"/v1/servers/{sid}/invites", {"expires_in_s": 3600}), 201)
    assert [i["code"] for i in ok(await bob.get(f"/v1/servers/{sid}/invites"))["invites"]] == [bobs["code"]]
    assert len(ok(await alice.get(f"/v1/servers/{sid}/invites"))["invites"]) == 3
    assert ok(await alice.delete(f"/v1/invites/{many}"))["revoked"] is True
    assert error(await carol.post(f"/v1/invites/{many}/accept")) == (410, "invite_revoked")
    # banned: not even by invite
    ok(await alice.put(f"/v1/servers/{sid}/bans/{dave.id}", {"reason": "spam"}), 204)
    assert error(await dave.post(f"/v1/invites/{bobs['code']}/accept")) == (403, "banned")
    assert ok(await dave.get("/v1/me/servers"))["servers"] == []
    # expired
    short = ok(await alice.post(f"/v1/servers/{sid}/invites", {"expires_in_s": 1}), 201)["code"]

    async def expired() -> bool:
        return bool(ok(await eve.get(f"/v1/invites/{short}"))["reason"] == "invite_expired")
    await wait_for(expired, within=5, what="the invite expires")
    assert error(await eve.post(f"/v1/invites/{short}/accept")) == (410, "invite_expired")
    assert ok(await eve.get("/v1/me/servers"))["servers"] == []
    # bad bodies
    for body in [{"max_uses": 0}, {"expires_in_s": 0}, {"max_uses": "x"}, {"forever": True}]:
        assert error(await alice.post(f"/v1/servers/{sid}/invites", body)) == (422, "invalid_request")
    assert ok(await alice.get(f"/v1/invites/{bobs['code']}"))["usable"] is True
    uses = {i["code"]: i["uses"] for i in ok(await alice.get(f"/v1/servers/{sid}/invites"))["invites"]}
    assert uses == {once["code"]: 1, many: 0, bobs["code"]: 0, short: 0}


# --- moderation and the audit log --------------------------------------------------------------------


async def test_moderation_and_audit_log(sctx: Ctx) -> None:
    alice, admin, mod, bob, carol = [await person(sctx, n) for n in ("alice", "admin", "mod", "bob", "carol")]
    sid = await server_of(alice)
    await invite_in(alice, sid, admin, mod, bob, carol)
    mod_role = ok(await alice.post(f"/v1/servers/{sid}/roles", {
        "name": "Mod", "permissions": ["kick_members", "ban_members", "moderate_members"], "position": 5}),
        201)["role_id"]
    admin_role = ok(await alice.post(f"/v1/servers/{sid}/roles", {
        "name": "Admin", "permissions": ["administrator"], "position": 10}), 201)["role_id"]
    ok(await alice.put(f"/v1/servers/{sid}/members/{mod.id}/roles/{mod_role}"))
    ok(await alice.put(f"/v1/servers/{sid}/members/{admin.id}/roles/{admin_role}"))

    async def member_ids() -> set[str]:
        return {m["user_id"] for m in ok(await alice.get(f"/v1/servers/{sid}/members"))["members"]}
    everyone = {alice.id, admin.id, mod.id, bob.id, carol.id}
    assert (carol.id, {"type": "server", "server": sid, "action": "joined", "by": carol.id}) in sctx.events.sent
    # refusals, each leaving every member in place
    assert error(await mod.delete(f"/v1/servers/{sid}/members/{admin.id}")) == (403, "role_hierarchy")
    assert error(await mod.delete(f"/v1/servers/{sid}/members/{alice.id}")) == (403, "role_hierarchy")
    assert error(await alice.delete(f"/v1/servers/{sid}/members/{alice.id}")) == (409, "owner_cannot_leave")
    assert error(await bob.delete(f"/v1/servers/{sid}/members/{carol.id}")) == (403, "forbidden")
    assert error(await mod.put(f"/v1/servers/{sid}/bans/{admin.id}")) == (403, "role_hierarchy")
    assert error(await mod.put(f"/v1/servers/{sid}/bans/{bob.id}", {"reason": "x" * 513})) == (422, "invalid_request")
    assert await member_ids() == everyone
    # kick, ban with a reason, unban
    ok(await mod.delete(f"/v1/servers/{sid}/members/{bob.id}"), 204)
    assert sctx.events.sent[-1] == (bob.id, {"type": "server", "server": sid, "action": "removed", "by": mod.id,
                                             "reason": "kick"})
    assert await member_ids() == everyone - {bob.id}
    ok(await mod.put(f"/v1/servers/{sid}/bans/{carol.id}", {"reason": "spam"}), 204)
    assert sctx.events.sent[-1] == (carol.id, {"type": "server", "server": sid, "action": "removed", "by": mod.id,
                                               "reason": "ban"})
    assert await member_ids() == everyone - {bob.id, carol.id}
    bans = ok(await mod.get(f"/v1/servers/{sid}/bans"))["bans"]
    assert [(b["user_id"], b["actor"], b["reason"]) for b in bans] == [(carol.id, mod.id, "spam")]
    assert len(ok(await admin.get(f"/v1/servers/{sid}/bans"))["bans"]) == 1
    assert error(await bob.get(f"/v1/servers/{sid}/bans")) == (404, "server_not_found")
    code = ok(await alice.post(f"/v1/servers/{sid}/invites", {}), 201)["code"]
    assert error(await carol.post(f"/v1/invites/{code}/accept")) == (403, "banned")
    ok(await alice.patch(f"/v1/servers/{sid}", {"discoverable": True}))
    assert error(await carol.post(f"/v1/servers/{sid}/join")) == (403, "banned")
    assert await member_ids() == everyone - {bob.id, carol.id}
    assert ok(await mod.delete(f"/v1/servers/{sid}/bans/{carol.id}")) == {"changed": True}
    assert ok(await mod.delete(f"/v1/servers/{sid}/bans/{carol.id}")) == {"changed": False}
    ok(await carol.post(f"/v1/invites/{code}/accept"))
    # timeouts
    until = int(time.time() * 1000) + 60_000
    assert ok(await mod.put(f"/v1/servers/{sid}/members/{carol.id}/timeout", {"until_ms": until})
              )["timeout_until_ms"] == until
    assert ok(await carol.get(f"/v1/channels/{await _a_channel(alice, sid)}/permissions/me"))["timeout_until_ms"] \
        == until
    assert error(await mod.put(f"/v1/servers/{sid}/members/{carol.id}/timeout", {"until_ms": 1})) == \
        (422, "invalid")
    assert error(await mod.put(f"/v1/servers/{sid}/members/{admin.id}/timeout", {"until_ms": until})) == \
        (403, "role_hierarchy")
    assert ok(await mod.delete(f"/v1/servers/{sid}/members/{carol.id}/timeout"))["timeout_until_ms"] is None
    # the audit log: view_audit_log only, newest first, paged
    r = await mod.get(f"/v1/servers/{sid}/audit-log")
    assert error(r) == (403, "forbidden")
    assert r.json()["error"]["missing"] == "view_audit_log"
    assert "view_audit_log" in r.json()["error"]["message"]
    assert error(await bob.get(f"/v1/servers/{sid}/audit-log")) == (404, "server_not_found")
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = ok(await admin.get(f"/v1/servers/{sid}/audit-log", limit=3,
                                  **({"cursor": cursor} if cursor else {})))
        entries += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [e["entry_id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    actions = [(e["action"], e["actor"], e["target"]) for e in entries]
    assert ("member.kick", mod.id, bob.id) in actions
    assert ("member.unban", mod.id, carol.id) in actions
    ban = next(e for e in entries if e["action"] == "member.ban")
    assert ban["details"]["reason"] == "spam"
    assert actions[-1][0] == "server.create"
    assert error(await admin.get(f"/v1/servers/{sid}/audit-log", cursor="bWVtYmVyc3x4")) == (422, "invalid_cursor")


async def _a_channel(owner: Person, sid: str) -> str:
    channels = ok(await owner.get(f"/v1/servers/{sid}/channels"))["channels"]
    if channels:
        return str(channels[0]["channel_id"])
    return str(ok(await owner.post(f"/v1/servers/{sid}/channels", {"name": "general"}), 201)["channel_id"])


# --- the user directory ------------------------------------------------------------------------------


async def test_profiles_and_lookup(sctx: Ctx) -> None:
    alice, bob = [await person(sctx, n) for n in ("Alice", "bob")]
    me = ok(await alice.get("/v1/me"))
    assert (me["user_id"], me["username"], me["display_name"], me["avatar_url"]) == (alice.id, "Alice", None, None)
    assert ok(await bob.get("/v1/users/by-name/aLiCe"))["user_id"] == alice.id
    assert error(await bob.get("/v1/users/by-name/ali")) == (404, "user_not_found")
    doc = ok(await alice.patch("/v1/me", {"display_name": " Alice A. ", "avatar_url": "https://cdn.example/a.png"}))
    assert (doc["display_name"], doc["avatar_url"]) == ("Alice A.", "https://cdn.example/a.png")
    for body in [{"avatar_url": "http://cdn.example/a.png"}, {"avatar_url": "javascript:alert(1)"},
                 {"avatar_url": "https://" + "a" * 2000}, {"display_name": "   "}, {"display_name": "x" * 65},
                 {"username": "mallory"}]:
        assert error(await alice.patch("/v1/me", body)) == (422, "invalid_request"), body
    seen = ok(await bob.get(f"/v1/users/{alice.id}"))
    assert seen == {"user_id": alice.id, "username": "Alice", "display_name": "Alice A.",
                    "avatar_url": "https://cdn.example/a.png"}
    # a field left out keeps its value; null clears it
    assert ok(await alice.patch("/v1/me", {"avatar_url": None}))["display_name"] == "Alice A."
    assert ok(await bob.get(f"/v1/users/{alice.id}"))["avatar_url"] is None
    assert error(await bob.client.get("/v1/me")) == (401, "unauthorized")
