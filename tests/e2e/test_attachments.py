"""Attachments through the real processes (``mqchat up``): an upload with a plain HTTP client to the
signed URL, completion, a thumbnail made by the workers, and download URLs for members only, on the
local object store and on S3 (a local S3 server)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

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
