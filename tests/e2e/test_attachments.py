"""Attachments through the real processes (``mqchat up``): an upload with a plain HTTP client to the
signed URL, completion, a thumbnail made by the workers, download URLs for members only, and the
``file`` message that carries it (live, history, sync, search, the REST send, deletion), on the local
object store and on S3 (a local S3 server)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from harness.client import Device
from mqchat import schema
from tests.conftest import System
from tests.e2e.conftest import World
from tests.objects.s3server import S3Server
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def system(request: pytest.FixtureRequest, system_factory: Any) -> System:
    s: System = system_factory()
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3")
        s.env = server.env(server.new_bucket())
    s.start()
    return s


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(out, "JPEG")
    return out.getvalue()


def bucket_keys(system: System) -> list[str]:
    """Every key in the S3 bucket ``system`` uses."""
    env = system.env
    client = boto3.session.Session().client(
        "s3", endpoint_url=env["MQCHAT_OBJECTS__S3_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id=env["MQCHAT_OBJECTS__S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["MQCHAT_OBJECTS__S3_SECRET_ACCESS_KEY"])
    try:
        listed = client.list_objects_v2(Bucket=env["MQCHAT_OBJECTS__S3_BUCKET"])
    finally:
        client.close()
    return [str(o["Key"]) for o in listed.get("Contents", [])]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_image_round_trip_with_a_thumbnail_and_members_only_downloads(
        system: System, world: World, tmp_path: Path) -> None:
    alice, carol = auth(world.alice_phone.token), auth(world.carol_phone.token)
    data = jpeg(1600, 900)
    async with httpx.AsyncClient(base_url=system.api, timeout=10) as api:
        r = await api.post("/v1/uploads", headers=alice, json={"channel": world.channel, "filename": "holiday.jpg",
                                                               "content_type": "image/jpeg", "size": len(data)})
        assert r.status_code == 201, r.text
        started = r.json()
        upload_id, req = started["upload_id"], started["upload"]

        # the upload itself: a plain HTTP request to the signed URL, no token
        async with httpx.AsyncClient(base_url=system.api, timeout=10) as plain:
            put = await plain.request(req["method"], req["url"], content=data, headers=req["headers"])
        assert put.status_code == 200, put.text

        r = await api.post(f"/v1/uploads/{upload_id}/complete", headers=alice)
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["width"], r.json()["height"]) == ("ready", 1600, 900)

        async def thumbnail_made() -> bool:
            got = await api.get(f"/v1/uploads/{upload_id}/download", headers=alice)
            assert got.status_code == 200, got.text
            return got.json().get("thumbnail_url") is not None

        await wait_for(thumbnail_made, 30, what="a thumbnail from the workers")
        att = (await api.get(f"/v1/uploads/{upload_id}/download", headers=alice)).json()
        async with httpx.AsyncClient(base_url=system.api, timeout=10) as plain:
            original = await plain.get(att["url"])
            thumb = await plain.get(att["thumbnail_url"])
        assert (original.status_code, original.content) == (200, data)
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert img.size == (320, 180)
        assert att["thumbnail_type"] == "image/jpeg"
        # the bytes are where the configured backend keeps them
        local_files = {p.name for p in (system.data_dir / "objects").rglob("*") if p.is_file()}
        if system.env.get("MQCHAT_OBJECTS__BACKEND") == "s3":
            assert local_files == set()
            assert att["url"].startswith(system.env["MQCHAT_OBJECTS__S3_ENDPOINT_URL"])
        else:
            assert local_files == {"original", "thumbnail"}
            assert att["url"].startswith("/v1/objects/")

        # a user outside the channel can neither upload to it nor get download URLs
        r = await api.get(f"/v1/uploads/{upload_id}/download", headers=carol)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "upload_not_found")
        r = await api.post("/v1/uploads", headers=carol, json={"channel": world.channel, "filename": "x.jpg",
                                                               "content_type": "image/jpeg", "size": 10})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "channel_not_found")


async def uploaded(api: httpx.AsyncClient, token: str, channel: str, data: bytes, filename: str,
                   content_type: str = "image/jpeg") -> str:
    """A completed upload of ``data`` by the token's user: its id."""
    r = await api.post("/v1/uploads", headers=auth(token), json={"channel": channel, "filename": filename,
                                                                 "content_type": content_type, "size": len(data)})
    assert r.status_code == 201, r.text
    upload_id: str = r.json()["upload_id"]
    req = r.json()["upload"]
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=10) as plain:
        put = await plain.request(req["method"], req["url"], content=data, headers=req["headers"])
    assert put.status_code == 200, put.text
    r = await api.post(f"/v1/uploads/{upload_id}/complete", headers=auth(token))
    assert r.status_code == 200, r.text
    return upload_id


async def test_a_file_message_from_upload_to_delete(system: System, world: World) -> None:
    """alice sends an image in a ``file`` message; bob receives it live with its attachment, fetches
    the same bytes and the thumbnail, sees it in history, sync and search; carol cannot download it;
    alice deletes the message and the file is gone."""
    alice, bob, carol = auth(world.alice_phone.token), auth(world.bob_phone.token), auth(world.carol_phone.token)
    ch, data = world.channel, jpeg(800, 600)
    async with httpx.AsyncClient(base_url=system.api, timeout=10) as api, \
            httpx.AsyncClient(base_url=system.api, timeout=10) as plain:
        upload_id = await uploaded(api, world.alice_phone.token, ch, data, "beach.jpg")

        async def thumbnail_made() -> bool:
            got = await api.get(f"/v1/uploads/{upload_id}/download", headers=alice)
            return got.json().get("thumbnail_url") is not None

        await wait_for(thumbnail_made, 30, what="a thumbnail from the workers")

        async with Device(world.alice_phone) as alice_dev, Device(world.bob_phone) as bob_dev:
            await bob_dev.join(ch)
            payload = schema.encode(schema.SendRequest(cmid="file-1", kind="file", upload=upload_id,
                                                       body="the zanzibar beach"))
            ack = await alice_dev.send_payload(ch, "file-1", payload)
            assert ack.ok, ack
            # a resend of the same cmid (a lost ack) is answered as the first one
            again = await alice_dev.send_payload(ch, "file-1", payload)
            assert (again.ok, again.id, again.seq) == (True, ack.id, ack.seq)
            await wait_for(lambda: len(bob_dev.received[ch]) >= 1, what="the file message at bob's phone")
            (live,) = bob_dev.received[ch]
            # another message with the same upload is refused, and so is bob's use of alice's upload
            used = await alice_dev.send_payload(ch, "file-2", schema.encode(
                schema.SendRequest(cmid="file-2", kind="file", upload=upload_id)))
            assert used.error is not None
            assert used.error.code == "upload_used"
            theirs = await bob_dev.send_payload(ch, "file-3", schema.encode(
                schema.SendRequest(cmid="file-3", kind="file", upload=upload_id)))
            assert theirs.error is not None
            assert theirs.error.code == "upload_not_yours"

        assert (live.kind, live.body, live.seq, live.id) == ("file", "the zanzibar beach", ack.seq, ack.id)
        att = live.attachment
        assert att is not None
        assert (att.id, att.filename, att.content_type, att.size, att.width, att.height, att.thumbnail_type) == (
            upload_id, "beach.jpg", "image/jpeg", len(data), 800, 600, "image/jpeg")
        assert att.thumbnail_url is not None
        # bob fetches the file: from the live message's URL and through the members-only endpoint
        assert (await plain.get(att.url)).content == data
        r = await api.get(f"/v1/uploads/{upload_id}/download", headers=bob)
        assert r.status_code == 200, r.text
        fresh = r.json()
        original, thumb = await plain.get(fresh["url"]), await plain.get(fresh["thumbnail_url"])
        assert (original.status_code, original.content) == (200, data)
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert img.size == (320, 240)
        r = await api.get(f"/v1/uploads/{upload_id}/download", headers=carol)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "upload_not_found")

        # history, the inbox, sync and search carry the attachment (URLs signed afresh: compare the rest)
        def same_file(got: dict[str, Any] | None) -> bool:
            return got is not None and {k: v for k, v in got.items() if "url" not in k} == {
                "id": upload_id, "filename": "beach.jpg", "content_type": "image/jpeg", "size": len(data),
                "width": 800, "height": 600, "thumbnail_type": "image/jpeg"}

        history = (await api.get(f"/v1/channels/{ch}/messages", headers=bob)).json()["messages"]
        assert [m["kind"] for m in history] == ["file"]
        assert same_file(history[0]["attachment"])
        inbox = (await api.get("/v1/me/inbox", headers=bob)).json()["channels"]
        assert same_file(next(c for c in inbox if c["channel_id"] == ch)["last_message"]["attachment"])
        synced = (await api.post("/v1/sync", headers=bob, json={"channels": []})).json()["channels"]
        assert same_file(next(c for c in synced if c["channel"] == ch)["messages"][0]["attachment"])

        async def found() -> list[dict[str, Any]]:
            r = await api.get("/v1/search", headers=bob, params={"q": "zanzibar", "has": "file"})
            assert r.status_code == 200, r.text
            hits: list[dict[str, Any]] = r.json()["hits"]
            return hits

        async def findable() -> bool:
            return bool(await found())

        await wait_for(findable, 15, what="the file message in search results")
        (hit,) = await found()
        assert hit["has_file"]
        assert same_file(hit["message"]["attachment"])

        # alice deletes the message: the record and the bytes go, old URLs and the endpoint answer 404
        async with Device(world.alice_phone) as alice_dev:
            deleted = await alice_dev.send_payload(ch, "del-1", schema.encode(
                schema.SendRequest(cmid="del-1", kind="delete", target=ack.seq or 0)))
            assert deleted.ok, deleted

        async def gone() -> bool:
            r = await api.get(f"/v1/uploads/{upload_id}/download", headers=bob)
            return r.status_code == 404 and r.json()["error"]["code"] == "upload_not_found"

        await wait_for(gone, 15, what="the deleted message's attachment to be gone")
        if system.env.get("MQCHAT_OBJECTS__BACKEND") == "s3":
            assert bucket_keys(system) == []
            # moto answers a presigned GET with a response-content-disposition (the original's URL) for
            # a missing key with 403 SignatureDoesNotMatch; the thumbnail's URL has none: 404
            assert (await plain.get(fresh["url"])).status_code in (403, 404)
            r = await plain.get(fresh["thumbnail_url"])
            assert (r.status_code, b"NoSuchKey" in r.content) == (404, True)
        else:
            assert [p for p in (system.data_dir / "objects").rglob("*") if p.is_file()] == []
            for url in (fresh["url"], fresh["thumbnail_url"]):
                r = await plain.get(url)
                assert (r.status_code, r.json()["error"]["code"]) == (404, "object_not_found")
        history = (await api.get(f"/v1/channels/{ch}/messages", headers=bob)).json()["messages"]
        assert history[0]["state"]["deleted"]
        assert history[0]["attachment"] is None


async def test_the_rest_send_takes_an_upload(system: System, world: World) -> None:
    """``POST /v1/channels/{id}/messages`` with ``kind: "file"``: same binding, retries and codes."""
    alice = auth(world.alice_phone.token)
    ch, data = world.channel, b"%PDF-1.7\n" + b"0" * 2000
    async with httpx.AsyncClient(base_url=system.api, timeout=10) as api:
        upload_id = await uploaded(api, world.alice_phone.token, ch, data, "report.pdf", "application/pdf")
        body = {"cmid": "rest-1", "kind": "file", "upload": upload_id, "body": "the report"}
        first = await api.post(f"/v1/channels/{ch}/messages", headers=alice, json=body)
        assert first.status_code == 200, first.text
        again = await api.post(f"/v1/channels/{ch}/messages", headers=alice, json=body)
        assert (again.status_code, again.json()["seq"]) == (200, first.json()["seq"])
        r = await api.post(f"/v1/channels/{ch}/messages", headers=alice, json={**body, "cmid": "rest-2"})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "upload_used")
        r = await api.post(f"/v1/channels/{ch}/messages", headers=alice,
                           json={"cmid": "rest-3", "kind": "file", "upload": "u" + "0" * 32})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "upload_not_found")
        history = (await api.get(f"/v1/channels/{ch}/messages", headers=auth(world.bob_phone.token))).json()
        (msg,) = history["messages"]
        att = msg["attachment"]
        assert (msg["kind"], msg["body"], att["id"], att["content_type"], att["size"]) == (
            "file", "the report", upload_id, "application/pdf", len(data))
        assert "width" not in att
        assert "thumbnail_url" not in att
