"""The attachment service over both object stores, SQLite upload records and a real Redis job stream:
upload, verify, thumbnail, attach, read, delete, clean up."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mqchat.config import ObjectsSettings
from mqchat.objects.base import ObjectStore
from mqchat.objects.local import LocalObjectStore
from mqchat.objects.policy import AttachmentError, FileSend, UploadRequest
from mqchat.objects.service import Attachments
from mqchat.objects.uploads import SqliteUploadStore, Upload
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.thumbnail_jobs import ThumbnailJobs
from tests.conftest import RedisServer


@dataclass
class Clock:
    """Wall time until a test moves it on (the signed-URL routes check expiry against real time)."""

    ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def __call__(self) -> int:
        return self.ms


@dataclass
class World:
    att: Attachments
    jobs: ThumbnailJobs
    clock: Clock
    http: httpx.AsyncClient


@pytest.fixture
async def world(object_store: ObjectStore, http: httpx.AsyncClient, tmp_path: Path,
                redis_server: RedisServer) -> AsyncIterator[World]:
    redis = RedisClient.from_url(redis_server.url)
    jobs = ThumbnailJobs(redis)
    await jobs.ensure_group()
    clock = Clock()
    att = Attachments(ObjectsSettings(max_upload_bytes=100_000, unused_ttl_s=3600), object_store,
                      SqliteUploadStore(tmp_path / "uploads.db"), jobs, clock_ms=clock)
    yield World(att, jobs, clock, http)
    await redis.close()


def png_bytes(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


async def uploaded(w: World, data: bytes, *, ctype: str = "image/png", size: int | None = None,
                   user: str = "alice", channel: str = "c1", name: str = "pic.png") -> Upload:
    upload, req = await w.att.start_upload(user, UploadRequest(channel, name, ctype, len(data) if size is None
                                                               else size))
    r = await w.http.request(req.method, req.url, content=data, headers=req.headers)
    assert r.status_code == 200, r.text
    return upload


async def test_an_image_goes_from_upload_to_message_with_a_thumbnail(world: World) -> None:
    w = world
    data = png_bytes()
    upload = await uploaded(w, data)
    ready = await w.att.complete("alice", upload.upload_id)
    assert (ready.state, ready.size, ready.width, ready.height) == ("ready", len(data), 640, 480)
    assert await w.att.complete("alice", upload.upload_id) == ready  # idempotent

    jobs = await w.jobs.take("t1", count=10, block_ms=100, claim_idle_ms=60_000)
    assert [u for _, u in jobs] == [upload.upload_id]
    assert await w.att.make_thumbnail(upload.upload_id) == "made"
    await w.jobs.ack(jobs[0][0])
    thumb_info = await w.att.objects.head(upload.thumbnail_key)
    assert thumb_info is not None
    assert 0 < thumb_info.size < len(data)

    att = await w.att.attach_to_message(FileSend(upload=upload.upload_id, caption="hi"), user="alice", channel="c1",
                                        cmid="m1")
    assert (att.id, att.filename, att.content_type, att.size, att.width, att.height) == (
        upload.upload_id, "pic.png", "image/png", len(data), 640, 480)
    assert att.thumbnail_url is not None
    assert att.thumbnail_type == "image/jpeg"
    assert att.url_expires == w.clock.ms // 1000 + w.att.settings.download_url_ttl_s
    # a retried send (same cmid) attaches again; another message cannot take it
    again = await w.att.attach_to_message(FileSend(upload=upload.upload_id), user="alice", channel="c1", cmid="m1")
    assert again.id == att.id
    with pytest.raises(AttachmentError, match="upload_used"):
        await w.att.attach_to_message(FileSend(upload=upload.upload_id), user="alice", channel="c1", cmid="m2")

    found = await w.att.attachments_for([("c1", "alice", "m1"), ("c1", "alice", "nope")])
    assert list(found) == [("c1", "alice", "m1")]
    r = await w.http.get(found[("c1", "alice", "m1")].url)
    assert (r.status_code, r.content) == (200, data)
    assert found[("c1", "alice", "m1")].thumbnail_url is not None
    r = await w.http.get(found[("c1", "alice", "m1")].thumbnail_url or "")
    assert r.status_code == 200
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size == (320, 240)

    # deleting the message deletes the objects and the record
    assert await w.att.delete_for_messages([("c1", "alice", "m1")]) == 1
    assert await w.att.objects.head(upload.object_key) is None
    assert await w.att.objects.head(upload.thumbnail_key) is None
    assert await w.att.uploads.get(upload.upload_id) is None
    assert await w.att.delete_attachment(upload.upload_id) is False


async def test_a_file_that_lies_about_its_type_is_refused_and_removed(world: World) -> None:
    upload = await uploaded(world, b"<html><script>alert(1)</script></html>", name="cat.png")
    with pytest.raises(AttachmentError) as caught:
        await world.att.complete("alice", upload.upload_id)
    assert (caught.value.code, caught.value.status) == ("type_mismatch", 422)
    for key in (upload.incoming_key, upload.object_key):
        assert await world.att.objects.head(key) is None
    with pytest.raises(AttachmentError, match="upload_not_found"):
        await world.att.complete("alice", upload.upload_id)


async def test_stored_bytes_of_another_size_are_refused(world: World) -> None:
    data = png_bytes(8, 8)
    upload = await uploaded(world, data[:-5], size=len(data))  # fewer bytes than declared
    with pytest.raises(AttachmentError, match="size_mismatch"):
        await world.att.complete("alice", upload.upload_id)
    assert await world.att.objects.head(upload.object_key) is None


async def test_more_bytes_than_declared(world: World, object_store: ObjectStore) -> None:
    data = png_bytes(8, 8)
    upload, req = await world.att.start_upload("alice", UploadRequest("c1", "a.png", "image/png", 10))
    r = await world.http.request(req.method, req.url, content=data, headers=req.headers)
    if isinstance(object_store, LocalObjectStore):
        assert r.status_code == 413  # the signed URL caps the body
        assert r.json()["error"]["code"] == "upload_too_large"
        with pytest.raises(AttachmentError, match="upload_incomplete"):
            await world.att.complete("alice", upload.upload_id)
    else:
        assert r.status_code == 200  # S3 presigned PUTs cannot cap the size: the check after does
        with pytest.raises(AttachmentError, match="size_mismatch"):
            await world.att.complete("alice", upload.upload_id)
        assert await world.att.objects.head(upload.object_key) is None


async def test_a_send_before_the_upload_is_complete_or_by_someone_else(world: World) -> None:
    upload, _ = await world.att.start_upload("alice", UploadRequest("c1", "a.png", "image/png", 10))
    with pytest.raises(AttachmentError, match="upload_incomplete"):
        await world.att.complete("alice", upload.upload_id)
    send = FileSend(upload=upload.upload_id)
    with pytest.raises(AttachmentError, match="upload_incomplete"):
        await world.att.attach_to_message(send, user="alice", channel="c1", cmid="m1")
    for user, channel in (("bob", "c1"), ("alice", "c2")):
        with pytest.raises(AttachmentError, match="upload_not_yours"):
            await world.att.attach_to_message(send, user=user, channel=channel, cmid="m1")
    with pytest.raises(AttachmentError, match="upload_not_found"):
        await world.att.complete("bob", upload.upload_id)  # bob learns nothing about alice's upload
    for unknown in ("u" + "f" * 32, "../../x", ""):
        with pytest.raises(AttachmentError, match="upload_not_found"):
            await world.att.attach_to_message(FileSend(upload=unknown), user="alice", channel="c1", cmid="m1")


async def test_unused_uploads_expire_and_are_cleaned_up(world: World) -> None:
    used = await uploaded(world, png_bytes(4, 4))
    await world.att.complete("alice", used.upload_id)
    await world.att.attach_to_message(FileSend(upload=used.upload_id), user="alice", channel="c1", cmid="m1")
    ready = await uploaded(world, png_bytes(5, 5))
    await world.att.complete("alice", ready.upload_id)
    pending = await uploaded(world, b"just text", ctype="text/plain", name="a.txt")

    assert await world.att.cleanup_unused() == 0
    world.clock.ms += 3600 * 1000
    with pytest.raises(AttachmentError, match="upload_expired"):
        await world.att.attach_to_message(FileSend(upload=ready.upload_id), user="alice", channel="c1", cmid="m2")
    with pytest.raises(AttachmentError, match="upload_expired"):
        await world.att.complete("alice", pending.upload_id)
    assert await world.att.cleanup_unused() == 2
    assert await world.att.uploads.get(ready.upload_id) is None
    assert await world.att.uploads.get(pending.upload_id) is None
    assert await world.att.objects.head(ready.object_key) is None
    assert await world.att.objects.head(pending.incoming_key) is None
    assert await world.att.uploads.get(used.upload_id) is not None
    assert await world.att.objects.head(used.object_key) is not None


async def test_a_broken_image_gets_no_thumbnail_but_stays_usable(world: World) -> None:
    data = png_bytes(10, 10)
    broken = data[:40] + b"\x00" * (len(data) - 40)
    upload = await uploaded(world, broken)
    await world.att.complete("alice", upload.upload_id)
    assert await world.att.make_thumbnail(upload.upload_id) == "bad_image"
    att = await world.att.attach_to_message(FileSend(upload=upload.upload_id), user="alice", channel="c1", cmid="m1")
    assert att.thumbnail_url is None
    assert await world.att.make_thumbnail("u" + "0" * 32) == "gone"
