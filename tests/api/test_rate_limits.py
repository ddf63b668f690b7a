"""HTTP rate limits, counted in a real Redis: 429 with Retry-After past the documented thresholds."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from mqchat.ratelimit import MemoryRateLimiter, Rule, gcra
from tests.api.conftest import PW, Ctx, error, user


def client_at(ctx: Ctx, address: str, app: FastAPI | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app or ctx.app, client=(address, 40000)),
                             base_url="http://api")


async def test_a_login_brute_force_from_one_address_is_throttled_while_others_log_in(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from mqchat.config import load_settings

    await user(ctx.client, "alice")
    await user(ctx.client, "bob")
    # The default threshold (30 at once) refilled per hour instead of per minute, so that however slowly
    # this machine verifies 30 passwords, no new allowance arrives during the test.
    settings = load_settings(data_dir=tmp_path / "slow", ratelimit={"login_per_ip": "30/1h"})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with client_at(ctx, "198.51.100.7", app) as attacker, client_at(ctx, "203.0.113.5", app) as bob_phone:
        guesses = [await attacker.post("/v1/login", json={"username": f"victim{i}", "password": "guess",
                                                          "device_id": "p"}) for i in range(31)]
        assert [r.status_code for r in guesses[:30]] == [401] * 30
        assert error(guesses[30]) == (429, "rate_limited")
        assert 60 <= int(guesses[30].headers["Retry-After"]) <= 120  # one more every 120 s
        # even a correct password from that address waits
        r = await attacker.post("/v1/login", json={"username": "alice", "password": PW, "device_id": "p"})
        assert error(r) == (429, "rate_limited")
        # everyone else is unaffected
        r = await bob_phone.post("/v1/login", json={"username": "bob", "password": PW, "device_id": "p"})
        assert r.status_code == 200


async def test_failed_logins_on_one_account_from_many_addresses_are_throttled(ctx: Ctx) -> None:
    await user(ctx.client, "carol")
    for i in range(10):  # the documented 10/10m failures per username
        async with client_at(ctx, f"192.0.2.{i + 1}") as c:
            r = await c.post("/v1/login", json={"username": "Carol", "password": "wrong!!", "device_id": "p"})
            assert error(r) == (401, "bad_credentials")
    async with client_at(ctx, "192.0.2.99") as c:
        r = await c.post("/v1/login", json={"username": "carol", "password": PW, "device_id": "p"})
        assert error(r) == (429, "rate_limited")
        assert int(r.headers["Retry-After"]) > 30
    # successful logins of other accounts never counted against anyone
    await user(ctx.client, "dave")


async def test_sign_ups_per_address_are_throttled(ctx: Ctx) -> None:
    async with client_at(ctx, "198.51.100.20") as c:
        for i in range(20):  # the documented 20/1h
            assert (await c.post("/v1/users", json={"username": f"bulk{i}", "password": PW})).status_code == 201
        r = await c.post("/v1/users", json={"username": "bulk20", "password": PW})
        assert error(r) == (429, "rate_limited")
        assert int(r.headers["Retry-After"]) > 60
    # nothing was created by the refused request
    r = await ctx.client.post("/v1/login", json={"username": "bulk20", "password": PW, "device_id": "p"})
    assert error(r) == (401, "bad_credentials")


def test_rules_parse_and_refuse_nonsense() -> None:
    import pytest

    assert Rule.parse("30/1m") == Rule(30, 60_000)
    assert Rule.parse("5/s") == Rule(5, 1_000)
    assert Rule.parse(" 20 / 1h ") == Rule(20, 3_600_000)
    for bad in ("", "30", "x/1m", "30/1d", "0/1m", "-1/1m"):
        with pytest.raises(ValueError, match="rate limit"):
            Rule.parse(bad)


@given(st.integers(1, 50), st.integers(1, 10_000), st.lists(st.integers(0, 5_000), max_size=80))
def test_gcra_allows_a_burst_of_limit_then_one_per_interval(limit: int, period: int, gaps: list[int]) -> None:
    rule, now, tat = Rule(limit, period), 0.0, None
    passed: list[float] = []
    for gap in gaps:
        now += gap
        decision, tat = gcra(tat, now, rule)
        if decision.allowed:
            passed.append(now)
        else:
            assert decision.retry_after_ms > 0
            # asking again once the wait is over passes
            assert gcra(tat, now + decision.retry_after_ms, rule, cost=0)[0].allowed
    for i, t in enumerate(passed):
        # a burst of at most `limit` at once, then at most one more per interval
        assert sum(1 for u in passed[i:] if u - t < rule.interval_ms) <= limit
        assert len(passed) - i <= limit + (passed[-1] - t) / rule.interval_ms + 1e-6


async def test_memory_and_redis_limiters_agree(ctx: Ctx) -> None:
    redis_limiter = ctx.app.state.services.limits.limiter
    rule = Rule(5, 60_000)
    memory = MemoryRateLimiter(lambda: 0.0)
    for _ in range(7):
        a = await memory.hit("b", "s", rule)
        b = await redis_limiter.hit("b", "s", rule)
        assert a.allowed == b.allowed


async def test_uploads_are_limited_per_account_and_signed_puts_per_address(ctx: Ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from mqchat.config import load_settings
    from tests.api.conftest import bearer

    settings = load_settings(data_dir=tmp_path, ratelimit={"uploads_per_user": "3/1h", "uploads_per_ip": "2/1h"})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    data = b"plain text attachment"
    async with client_at(ctx, "198.51.100.40", app) as c, client_at(ctx, "203.0.113.41", app) as elsewhere:
        _, alice = await user(c, "alice")
        bob_id, bob = await user(c, "bob")
        r = await c.post("/v1/channels", headers=bearer(alice), json={"kind": "group", "members": [bob_id]})
        body = {"channel": r.json()["channel_id"], "filename": "a.txt", "content_type": "text/plain",
                "size": len(data)}
        started = [await c.post("/v1/uploads", headers=bearer(alice), json=body) for _ in range(4)]
        assert [r.status_code for r in started[:3]] == [201] * 3
        assert error(started[3]) == (429, "rate_limited")
        assert 600 <= int(started[3].headers["Retry-After"]) <= 1200  # one more every 20 min
        # another account is not affected
        assert (await c.post("/v1/uploads", headers=bearer(bob), json=body)).status_code == 201

        # the signed upload URLs carry no token: their bodies are counted per client address
        req = started[0].json()["upload"]
        puts = [await c.request(req["method"], req["url"], content=data, headers=req["headers"]) for _ in range(3)]
        assert [p.status_code for p in puts[:2]] == [200, 200]
        assert error(puts[2]) == (429, "rate_limited")
        assert int(puts[2].headers["Retry-After"]) >= 600
        r = await elsewhere.request(req["method"], req["url"], content=data, headers=req["headers"])
        assert r.status_code == 200
