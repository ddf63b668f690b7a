"""The web chat is served at / by the API, after every API route (which keep working)."""

from __future__ import annotations

from tests.api.conftest import error


async def test_web_chat_is_served_at_the_root(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '"mqtt": "./vendor/mqtt.esm.js"' in page.text  # the import map the SDK bundle relies on
    for path in ("/app.js", "/vendor/mqchat-sdk.js", "/vendor/mqtt.esm.js"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert "javascript" in r.headers["content-type"], path
    assert (await client.get("/style.css")).status_code == 200


async def test_api_routes_win_over_the_static_files(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert "/v1/login" in (await client.get("/openapi.json")).json()["paths"]
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert error(await client.get("/v1/nope")) == (404, "not_found")
    assert error(await client.get("/no-such-file.js")) == (404, "not_found")
