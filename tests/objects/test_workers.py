"""The workers' attachment loops against a real Redis and the local object store."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from mqchat.config import ObjectsSettings
from mqchat.objects.base import ObjectStore
from mqchat.objects.service import Attachments
from mqchat.objects.uploads import SqliteUploadStore, Upload
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.thumbnail_jobs import ThumbnailJobs
from tests.conftest import RedisServer
from tests.waiting import wait_for
from workers.attachments import run_cleanup, run_thumbnailer


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (5, 5, 5)).save(out, "PNG")
    return out.getvalue()


async def ready_image(att: Attachments, data: bytes) -> Upload:
    from mqchat.objects.policy import UploadRequest

    upload, _ = await att.start_upload("alice", UploadRequest("c1", "a.png", "image/png", len(data)))
    await att.objects.put(upload.incoming_key, data, "image/png")  # what the signed PUT does
    return await att.complete("alice", upload.upload_id)


async def test_the_thumbnailer_takes_jobs_until_stopped(object_store: ObjectStore, tmp_path: Path,
                                                        redis_server: RedisServer) -> None:
    redis = RedisClient.from_url(redis_server.url)
    jobs = ThumbnailJobs(redis)
    att = Attachments(ObjectsSettings(thumbnail_px=50), object_store, SqliteUploadStore(tmp_path / "u.db"), jobs)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_thumbnailer(jobs, att, "t-1", stop))
    try:
        uploads = [await ready_image(att, png(200, 100)), await ready_image(att, png(30, 60))]

        async def all_made() -> bool:
            got = [await att.uploads.get(u.upload_id) for u in uploads]
            return all(u is not None and u.thumbnail_type for u in got)

        await wait_for(all_made, what="thumbnails for both uploads")
        for upload, size in zip(uploads, [(50, 25), (25, 50)], strict=True):
            with Image.open(io.BytesIO(await object_store.get(upload.thumbnail_key))) as img:
                assert img.size == size
        pending = await redis.driver.xpending(redis.keys.thumbnail_jobs, "thumbnailer")
        assert pending["pending"] == 0  # every job acknowledged
    finally:
        stop.set()
        await asyncio.wait_for(worker, 5)  # stops by itself within one read's wait
        await redis.close()


async def test_the_cleanup_loop_removes_expired_uploads(object_store: ObjectStore, tmp_path: Path) -> None:
    now = [10**12]
    att = Attachments(ObjectsSettings(unused_ttl_s=60), object_store, SqliteUploadStore(tmp_path / "u.db"),
                      clock_ms=lambda: now[0])
    upload = await ready_image(att, png(4, 4))
    now[0] += 60_000
    stop = asyncio.Event()
    loop = asyncio.create_task(run_cleanup(att, 0.05, stop))
    try:
        async def gone() -> bool:
            return await att.uploads.get(upload.upload_id) is None

        await wait_for(gone, what="the expired upload removed")
        assert await object_store.head(upload.object_key) is None
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
