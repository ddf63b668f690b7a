"""The push registry and mute endpoints, in-process over a real Redis."""

from __future__ import annotations

from tests.api.conftest import Ctx, bearer, ctx, error, user  # noqa: F401 - ctx is a fixture

TOKEN = "fcm-registration-token-" + "z" * 120


async def test_register_refresh_list_remove(ctx: Ctx) -> None:  # noqa: F811
    uid, tok = await user(ctx.client, "bob")
    r = await ctx.client.put("/v1/me/push", json={"platform": "fcm", "token": TOKEN, "locale": "en-GB"},
                             headers=bearer(tok))
    assert r.status_code == 200, r.text
    assert r.json()["device_id"] == "phone"
    assert TOKEN not in r.text
    refreshed = TOKEN.replace("z", "y")
    r = await ctx.client.put("/v1/me/push", json={"platform": "fcm", "token": refreshed, "preview": False},
                             headers=bearer(tok))
    listed = (await ctx.client.get("/v1/me/push", headers=bearer(tok))).json()["devices"]
    assert [(d["device_id"], d["preview"]) for d in listed] == [("phone", False)]
    assert TOKEN not in str(listed)
    assert refreshed not in str(listed)
    stored = await ctx.push.registrations(uid)
    assert stored["phone"].token == refreshed
    assert (await ctx.client.delete("/v1/me/push", headers=bearer(tok))).status_code == 204
    assert (await ctx.client.delete("/v1/me/push", headers=bearer(tok))).status_code == 204
    assert (await ctx.client.get("/v1/me/push", headers=bearer(tok))).json() == {"devices": []}


async def test_bad_registrations_are_refused(ctx: Ctx) -> None:  # noqa: F811
    _, tok = await user(ctx.client, "bob")
    for body in ({"platform": "gcm", "token": TOKEN}, {"platform": "fcm", "token": "short"},
                 {"platform": "fcm", "token": "has space " + TOKEN}, {"platform": "apns", "token": TOKEN, "x": 1}):
        r = await ctx.client.put("/v1/me/push", json=body, headers=bearer(tok))
        assert error(r) == (422, "invalid_request"), body
    assert error(await ctx.client.put("/v1/me/push", json={"platform": "fcm", "token": TOKEN})) == \
        (401, "unauthorized")


async def test_mute_needs_membership(ctx: Ctx) -> None:  # noqa: F811
    alice, atok = await user(ctx.client, "alice")
    bob, btok = await user(ctx.client, "bob")
    _, ctok = await user(ctx.client, "carol")
    r = await ctx.client.post("/v1/channels", json={"kind": "direct", "members": [bob]}, headers=bearer(atok))
    channel = r.json()["channel_id"]
    r = await ctx.client.put(f"/v1/channels/{channel}/mute", json={"muted": True}, headers=bearer(btok))
    assert r.json() == {"channel": channel, "muted": True}
    assert await ctx.push.muted_channels(bob) == {channel}
    r = await ctx.client.put(f"/v1/channels/{channel}/mute", json={"muted": True}, headers=bearer(ctok))
    assert error(r) == (404, "channel_not_found")
    assert alice
