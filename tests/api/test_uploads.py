"""Attachment routes over the real app: uploads, completion, download URLs and the local backend's
signed-URL endpoints, with every bad input answered by a stable code."""

from __future__ import annotations

import io
import time
import urllib.parse
from typing import Any

import httpx
from PIL import Image

from api.uploads import attachments_of
from mqchat.objects.local import LocalObjectStore
from mqchat.objects.policy import FileSend
from mqchat.objects.service import Attachments
from tests.api.conftest import Ctx, bearer, error, user


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(out, "PNG")
    return out.getvalue()


async def team(ctx: Ctx) -> tuple[dict[str, str], dict[str, str], dict[str, str], str]:
    """alice and bob share a channel; carol is in none."""
    _, alice = await user(ctx.client, "alice")
    bob_id, bob = await user(ctx.client, "bob")
    _, carol = await user(ctx.client, "carol")
    r = await ctx.client.post("/v1/channels", json={"kind": "group", "name": "team", "members": [bob_id]},
                              headers=bearer(alice))
    assert r.status_code == 201, r.text
    return bearer(alice), bearer(bob), bearer(carol), r.json()["channel_id"]


async def start(ctx: Ctx, auth: dict[str, str], channel: str, data: bytes, ctype: str = "image/png",
                name: str = "pic.png", size: int | None = None) -> httpx.Response:
    return await ctx.client.post("/v1/uploads", headers=auth, json={
        "channel": channel, "filename": name, "content_type": ctype, "size": len(data) if size is None else size})


async def put(ctx: Ctx, started: dict[str, Any], data: bytes, **headers: str) -> httpx.Response:
    req = started["upload"]
    return await ctx.client.request(req["method"], req["url"], content=data, headers=req["headers"] | headers)


def attachments(ctx: Ctx) -> Attachments:
    return attachments_of(ctx.app)


async def test_upload_complete_and_download_by_members_only(ctx: Ctx) -> None:
    alice, bob, carol, channel = await team(ctx)
    data = png_bytes()
    r = await start(ctx, alice, channel, data)
    assert r.status_code == 201, r.text
    started = r.json()
    upload_id = started["upload_id"]
    assert started["state"] == "pending"
    assert started["upload"]["method"] == "PUT"
    assert started["upload"]["headers"] == {"Content-Type": "image/png"}
    assert started["upload"]["expires_at"] > time.time()
    assert (await put(ctx, started, data)).status_code == 200

    r = await ctx.client.post(f"/v1/uploads/{upload_id}/complete", headers=alice)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["width"], r.json()["height"], r.json()["size"]) == ("ready", 64, 48, len(data))
    # a thumbnail job is queued for the workers
    assert await ctx.redis.driver.xlen(ctx.redis.keys.thumbnail_jobs) == 1

    # before it is in a message only the uploader sees it
    assert error(await ctx.client.get(f"/v1/uploads/{upload_id}/download", headers=bob)) == (404, "upload_not_found")
    r = await ctx.client.get(f"/v1/uploads/{upload_id}/download", headers=alice)
    assert r.status_code == 200, r.text

    alice_user = await ctx.directory.user_by_name("alice")
    assert alice_user is not None
    # what the bridge does with a kind "file" send
    await attachments(ctx).attach_to_message(FileSend(upload=upload_id), user=alice_user.user_id, channel=channel,
                                             cmid="m1")
    r = await ctx.client.get(f"/v1/uploads/{upload_id}/download", headers=bob)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["filename"], body["content_type"], body["size"]) == (upload_id, "pic.png", "image/png",
                                                                                  len(data))
    got = await ctx.client.get(body["url"])
    assert (got.status_code, got.content) == (200, data)
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert error(await ctx.client.get(f"/v1/uploads/{upload_id}/download", headers=carol)) == (404, "upload_not_found")


async def test_bad_upload_requests(ctx: Ctx) -> None:
    alice, _, carol, channel = await team(ctx)
    limit = attachments(ctx).settings.max_upload_bytes
    assert error(await start(ctx, alice, channel, b"x", size=limit + 1)) == (413, "upload_too_large")
    assert error(await start(ctx, alice, channel, b"<html>", "text/html", "a.html")) == (415, "forbidden_type")
    assert error(await start(ctx, alice, channel, b"x", size=0)) == (422, "invalid_size")
    assert error(await start(ctx, carol, channel, b"x")) == (404, "channel_not_found")
    assert error(await start(ctx, alice, "no-such-channel", b"x")) == (404, "channel_not_found")
    assert error(await start(ctx, {}, channel, b"x")) == (401, "unauthorized")
    r = await ctx.client.post("/v1/uploads", headers=alice, json={"channel": channel, "filename": "a", "size": 1,
                                                                  "content_type": "image/png", "extra": 1})
    assert error(r) == (422, "invalid_request")
    assert await attachments(ctx).uploads.unused_before(2**62, 10) == []  # nothing was recorded


async def test_a_png_that_is_not_a_png_is_refused_and_deleted(ctx: Ctx) -> None:
    alice, _, _, channel = await team(ctx)
    fake = b"GIF89a" + b"\x00" * 100
    started = (await start(ctx, alice, channel, fake, name="cat.png")).json()
    assert (await put(ctx, started, fake)).status_code == 200
    r = await ctx.client.post(f"/v1/uploads/{started['upload_id']}/complete", headers=alice)
    assert error(r) == (422, "type_mismatch")
    assert await attachments(ctx).uploads.get(started["upload_id"]) is None
    store = attachments(ctx).objects
    assert isinstance(store, LocalObjectStore)
    assert not any(p.is_file() for p in store.root.rglob("*"))


async def test_completing_before_uploading_or_someone_elses_upload(ctx: Ctx) -> None:
    alice, bob, _, channel = await team(ctx)
    started = (await start(ctx, alice, channel, png_bytes())).json()
    url = f"/v1/uploads/{started['upload_id']}/complete"
    assert error(await ctx.client.post(url, headers=alice)) == (409, "upload_incomplete")
    assert error(await ctx.client.post(url, headers=bob)) == (404, "upload_not_found")
    # the client normalises the path to /v1/complete: no upload route (the web chat mount answers 405)
    assert error(await ctx.client.post("/v1/uploads/../complete", headers=alice))[0] in (404, 405)


def signed_parts(url: str) -> tuple[str, dict[str, str]]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.path, dict(urllib.parse.parse_qsl(parsed.query))


async def test_expired_and_tampered_urls_are_refused(ctx: Ctx) -> None:
    alice, _, _, channel = await team(ctx)
    data = png_bytes()
    started = (await start(ctx, alice, channel, data)).json()
    objects = attachments(ctx).objects
    key = f"uploads/{started['upload_id']}/incoming"

    # an upload URL: the wrong content type, a tampered size cap, a signature for another key
    assert error(await put(ctx, started, data, **{"Content-Type": "text/plain"})) == (403, "url_invalid")
    path, query = signed_parts(started["upload"]["url"])
    r = await ctx.client.put(path, params=query | {"n": str(10**9)}, content=data,
                             headers={"Content-Type": "image/png"})
    assert error(r) == (403, "url_invalid")
    other = path.replace("incoming", "original")
    r = await ctx.client.put(other, params=query, content=data, headers={"Content-Type": "image/png"})
    assert error(r) == (403, "url_invalid")
    expired = objects.presign_upload(key, content_type="image/png", size=len(data), expires_at=int(time.time()) - 1)
    r = await ctx.client.put(expired.url, content=data, headers=expired.headers)
    assert error(r) == (403, "url_expired")
    assert await objects.head(key) is None  # none of them stored anything

    assert (await put(ctx, started, data)).status_code == 200
    good = objects.presign_download(key, expires_at=int(time.time()) + 60)
    assert (await ctx.client.get(good)).content == data
    path, query = signed_parts(good)
    for changed in ({"sig": query["sig"][:-1] + ("A" if query["sig"][-1] != "A" else "B")},
                    {"exp": str(int(query["exp"]) + 3600)}, {"op": "put"}):
        assert error(await ctx.client.get(path, params=query | changed)) == (403, "url_invalid")
    assert error(await ctx.client.get(path)) == (403, "url_invalid")
    stale = objects.presign_download(key, expires_at=int(time.time()) - 1)
    assert error(await ctx.client.get(stale)) == (403, "url_expired")
    # a key that would leave the store never verifies, whatever it is signed with
    r = await ctx.client.get("/v1/objects/uploads/%2e%2e/%2e%2e/directory.db", params=query)
    assert error(r) == (403, "url_invalid")


async def test_uploads_may_be_larger_than_ordinary_request_bodies(ctx: Ctx) -> None:
    alice, _, _, channel = await team(ctx)
    big = b"%PDF-1.7\n" + b"0" * (attachments(ctx).settings.max_upload_bytes // 10)
    assert len(big) > (1 << 20)  # over http.max_body_bytes
    started = (await start(ctx, alice, channel, big, "application/pdf", "big.pdf")).json()
    assert (await put(ctx, started, big)).status_code == 200
    r = await ctx.client.post(f"/v1/uploads/{started['upload_id']}/complete", headers=alice)
    assert r.status_code == 200, r.text
    assert (r.json()["content_type"], r.json()["width"]) == ("application/pdf", None)
    # ... but no more than the URL allows
    small = (await start(ctx, alice, channel, b"%PDF-1.7", "application/pdf", "s.pdf")).json()
    assert error(await put(ctx, small, big)) == (413, "upload_too_large")


def test_the_download_answer_has_exactly_the_fields_of_a_messages_attachment() -> None:
    """``AttachmentOut`` (the OpenAPI model of ``GET /v1/uploads/{id}/download``) restates the wire
    struct ``schema.Attachment`` for FastAPI: the two must not drift apart."""
    from api.uploads import AttachmentOut
    from mqchat import schema

    assert tuple(AttachmentOut.model_fields) == schema.Attachment.__struct_fields__
