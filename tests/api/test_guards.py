"""The HTTP boundary's guards: body size, broker hooks, /metrics, CORS, and login timing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Literal

import httpx
from argon2 import PasswordHasher

from tests.api.conftest import HOOK_AUTH, HOOKS_SECRET, PW, Ctx, error, user

AUTHZ = {"clientid": "u1:phone", "username": "u1", "topic": "ch/c1", "action": "subscribe"}


async def test_a_body_over_the_limit_is_refused_before_it_is_read(ctx: Ctx) -> None:
    c = ctx.client
    huge = b'{"username": "' + b"a" * (2 << 20) + b'", "password": "x"}'
    r = await c.post("/v1/users", content=huge, headers={"content-type": "application/json"})
    assert error(r) == (413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off while streaming
        yield b'{"username": "'
        for _ in range(40):
            yield b"b" * 65536
        yield b'", "password": "x"}'

    r = await c.post("/v1/users", content=chunks(), headers={"content-type": "application/json"})
    assert error(r) == (413, "body_too_large")
    r = await c.post("/v1/users", content=b"{}", headers={"content-type": "application/json",
                                                          "content-length": "many"})
    assert error(r) == (400, "bad_request")
    # nothing was created, and a normal request still works
    assert (await c.post("/v1/users", json={"username": "carol", "password": PW})).status_code == 201


async def test_broker_hooks_answer_only_the_holder_of_the_secret(ctx: Ctx) -> None:
    c = ctx.client
    assert error(await c.post("/hooks/emqx/authz", json=AUTHZ)) == (401, "unauthorized")
    assert error(await c.post("/hooks/emqx/authz", json=AUTHZ, headers={"Authorization": "Bearer guess-guess-guess"})
                 ) == (401, "unauthorized")
    assert error(await c.post("/hooks/vernemq?secret=nope", json={"client_id": "u1:p"},
                              headers={"vernemq-hook": "auth_on_register"})) == (401, "unauthorized")
    assert (await c.post("/hooks/emqx/authz", json=AUTHZ, headers=HOOK_AUTH)).json() == {"result": "deny"}
    assert (await c.post(f"/hooks/emqx/authz?secret={HOOKS_SECRET}", json=AUTHZ)).json() == {"result": "deny"}


async def test_broker_hooks_are_off_without_a_secret(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from mqchat.config import load_settings

    settings = load_settings(data_dir=tmp_path / "other")
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        assert error(await c.post("/hooks/emqx/authz", json=AUTHZ, headers=HOOK_AUTH)) == (404, "hooks_disabled")


async def test_metrics_answer_loopback_only_or_the_token_holder(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from mqchat.config import load_settings

    assert (await ctx.client.get("/metrics")).status_code == 200  # the test client is 127.0.0.1
    remote = httpx.ASGITransport(app=ctx.app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=remote, base_url="http://api") as c:
        assert error(await c.get("/metrics")) == (403, "forbidden")
    token = "metrics-token-0123456789"
    settings = load_settings(data_dir=tmp_path / "other", http={"metrics_token": token})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 5000)),
                                 base_url="http://api") as c:
        assert error(await c.get("/metrics")) == (403, "forbidden")
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert "mqchat_" in r.text or "python_info" in r.text


async def test_cors_allows_only_the_configured_origins(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from mqchat.config import load_settings

    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    # default: no CORS, so another origin's preflight is not granted
    r = await ctx.client.options("/v1/login", headers={"Origin": "https://app.example.com", **preflight})
    assert "access-control-allow-origin" not in r.headers
    settings = load_settings(data_dir=tmp_path / "other", http={"cors_origins": ["https://app.example.com"]})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        r = await c.options("/v1/login", headers={"Origin": "https://app.example.com", **preflight})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = await c.options("/v1/login", headers={"Origin": "https://evil.example.net", **preflight})
        assert r.status_code == 400
        assert "access-control-allow-origin" not in r.headers
        r = await c.post("/v1/users", json={"username": "dora", "password": PW},
                         headers={"Origin": "https://app.example.com"})
        assert r.status_code == 201
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"


def test_bad_cors_origins_and_short_secrets_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from mqchat.config import load_settings
    from mqchat.errors import ConfigError

    with pytest.raises(ConfigError, match="CORS origin"):
        load_settings(data_dir=tmp_path, http={"cors_origins": ["https://app.example.com/path"]})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(data_dir=tmp_path, http={"hooks_secret": "short"})


class CountingHasher(PasswordHasher):
    """argon2's hasher, counting the verifications it really runs."""

    verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        CountingHasher.verified += 1
        return super().verify(hash, password)


async def test_every_failed_login_costs_one_full_verification(ctx: Ctx) -> None:
    """Unknown users and password-less accounts (provisioned for an external identity provider) are
    verified against a dummy hash, so the answer's timing names no username (a password-less account
    used to answer in about 1 ms instead of a verification's ~100 ms)."""
    from api.provisioning import NO_PASSWORD

    c = ctx.client
    await user(c, "erin")
    await ctx.directory.create_user("frank", NO_PASSWORD, now_ms=0)
    ctx.app.state.services = dataclasses.replace(ctx.app.state.services, hasher=CountingHasher())
    for name in ("erin", "frank", "nobody"):
        before = CountingHasher.verified
        r = await c.post("/v1/login", json={"username": name, "password": "wrong password", "device_id": "p"})
        assert error(r) == (401, "bad_credentials")
        assert CountingHasher.verified == before + 1, name
    r = await c.post("/v1/login", json={"username": "frank", "password": NO_PASSWORD, "device_id": "p"})
    assert error(r) == (401, "bad_credentials")
