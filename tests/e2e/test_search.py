"""Search end to end: ``mqchat up`` (bridge → message log → indexer in the workers → index) and
``GET /v1/search``, with real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.client import Api, Device
from harness.http import ApiError
from mqchat import schema
from mqchat.search.sqlite import SqliteSearchIndex
from tests.conftest import System
from tests.e2e.conftest import World, make_world
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

FINDABLE_WITHIN_S = 2.0


@pytest.fixture
def system(system_factory: Any) -> System:
    """The system with a search allowance fit for tests that poll search until the indexer caught
    up (the per-user limit itself is tested below with its own system)."""
    s: System = system_factory()
    s.env["MQCHAT_RATELIMIT__SEARCH_PER_USER"] = "1000/1m"
    s.start()
    return s


async def search(api: Api, token: str, **params: Any) -> dict[str, Any]:
    doc: dict[str, Any] = await api._call("GET", "/v1/search", token, params=params)
    return doc


async def ids(api: Api, token: str, **params: Any) -> list[str]:
    return [h["message"]["id"] for h in (await search(api, token, **params))["hits"]]


async def status_of(api: Api, token: str, path: str, **params: Any) -> tuple[int, str, Any]:
    """``(status, error code or "", body)`` of one request that may fail."""
    try:
        body = await api._call("GET", path, token, params=params or None)
    except ApiError as exc:
        return exc.status, exc.code, None
    return 200, "", body


async def test_a_message_is_findable_within_2_s_of_its_ack_with_the_history_payload(
        system: System, world: World) -> None:
    async with Device(world.alice_phone) as alice:
        ack = await alice.send(world.channel, "the quarterly zebra report is ready")
        acked = time.monotonic()
        assert ack.ok
        found_at: list[float] = []

        async def findable() -> bool:
            if await ids(world.api, world.bob_phone.token, q="zebra"):
                found_at.append(time.monotonic())
                return True
            return False

        await wait_for(findable, 15, what="the message in search results")
    assert found_at[0] - acked <= FINDABLE_WITHIN_S, f"findable {found_at[0] - acked:.2f} s after the ack"
    page = await search(world.api, world.bob_phone.token, q="zeb*")
    [hit] = page["hits"]
    history = await world.api.history(world.bob_phone.token, world.channel)
    assert hit["message"] == history["messages"][-1]
    assert hit["message"]["id"] == ack.id
    assert "<mark>zebra</mark>" in hit["snippet"]
    assert hit["server"] is None
    assert hit["has_file"] is False
    assert page["next_cursor"] is None


async def test_a_removed_member_finds_nothing_of_that_channel_at_once(system: System, world: World) -> None:
    api = world.api
    other = await api.create_channel(world.bob_phone.token, "group", [world.carol], name="other")
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        assert (await alice.send(world.channel, "pelican sighting in team")).ok
        assert (await bob.send(other, "pelican sighting in other")).ok

    async def both_indexed() -> bool:
        return len(await ids(api, world.bob_phone.token, q="pelican")) == 2

    await wait_for(both_indexed, 15, what="both messages indexed")
    await api.remove_member(world.alice_phone.token, world.channel, world.bob)
    assert [h["message"]["channel"] for h in (await search(api, world.bob_phone.token, q="pelican"))["hits"]] == [
        other]
    # the channel as a filter: an empty result, not an error that would reveal it
    assert await search(api, world.bob_phone.token, q="pelican", channel=world.channel) == {
        "hits": [], "next_cursor": None}
    # alice (never in "other") cannot reach it either
    assert await ids(api, world.alice_phone.token, q="pelican", channel=other) == []
    assert len(await ids(api, world.alice_phone.token, q="pelican")) == 1


async def test_paging_returns_every_hit_exactly_once(system: System, world: World) -> None:
    total = 45
    async with Device(world.alice_phone) as alice:
        sent = [(await alice.send(world.channel, f"walrus number {i}")).id for i in range(total)]

    async def all_indexed() -> bool:
        return len(await ids(world.api, world.bob_phone.token, q="walrus", limit=100)) == total

    await wait_for(all_indexed, 20, what="every message indexed")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"q": "walrus", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = await search(world.api, world.bob_phone.token, **params)
        seen += [h["message"]["id"] for h in page["hits"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 7
    assert len(seen) == len(set(seen)) == total
    assert set(seen) == set(sent)
    assert seen == sorted(seen, key=int, reverse=True)  # newest first


async def test_every_bad_query_is_a_400_or_empty_never_a_500_or_a_leak(system: System, world: World) -> None:
    api = world.api
    token = world.bob_phone.token
    secret = await api.create_channel(world.alice_phone.token, "group", [world.carol], name="secret")
    async with Device(world.alice_phone) as alice:
        assert (await alice.send(secret, "classified narwhal plans")).ok
        assert (await alice.send(world.channel, "public narwhal plans")).ok

    async def indexed() -> bool:
        return len(await ids(api, world.carol_phone.token, q="narwhal")) == 1 and len(
            await ids(api, token, q="narwhal")) == 1

    await wait_for(indexed, 15, what="both messages indexed")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"q": ""}, 400, "empty_query"),
        ({"q": "   "}, 400, "empty_query"),
        ({"q": "x" * 1000}, 400, "query_too_long"),
        ({"q": " ".join(f"w{i}" for i in range(40))}, 400, "too_many_terms"),
        ({"q": "*"}, 400, "empty_query"),
        ({"q": '"'}, 400, "empty_query"),
        ({"q": '"narwhal plans'}, 200, ""),
        ({"q": "narwhal NEAR plans"}, 200, ""),
        ({"q": "narwhal OR classified"}, 200, ""),
        ({"q": "NEAR(narwhal plans)"}, 200, ""),
        ({"q": "narwhal -classified"}, 200, ""),
        ({"q": "narwhal", "colour": "red"}, 400, "unknown_filter"),
        ({"q": "narwhal", "channel": "../etc"}, 400, "invalid_filter"),
        ({"q": "narwhal", "before": "yesterday"}, 400, "invalid_filter"),
        ({"q": "narwhal", "has": "image"}, 400, "invalid_filter"),
        ({"q": "narwhal", "limit": 0}, 400, "invalid_limit"),
        ({"q": "narwhal", "limit": 101}, 400, "invalid_limit"),
        ({"q": "narwhal", "cursor": "garbage!"}, 400, "invalid_cursor"),
        ({"q": "narwhal", "channel": secret}, 200, ""),
        ({"q": "narwhal", "channel": "nonexistent"}, 200, ""),
        ({"q": "classified"}, 200, ""),
    ]
    for params, status, code in cases:
        got_status, got_code, body = await status_of(api, token, "/v1/search", **params)
        assert (got_status, got_code) == (status, code), params
        if body is not None:
            assert all(h["message"]["channel"] == world.channel for h in body["hits"]), params
            assert "classified" not in str(body), params
    # no q at all
    assert (await status_of(api, token, "/v1/search"))[0] == 422
    # a parameter twice
    assert (await status_of(api, token, "/v1/search?q=a&channel=x&channel=y"))[:2] == (400, "invalid_filter")
    # a cursor from another query
    first = await search(api, token, q="narwhal", limit=1)
    assert first["next_cursor"] is None
    async with Device(world.alice_phone) as alice:
        assert (await alice.send(world.channel, "narwhal again")).ok
    await wait_for(lambda: _count(api, token, "narwhal", 2), 15, what="the second message indexed")
    page = await search(api, token, q="narwhal", limit=1)
    assert page["next_cursor"]
    assert (await status_of(api, token, "/v1/search", q="plans", limit=1, cursor=page["next_cursor"]))[:2] == (
        400, "cursor_mismatch")
    # without a token
    assert (await status_of(api, "", "/v1/search", q="narwhal"))[0] == 401


async def _count(api: Api, token: str, q: str, n: int) -> bool:
    return len(await ids(api, token, q=q, limit=100)) == n


async def test_search_is_rate_limited_per_user(system_factory: Any) -> None:
    s: System = system_factory()
    s.env["MQCHAT_RATELIMIT__SEARCH_PER_USER"] = "3/1m"
    s.start()
    api = Api(s.api)
    try:
        world = await make_world(api)
        for _ in range(3):
            await search(api, world.bob_phone.token, q="anything")
        assert (await status_of(api, world.bob_phone.token, "/v1/search", q="anything"))[:2] == (
            429, "rate_limited")
        # another user has their own allowance
        await search(api, world.alice_phone.token, q="anything")
    finally:
        await api.aclose()


async def test_mqchat_reindex_rebuilds_an_index_equal_to_the_live_one(system: System, world: World,
                                                                      tmp_path: Path) -> None:
    api = world.api
    other = await api.create_channel(world.bob_phone.token, "group", [world.carol], name="other")
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        for i in range(30):
            assert (await alice.send(world.channel, f"kestrel {i} in team")).ok
            assert (await bob.send(other, f"kestrel {i} in other")).ok

    await wait_for(lambda: _count(api, world.bob_phone.token, "kestrel", 60), 20, what="every message indexed")
    rebuilt = tmp_path / "rebuilt.db"
    for extra in ([], ["--channel", other]):
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "mqchat.cli", "reindex", "--data-dir", str(system.data_dir),
                             "--index", f"sqlite:///{rebuilt}", *extra],
            capture_output=True, text=True, timeout=120, env=_env(system))
        assert done.returncode == 0, done.stderr
    assert "reindexed 30 messages of 1 channel(s)" in done.stderr
    live = await SqliteSearchIndex.open(str(system.data_dir / "search.db"))
    copy = await SqliteSearchIndex.open(str(rebuilt))
    try:
        assert await copy.count() == await live.count() == 60
        assert await copy.list_docs(limit=1000) == await live.list_docs(limit=1000)
    finally:
        await live.close()
        await copy.close()


def _env(system: System) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | system.env


def found(api: Api, token: str, q: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await ids(api, token, q=q))

    return check


async def event(device: Device, channel: str, **fields: Any) -> None:
    cmid = device.next_cmid()
    ack = await device.send_payload(channel, cmid, schema.encode(schema.SendRequest(cmid=cmid, **fields)))
    assert ack.ok, ack


async def test_an_edited_message_is_found_by_its_new_text_not_its_old(system: System, world: World) -> None:
    token = world.bob_phone.token
    async with Device(world.alice_phone) as alice:
        ack = await alice.send(world.channel, "meet at the lighthouse")
        assert ack.ok
        assert ack.seq is not None
        await wait_for(found(world.api, token, "lighthouse"), 15, what="the original text indexed")
        await event(alice, world.channel, kind="edit", target=ack.seq, body="meet at the harbour")

        async def moved() -> bool:
            return bool(await ids(world.api, token, q="harbour")) and not await ids(world.api, token, q="lighthouse")

        await wait_for(moved, 15, what="the edit replacing the indexed text")
    [hit] = (await search(world.api, token, q="harbour"))["hits"]
    assert hit["message"]["id"] == ack.id
    assert hit["message"]["state"]["body"] == "meet at the harbour"


async def test_a_deleted_message_is_not_found(system: System, world: World) -> None:
    token = world.bob_phone.token
    async with Device(world.alice_phone) as alice:
        ack = await alice.send(world.channel, "the vault code is platypus")
        assert ack.ok
        assert ack.seq is not None
        await wait_for(found(world.api, token, "platypus"), 15, what="the message indexed")
        await event(alice, world.channel, kind="delete", target=ack.seq)

        async def gone() -> bool:
            return not await ids(world.api, token, q="platypus")

        await wait_for(gone, 15, what="the delete removing it from the index")
