"""``GET /v1/search`` in-process over real stores: the join with the message store, and search turned off."""

from __future__ import annotations

from pathlib import Path

import httpx

from api import search
from api.app import create_app
from mqchat.config import load_settings
from mqchat.search import SearchDoc
from mqchat.storage.base import StoredMessage
from tests.api.conftest import Ctx, bearer, error, user


async def test_a_hit_the_store_no_longer_has_is_left_out(ctx: Ctx) -> None:
    alice, token = await user(ctx.client, "alice")
    r = await ctx.client.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(token))
    channel = r.json()["channel_id"]
    kept = StoredMessage(id=11, channel=channel, seq=1, epoch=1, sender=alice, device="phone", cmid="a", ts=5,
                         kind="text", body="osprey kept")
    await ctx.store.append([kept])
    index = await search.search_index(ctx.app, ctx.app.state.services)
    try:
        await index.index([SearchDoc(id=11, channel=channel, sender=alice, ts=5, seq=1, body="osprey kept"),
                           # indexed, but the store never had it (deleted before the indexer caught up)
                           SearchDoc(id=12, channel=channel, sender=alice, ts=6, seq=2, body="osprey gone")])
        r = await ctx.client.get("/v1/search", params={"q": "osprey"}, headers=bearer(token))
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert [h["message"]["id"] for h in hits] == ["11"]
        assert hits[0]["message"]["body"] == "osprey kept"
    finally:
        await search.close_index(ctx.app)


async def test_search_turned_off_is_a_404_with_its_code(ctx: Ctx, tmp_path: Path) -> None:
    _, token = await user(ctx.client, "alice")
    settings = load_settings(data_dir=tmp_path, search={"enabled": False})
    app = create_app(settings, ctx.directory, ctx.store, ctx.keys, ctx.redis, ctx.events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        r = await client.get("/v1/search", params={"q": "x"}, headers=bearer(token))
    assert error(r) == (404, "search_disabled")
