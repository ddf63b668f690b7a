"""The token lifecycle over HTTP (docs/security.md): refresh rotates, reuse revokes the family,
logout and logout-all revoke access tokens, refresh is rate-limited. Real Redis, app in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from mqchat import auth
from mqchat.config import load_settings
from tests.api.conftest import PW, Ctx, bearer, error


async def login(client: httpx.AsyncClient, name: str, device: str = "phone", *, create: bool = True) -> dict[str, Any]:
    if create:
        r = await client.post("/v1/users", json={"username": name, "password": PW})
        assert r.status_code == 201, r.text
    r = await client.post("/v1/login", json={"username": name, "password": PW, "device_id": device})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/token/refresh", json={"refresh_token": token})


async def test_login_returns_a_short_lived_access_token_and_a_refresh_token(ctx: Ctx) -> None:
    body = await login(ctx.client, "alice")
    principal = auth.verify(ctx.keys, body["token"], now=body["expires_at"] - 1)
    assert body["expires_at"] - int(principal.issued_at) == 3600  # auth.token_ttl_s default: 1 h
    assert body["refresh_token"]
    assert body["refresh_token"] != body["token"]
    # only its hash is stored
    keys = list(await ctx.redis.driver.keys("*auth:family:*"))
    assert len(keys) == 1
    stored = await ctx.redis.driver.hgetall(keys[0])
    assert body["refresh_token"].encode() not in stored.values()


async def test_refresh_rotates_and_the_old_refresh_token_is_spent(ctx: Ctx) -> None:
    first = await login(ctx.client, "alice")
    r = await refresh(ctx.client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (second["user_id"], second["device_id"]) == (first["user_id"], "phone")
    assert (await ctx.client.get("/v1/me/channels", headers=bearer(second["token"]))).status_code == 200
    r = await refresh(ctx.client, second["refresh_token"])  # the new one works once, too
    assert r.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(ctx: Ctx) -> None:
    first = await login(ctx.client, "alice")
    second = (await refresh(ctx.client, first["refresh_token"])).json()
    # an attacker replays the stolen first token
    assert error(await refresh(ctx.client, first["refresh_token"])) == (401, "refresh_reused")
    # the legitimate holder's current refresh token is dead too, and so is its access token
    assert error(await refresh(ctx.client, second["refresh_token"])) == (401, "refresh_invalid")
    r = await ctx.client.get("/v1/me/channels", headers=bearer(second["token"]))
    assert error(r) == (401, "token_revoked")
    # logging in again works
    again = await login(ctx.client, "alice", create=False)
    assert (await ctx.client.get("/v1/me/channels", headers=bearer(again["token"]))).status_code == 200


async def test_unknown_and_malformed_refresh_tokens_are_refused(ctx: Ctx) -> None:
    for token in ("nope", "a.b", "x" * 150 + ".y"):
        assert error(await refresh(ctx.client, token)) == (401, "refresh_invalid")
    r = await ctx.client.post("/v1/token/refresh", json={})
    assert r.status_code == 422


async def test_logout_ends_this_device_only(ctx: Ctx) -> None:
    phone = await login(ctx.client, "alice", "phone")
    laptop = await login(ctx.client, "alice", "laptop", create=False)
    r = await ctx.client.post("/v1/logout", headers=bearer(phone["token"]))
    assert r.json() == {"devices": "this", "sessions_ended": 1}
    assert error(await ctx.client.get("/v1/me/channels", headers=bearer(phone["token"]))) == (401, "token_revoked")
    assert error(await refresh(ctx.client, phone["refresh_token"])) == (401, "refresh_invalid")
    assert (await ctx.client.get("/v1/me/channels", headers=bearer(laptop["token"]))).status_code == 200
    assert (await refresh(ctx.client, laptop["refresh_token"])).status_code == 200


async def test_logout_all_ends_every_device(ctx: Ctx) -> None:
    devices = [await login(ctx.client, "alice", d, create=d == "d0") for d in ("d0", "d1", "d2")]
    other = await login(ctx.client, "bob")
    r = await ctx.client.post("/v1/logout/all", headers=bearer(devices[0]["token"]))
    assert r.json() == {"devices": "all", "sessions_ended": 3}
    for d in devices:
        assert error(await ctx.client.get("/v1/me/channels", headers=bearer(d["token"]))) == (401, "token_revoked")
        assert error(await refresh(ctx.client, d["refresh_token"])) == (401, "refresh_invalid")
    assert (await ctx.client.get("/v1/me/channels", headers=bearer(other["token"]))).status_code == 200
    # a login after the logout is valid (issued after the revocation, to the millisecond)
    fresh = await login(ctx.client, "alice", "d0", create=False)
    assert (await ctx.client.get("/v1/me/channels", headers=bearer(fresh["token"]))).status_code == 200


async def test_refresh_is_rate_limited_per_address(ctx: Ctx, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "rl", ratelimit={"refresh_per_ip": "3/1h"})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        answers = [await refresh(client, "nope") for _ in range(4)]
    assert [r.status_code for r in answers[:3]] == [401] * 3
    assert error(answers[3]) == (429, "rate_limited")
    assert int(answers[3].headers["Retry-After"]) > 0
