"""One contract over every object store backend: local files (served by the API's signed-URL routes)
and S3 (boto3 talking to a local S3 server over HTTP)."""

from __future__ import annotations

import time

import httpx
import pytest

from mqchat.objects.base import InvalidKey, ObjectNotFound, ObjectStore


async def test_put_get_head_delete(object_store: ObjectStore) -> None:
    await object_store.put("a/b/one", b"hello world", "text/plain")
    assert await object_store.get("a/b/one") == b"hello world"
    assert await object_store.get("a/b/one", max_bytes=5) == b"hello"
    info = await object_store.head("a/b/one")
    assert info is not None
    assert (info.key, info.size) == ("a/b/one", 11)
    await object_store.put("a/b/one", b"replaced", "text/plain")
    assert await object_store.get("a/b/one") == b"replaced"
    await object_store.delete("a/b/one")
    assert await object_store.head("a/b/one") is None
    with pytest.raises(ObjectNotFound):
        await object_store.get("a/b/one")
    await object_store.delete("a/b/one")  # deleting what is gone is fine


async def test_move_replaces_the_target_and_removes_the_source(object_store: ObjectStore) -> None:
    await object_store.put("m/src", b"new bytes", "application/octet-stream")
    await object_store.put("m/dst", b"old", "application/octet-stream")
    await object_store.move("m/src", "m/dst")
    assert await object_store.get("m/dst") == b"new bytes"
    assert await object_store.head("m/src") is None
    with pytest.raises(ObjectNotFound):
        await object_store.move("m/src", "m/dst")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../../b", "a/./b", "a/b/", "a\\b", "é", "a b"])
async def test_keys_outside_the_grammar_are_refused(object_store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await object_store.put(key, b"x", "text/plain")
    with pytest.raises(InvalidKey):
        await object_store.head(key)
    with pytest.raises(InvalidKey):
        object_store.presign_download(key, expires_at=int(time.time()) + 60)


async def test_presigned_upload_then_download_round_trip(object_store: ObjectStore, http: httpx.AsyncClient) -> None:
    data = b"%PDF-1.4 " + bytes(range(256)) * 64
    exp = int(time.time()) + 60
    req = object_store.presign_upload("up/doc", content_type="application/pdf", size=len(data), expires_at=exp)
    assert req.method == "PUT"
    assert req.headers == {"Content-Type": "application/pdf"}
    r = await http.request(req.method, req.url, content=data, headers=req.headers)
    assert r.status_code == 200, r.text
    info = await object_store.head("up/doc")
    assert info is not None
    assert info.size == len(data)
    url = object_store.presign_download("up/doc", expires_at=exp, filename="report é.pdf")
    r = await http.get(url)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert "report%20%C3%A9.pdf" in r.headers["content-disposition"]

