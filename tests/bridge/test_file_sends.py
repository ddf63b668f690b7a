"""``kind: "file"`` sends through the bridge pipeline, over the real attachment service (local object
store and SQLite upload records in a temporary directory): the upload is checked and bound before
the message is stored, each refusal is an error ack with its code and stores nothing, a retry of the
same cmid is answered as the first send, and deleting the message deletes the file."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from bridge.pipeline import Inbound, Pipeline
from bridge.sequencer import Sequencer
from mqchat import schema
from mqchat.config import ObjectsSettings
from mqchat.ids import Snowflake
from mqchat.objects.local import LocalObjectStore
from mqchat.objects.policy import FileSend, UploadRequest
from mqchat.objects.service import Attachments
from mqchat.objects.signing import UrlSigner, derive_key
from mqchat.objects.uploads import SqliteUploadStore, Upload
from mqchat.storage.memory import MemoryDirectory, MemoryMessageStore
from tests.bridge.recording import RecordingPublisher

NOW_MS = 1_800_000_000_000
UNUSED_TTL_S = 3600


@dataclass
class Clock:
    ms: int = NOW_MS

    def __call__(self) -> int:
        return self.ms


@dataclass
class World:
    pipe: Pipeline
    pub: RecordingPublisher
    att: Attachments
    store: MemoryMessageStore
    clock: Clock
    channel: str
    other_channel: str


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=1)
    other, _ = await directory.create_channel("group", None, "alice", ["bob"], now_ms=1)
    clock = Clock()
    att = Attachments(ObjectsSettings(unused_ttl_s=UNUSED_TTL_S),
                      LocalObjectStore(tmp_path / "objects", UrlSigner(derive_key("a-secret-long-enough-to-sign"))),
                      SqliteUploadStore(tmp_path / "uploads.db"), clock_ms=clock)
    store = MemoryMessageStore()
    pub = RecordingPublisher()
    pipe = Pipeline(store, directory, Sequencer(Snowflake(1)), pub, clock_ms=clock, attachments=att)
    yield World(pipe, pub, att, store, clock, channel.channel_id, other.channel_id)
    await att.close()


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(out, "PNG")
    return out.getvalue()


async def upload(w: World, *, user: str = "alice", channel: str | None = None, complete: bool = True) -> Upload:
    """An upload with its bytes stored (as the signed PUT stores them), completed unless told not to."""
    data = png()
    up, _ = await w.att.start_upload(user, UploadRequest(channel or w.channel, "pic.png", "image/png", len(data)))
    await w.att.objects.put(up.incoming_key, data, "image/png")
    return await w.att.complete(user, up.upload_id) if complete else up


def file_send(w: World, upload_id: str, cmid: str, *, user: str = "alice", channel: str | None = None,
              caption: str | None = None) -> Inbound:
    req = schema.SendRequest(cmid=cmid, kind="file", upload=upload_id, body=caption)
    return Inbound(user, "d1", channel or w.channel, schema.encode(req))


def delete(w: World, target: int, cmid: str, user: str = "alice") -> Inbound:
    return Inbound(user, "d1", w.channel, schema.encode(schema.SendRequest(cmid=cmid, kind="delete", target=target)))


async def refused_with(w: World, item: Inbound) -> str:
    """The error code of the ack of ``item``, which must be refused with nothing stored or published."""
    before = len(w.pub.stream())
    stats = await w.pipe.process([item])
    ack = w.pub.acks()[-1]
    assert not ack.ok
    assert ack.error is not None
    assert stats.accepted == 0
    assert len(w.pub.stream()) == before
    assert (await w.store.positions([item.channel]))[item.channel].last_seq == 0
    return ack.error.code


async def test_a_file_message_carries_its_attachment_on_the_stream(world: World) -> None:
    w = world
    up = await upload(w)
    stats = await w.pipe.process([file_send(w, up.upload_id, "f1", caption="the beach")])
    assert stats.accepted == 1
    (msg,) = w.pub.stream()
    assert (msg.kind, msg.body, msg.seq, msg.count_seq) == ("file", "the beach", 1, 1)
    att = msg.attachment
    assert att is not None
    assert (att.id, att.filename, att.content_type, att.size, att.width, att.height) == (
        up.upload_id, "pic.png", "image/png", up.size, 64, 48)
    assert att.thumbnail_url is None  # no worker ran
    assert att.url_expires == NOW_MS // 1000 + w.att.settings.download_url_ttl_s
    assert w.pub.acks()[-1].ok
    bound = await w.att.uploads.get(up.upload_id)
    assert bound is not None
    assert (bound.state, bound.cmid) == ("attached", "f1")


async def test_a_retry_of_the_same_cmid_is_answered_as_the_first_send(world: World) -> None:
    w = world
    up = await upload(w)
    await w.pipe.process([file_send(w, up.upload_id, "f1")])
    stats = await w.pipe.process([file_send(w, up.upload_id, "f1")])
    assert (stats.accepted, stats.duplicates, stats.rejected) == (0, 1, {})
    first, second = w.pub.acks()
    assert second.ok
    assert (second.id, second.seq) == (first.id, first.seq)


async def test_a_retry_after_the_store_lost_the_first_try_binds_again(world: World) -> None:
    w = world
    up = await upload(w)
    # the first try bound the upload and then failed before the message was stored
    await w.att.attach_to_message(FileSend(upload=up.upload_id), user="alice", channel=w.channel, cmid="f1")
    stats = await w.pipe.process([file_send(w, up.upload_id, "f1")])
    assert stats.accepted == 1
    assert w.pub.stream()[0].attachment is not None


async def test_unknown_upload_is_refused(world: World) -> None:
    assert await refused_with(world, file_send(world, "u" + "0" * 32, "f1")) == "upload_not_found"
    assert await refused_with(world, file_send(world, "not-an-upload-id", "f2")) == "upload_not_found"


async def test_another_users_upload_is_refused(world: World) -> None:
    up = await upload(world, user="bob")
    assert await refused_with(world, file_send(world, up.upload_id, "f1")) == "upload_not_yours"


async def test_an_upload_made_for_another_channel_is_refused(world: World) -> None:
    up = await upload(world, channel=world.other_channel)
    assert await refused_with(world, file_send(world, up.upload_id, "f1")) == "upload_not_yours"


async def test_an_upload_not_completed_is_refused(world: World) -> None:
    up = await upload(world, complete=False)
    assert await refused_with(world, file_send(world, up.upload_id, "f1")) == "upload_incomplete"


async def test_an_expired_upload_is_refused(world: World) -> None:
    up = await upload(world)
    world.clock.ms += UNUSED_TTL_S * 1000
    assert await refused_with(world, file_send(world, up.upload_id, "f1")) == "upload_expired"


async def test_an_upload_already_in_a_message_is_refused(world: World) -> None:
    w = world
    up = await upload(w)
    await w.pipe.process([file_send(w, up.upload_id, "f1")])
    stats = await w.pipe.process([file_send(w, up.upload_id, "f2")])
    assert stats.rejected == {"upload_used": 1}
    assert [m.cmid for m in w.pub.stream()] == ["f1"]


async def test_two_sends_of_one_upload_in_a_batch_the_first_wins(world: World) -> None:
    w = world
    up = await upload(w)
    stats = await w.pipe.process([file_send(w, up.upload_id, "f1"), file_send(w, up.upload_id, "f2")])
    assert (stats.accepted, stats.rejected) == (1, {"upload_used": 1})
    assert [(a.cmid, a.ok) for a in w.pub.acks()] == [("f2", False), ("f1", True)]  # refusals ack first


async def test_a_non_member_is_refused_before_the_upload_is_touched(world: World) -> None:
    w = world
    up = await upload(w)
    assert await refused_with(w, file_send(w, up.upload_id, "f1", user="mallory")) == "not_member"
    still = await w.att.uploads.get(up.upload_id)
    assert still is not None
    assert still.state == "ready"


async def test_a_file_send_without_an_upload_is_a_schema_error(world: World) -> None:
    item = Inbound("alice", "d1", world.channel, b'{"cmid": "f1", "kind": "file", "body": "x"}')
    assert await refused_with(world, item) == "missing_field"


async def test_without_an_object_store_a_file_send_is_unavailable(tmp_path: Path) -> None:
    directory = MemoryDirectory()
    channel, _ = await directory.create_channel("group", None, "alice", [], now_ms=1)
    pub = RecordingPublisher()
    pipe = Pipeline(MemoryMessageStore(), directory, Sequencer(Snowflake(1)), pub)
    req = schema.SendRequest(cmid="f1", kind="file", upload="u" + "0" * 32)
    stats = await pipe.process([Inbound("alice", "d1", channel.channel_id, schema.encode(req))])
    assert stats.rejected == {"unavailable": 1}


async def test_deleting_the_message_deletes_its_file(world: World) -> None:
    w = world
    up = await upload(w)
    await w.pipe.process([file_send(w, up.upload_id, "f1")])
    assert await w.att.objects.head(up.object_key) is not None
    stats = await w.pipe.process([delete(w, 1, "d1")])
    assert stats.accepted == 1
    assert await w.att.uploads.get(up.upload_id) is None
    assert await w.att.objects.head(up.object_key) is None
    assert await w.att.attachments_for([(w.channel, "alice", "f1")]) == {}


async def test_deleting_a_text_message_leaves_files_alone(world: World) -> None:
    w = world
    up = await upload(w)
    text = Inbound("alice", "d1", w.channel, schema.encode(schema.SendRequest(cmid="t1", kind="text", body="hi")))
    await w.pipe.process([text, file_send(w, up.upload_id, "f1")])
    await w.pipe.process([delete(w, 1, "d1")])
    assert await w.att.objects.head(up.object_key) is not None
    assert set(await w.att.attachments_for([(w.channel, "alice", "f1")])) == {(w.channel, "alice", "f1")}
