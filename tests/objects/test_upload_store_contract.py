"""One contract over every upload record store (SQLite, memory): the state machine and its
compare-and-set writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqchat.objects.uploads import MemoryUploadStore, SqliteUploadStore, Upload, UploadStore


@pytest.fixture(params=["sqlite", "memory"])
async def records(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UploadStore]:
    store: UploadStore = SqliteUploadStore(tmp_path / "uploads.db") if request.param == "sqlite" \
        else MemoryUploadStore()
    yield store
    await store.close()


def make(n: int, *, owner: str = "alice", channel: str = "c1", expires_ms: int = 1000) -> Upload:
    return Upload(f"u{n:032x}", channel, owner, f"f{n}.png", "image/png", 10 + n, created_ms=0, expires_ms=expires_ms)


async def test_pending_ready_attached(records: UploadStore) -> None:
    up = make(1)
    await records.create(up)
    assert await records.get(up.upload_id) == up
    assert await records.get("u" + "f" * 32) is None
    assert not await records.attach(up.upload_id, owner="alice", channel="c1", cmid="m1")  # not ready yet
    assert await records.mark_ready(up.upload_id, width=4, height=3)
    assert not await records.mark_ready(up.upload_id, width=4, height=3)
    assert not await records.attach(up.upload_id, owner="bob", channel="c1", cmid="m1")
    assert not await records.attach(up.upload_id, owner="alice", channel="c2", cmid="m1")
    assert await records.attach(up.upload_id, owner="alice", channel="c1", cmid="m1")
    assert await records.attach(up.upload_id, owner="alice", channel="c1", cmid="m1")  # the same message again
    assert not await records.attach(up.upload_id, owner="alice", channel="c1", cmid="m2")
    got = await records.get(up.upload_id)
    assert got is not None
    assert (got.state, got.cmid, got.width, got.height) == ("attached", "m1", 4, 3)
    await records.set_image(up.upload_id, width=40, height=30, thumbnail_type="image/jpeg")
    got = await records.get(up.upload_id)
    assert got is not None
    assert (got.width, got.height, got.thumbnail_type) == (40, 30, "image/jpeg")


async def test_a_message_carries_one_upload(records: UploadStore) -> None:
    for n in (1, 2):
        await records.create(make(n))
        await records.mark_ready(make(n).upload_id, width=None, height=None)
    assert await records.attach(make(1).upload_id, owner="alice", channel="c1", cmid="m1")
    assert not await records.attach(make(2).upload_id, owner="alice", channel="c1", cmid="m1")
    found = await records.by_messages([("c1", "alice", "m1"), ("c1", "alice", "m2"), ("c1", "bob", "m1")])
    assert {k: u.upload_id for k, u in found.items()} == {("c1", "alice", "m1"): make(1).upload_id}
    assert await records.by_messages([]) == {}


async def test_unused_uploads_by_expiry_and_removal(records: UploadStore) -> None:
    for n, expires in ((1, 300), (2, 100), (3, 200), (4, 5000)):
        await records.create(make(n, expires_ms=expires))
    await records.mark_ready(make(3).upload_id, width=None, height=None)
    await records.attach(make(3).upload_id, owner="alice", channel="c1", cmid="m")
    assert [u.upload_id for u in await records.unused_before(300, 10)] == [make(2).upload_id, make(1).upload_id]
    assert [u.upload_id for u in await records.unused_before(300, 1)] == [make(2).upload_id]
    assert await records.remove(make(2).upload_id)
    assert not await records.remove(make(2).upload_id)
    assert await records.get(make(2).upload_id) is None


async def test_many_messages_at_once(records: UploadStore) -> None:
    keys = []
    for n in range(305):  # more than one SQLite statement's worth of parameters
        await records.create(make(n))
        await records.mark_ready(make(n).upload_id, width=None, height=None)
        await records.attach(make(n).upload_id, owner="alice", channel="c1", cmid=f"m{n}")
        keys.append(("c1", "alice", f"m{n}"))
    assert len(await records.by_messages(keys)) == 305
