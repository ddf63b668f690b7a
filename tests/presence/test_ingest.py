"""The presence ingester: device status publishes → lease events (pure), applied to a real Redis; and
the publisher's rule that a superseded change is never published."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from mqchat.storage.base import Directory
from mqchat.storage.memory import MemoryDirectory
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from tests.conftest import RedisServer
from tests.waiting import wait_for
from workers.presence import (
    INGESTED,
    NO_CONN,
    IngestEvent,
    IngestRefused,
    StatusMessage,
    ingest_event,
    publish_changes,
    run_ingester,
)

TTL = 30_000


def status(st: str, conn: str | None = "c1") -> bytes:
    doc: dict[str, object] = {"status": st, "ts": 1}
    if conn is not None:
        doc["conn"] = conn
    return json.dumps(doc).encode()


def test_statuses_become_lease_events_keyed_by_the_devices_connection() -> None:
    assert ingest_event("presence/alice/phone", status("online")) == IngestEvent("alice", "phone|c1", "connect",
                                                                                 "online")
    assert ingest_event("presence/alice/phone", status("away")) == IngestEvent("alice", "phone|c1", "connect", "away")
    assert ingest_event("presence/alice/phone", status("offline")) == IngestEvent("alice", "phone|c1", "disconnect",
                                                                                  "")
    # an older client names no connection: one lease per device
    assert ingest_event("presence/alice/phone", status("online", None)).member == f"phone|{NO_CONN}"


@pytest.mark.parametrize(("topic", "payload", "code"), [
    ("presence/alice", status("online"), "bad_topic"),  # the user aggregate, not a device status
    ("presence/alice/phone/x", status("online"), "bad_topic"),
    ("presence/al ice/phone", status("online"), "bad_topic"),
    ("presence/alice/phone", b"online", "bad_payload"),
    ("presence/alice/phone", b'{"status": "busy", "ts": 1}', "bad_payload"),
    ("presence/alice/phone", b'{"status": "online"}', "bad_payload"),
    ("presence/alice/phone", b'{"status": "online", "ts": 1, "conn": 5}', "bad_payload"),
    ("presence/alice/phone", status("online", "a|b"), "bad_conn"),
    ("presence/alice/phone", status("online", ""), "bad_conn"),
    ("presence/alice/phone", status("online", "x" * 65), "bad_conn"),
])
def test_a_publish_that_is_not_a_device_status_is_refused_with_a_stable_code(topic: str, payload: bytes,
                                                                             code: str) -> None:
    with pytest.raises(IngestRefused) as caught:
        ingest_event(topic, payload)
    assert caught.value.code == code


@pytest.fixture
async def state(redis_server: RedisServer) -> AsyncIterator[RedisState]:
    redis = RedisClient.from_url(redis_server.url, prefix="t:")
    s = RedisState(redis)
    await s.ensure_change_group()
    yield s
    await redis.close()


class Feed:
    """Messages as the broker would deliver them, one at a time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StatusMessage] = asyncio.Queue()

    def put(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        self.queue.put_nowait(StatusMessage(topic, payload, retained))

    async def __aiter__(self) -> AsyncIterator[StatusMessage]:
        while True:
            yield await self.queue.get()


async def aggregate(state: RedisState, user: str) -> str:
    return (await state.presence_of([user]))[user].status


async def test_a_late_will_of_an_old_connection_does_not_end_the_new_one(state: RedisState) -> None:
    feed = Feed()
    applied = INGESTED.labels("applied")
    start = applied._value.get()
    task = asyncio.create_task(run_ingester(state, aiter(feed), ttl_ms=TTL))
    try:
        feed.put("presence/alice/phone", status("online", "old"))
        await wait_for(lambda: _is(state, "alice", "online"), 5, what="alice online")
        feed.put("presence/alice/phone", status("online", "new"))  # reconnected before the old will came
        feed.put("presence/alice/phone", status("offline", "old"))  # the old connection's will, late
        await wait_for(lambda: applied._value.get() - start == 3, 5, what="3 events written")
        assert await aggregate(state, "alice") == "online"
        assert await state.expire_leases(now_ms=_now_ms() + TTL + 1) == 1  # one lease left: the new one
        assert await aggregate(state, "alice") == "offline"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _is(state: RedisState, user: str, want: str) -> bool:
    return await aggregate(state, user) == want


async def test_retained_copies_and_bad_publishes_change_nothing(state: RedisState) -> None:
    feed = Feed()
    before = {code: INGESTED.labels(code)._value.get() for code in ("retained", "bad_payload", "applied")}
    task = asyncio.create_task(run_ingester(state, aiter(feed), ttl_ms=TTL))
    try:
        feed.put("presence/bob/phone", status("online"), retained=True)  # what bob said before we subscribed
        feed.put("presence/bob/phone", b"garbage")
        feed.put("presence/carol/phone", status("online"))
        await wait_for(lambda: _is(state, "carol", "online"), 5, what="carol online")
        assert await aggregate(state, "bob") == "offline"
        after = {code: INGESTED.labels(code)._value.get() for code in before}
        assert {code: after[code] - before[code] for code in before} == {"retained": 1, "bad_payload": 1,
                                                                         "applied": 1}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_device_expires_after_its_lease(state: RedisState) -> None:
    feed = Feed()
    task = asyncio.create_task(run_ingester(state, aiter(feed), ttl_ms=300))
    try:
        feed.put("presence/dave/phone", status("online"))
        await wait_for(lambda: _is(state, "dave", "online"), 5, what="dave online")
        for _ in range(4):  # heartbeats every third of the lease keep it
            await asyncio.sleep(0.1)
            feed.put("presence/dave/phone", status("online"))
        assert await state.expire_leases(now_ms=_now_ms()) == 0
        await asyncio.sleep(0.35)  # no heartbeat for longer than the lease
        assert await state.expire_leases(now_ms=_now_ms()) == 1
        assert await aggregate(state, "dave") == "offline"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, json.loads(payload)["status"]))


async def test_a_superseded_change_is_acknowledged_and_never_published(state: RedisState) -> None:
    directory: Directory = MemoryDirectory()
    await state.presence_event("erin", "phone|c1", "connect", now_ms=_now_ms(), ttl_ms=TTL)
    old = await state.read_changes("p", block_ms=1)  # read by a leader that then stalled
    await state.presence_event("erin", "phone|c1", "disconnect", now_ms=_now_ms(), ttl_ms=TTL)
    new = await state.read_changes("p", block_ms=1)
    rec = Recorder()
    await publish_changes(state, directory, rec, "p", new)  # the new leader published offline first
    await publish_changes(state, directory, rec, "p", old)  # the stale online comes after: dropped
    assert rec.published == [("presence/erin", "offline")]
    assert await state.read_changes("p", pending=True) == []  # both acknowledged


def test_the_ingester_reads_one_ordered_subscription_unless_told_to_share() -> None:
    from mqchat.config import load_settings
    from workers.app import presence_filter

    assert presence_filter(load_settings(data_dir="d")) == "presence/+/+"
    shared = load_settings(data_dir="d", presence={"shared_ingest": True})
    assert presence_filter(shared) == "$share/presence/presence/+/+"
