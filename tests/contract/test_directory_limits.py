"""The directory's member cap (``limits.max_channel_members``) and its member pages, on every backend
(memory, SQLite, PostgreSQL): every path that adds a member refuses past the cap with a typed error and
changes nothing; every member is on exactly one page of a walk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqchat.errors import Full, InvalidRequest
from mqchat.permissions import NONE, Permission
from mqchat.storage.base import ServerDirectory
from tests.contract.conftest import SERVER_DIRECTORIES, open_server_directory

T0 = 1_700_000_000_000
CAP = 3


@pytest.fixture(params=SERVER_DIRECTORIES)
async def capped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerDirectory]:
    """A directory whose channels and servers hold at most :data:`CAP` members."""
    d = await open_server_directory(request.param, request, tmp_path, max_channel_members=CAP)
    try:
        yield d
    finally:
        await d.close()


async def users(sd: ServerDirectory, *names: str) -> list[str]:
    return [(await sd.create_user(n, "h", now_ms=T0)).user_id for n in names]


def walk(pages: list[list[str]]) -> list[str]:
    return [u for page in pages for u in page]


async def all_pages(sd: ServerDirectory, channel_id: str, *, limit: int, scan: int = 2000) -> list[list[str]]:
    pages: list[list[str]] = []
    after: str | None = None
    for _ in range(200):
        page = await sd.channel_members(channel_id, after=after, limit=limit, scan=scan)
        assert len(page.user_ids) <= limit
        pages.append(page.user_ids)
        if page.next_after is None:
            return pages
        after = page.next_after
    raise AssertionError("the walk did not end")


# --- the cap -----------------------------------------------------------------------------------------


async def test_a_group_channel_is_created_and_grown_up_to_the_cap_only(capped: ServerDirectory) -> None:
    sd = capped
    a, b, c, d = await users(sd, "a", "b", "c", "d")
    with pytest.raises(Full) as refused:
        await sd.create_channel("group", "big", a, [b, c, d], now_ms=T0)
    assert (refused.value.code, refused.value.limit) == ("channel_full", CAP)
    assert await sd.channels_of(a) == []  # nothing was created

    channel, _ = await sd.create_channel("group", "team", a, [b], now_ms=T0)
    assert await sd.add_member(channel.channel_id, c, now_ms=T0)
    with pytest.raises(Full) as refused:
        await sd.add_member(channel.channel_id, d, now_ms=T0)
    assert refused.value.code == "channel_full"
    assert await sd.members(channel.channel_id) == sorted([a, b, c])
    # adding someone already in it is not an error at the cap
    assert not await sd.add_member(channel.channel_id, b, now_ms=T0)
    # a place freed is a place to take
    assert await sd.remove_member(channel.channel_id, b)
    assert await sd.add_member(channel.channel_id, d, now_ms=T0)
    assert await sd.members(channel.channel_id) == sorted([a, c, d])
    # a direct channel always fits (the cap is at least 2)
    _, created = await sd.create_channel("direct", None, a, [b], now_ms=T0)
    assert created


async def test_concurrent_adds_never_pass_the_cap(capped: ServerDirectory) -> None:
    sd = capped
    owner, *others = await users(sd, "owner", "u1", "u2", "u3", "u4", "u5")
    channel, _ = await sd.create_channel("group", "race", owner, [], now_ms=T0)
    for _ in range(3):  # PostgreSQL: open the pool's connections, so that the adds below do overlap
        await asyncio.gather(*(sd.members(channel.channel_id) for _ in range(8)))
    results = await asyncio.gather(*(sd.add_member(channel.channel_id, u, now_ms=T0) for u in others),
                                   return_exceptions=True)
    assert sum(r is True for r in results) == CAP - 1
    assert all(r is True or isinstance(r, Full) for r in results), results
    assert len(await sd.members(channel.channel_id)) == CAP


async def test_a_server_is_joined_up_to_the_cap_only_by_every_path(capped: ServerDirectory) -> None:
    sd = capped
    owner, a, b, c = await users(sd, "owner", "a", "b", "c")
    server = await sd.create_server(owner, "Guild", discoverable=True, now_ms=T0)
    sid = server.server_id
    general = await sd.create_server_channel(owner, sid, "general", now_ms=T0)
    assert await sd.join_server(a, sid, now_ms=T0)
    invite = await sd.create_invite(owner, sid, max_uses=10, now_ms=T0)
    await sd.use_invite(b, invite.code, now_ms=T0)

    # full: a discoverable join and an invite are both refused, and nothing changes
    with pytest.raises(Full) as refused:
        await sd.join_server(c, sid, now_ms=T0)
    assert (refused.value.code, refused.value.limit) == ("server_full", CAP)
    with pytest.raises(Full):
        await sd.use_invite(c, invite.code, now_ms=T0)
    assert await sd.member(sid, c) is None
    assert c not in await sd.members(general.channel_id)
    got = await sd.get_invite(invite.code)
    assert got is not None
    assert got.uses == 1
    # members already in are not refused
    assert not await sd.join_server(a, sid, now_ms=T0)
    assert (await sd.use_invite(b, invite.code, now_ms=T0)).server_id == sid
    # a member leaving makes room
    await sd.leave_server(a, sid, now_ms=T0)
    await sd.use_invite(c, invite.code, now_ms=T0)
    assert await sd.members(general.channel_id) == sorted([owner, b, c])


async def test_the_default_cap_is_the_documented_one(sd: ServerDirectory) -> None:
    from mqchat.config import load_settings
    from mqchat.storage.directory import DirectoryRules

    assert isinstance(sd, DirectoryRules)
    limits = load_settings().limits
    assert sd.max_channel_members == limits.max_channel_members == 500_000
    assert (sd.max_channels_per_user, sd.max_servers_per_user) == (limits.max_channels_per_user,
                                                                   limits.max_servers_per_user) == (10_000, 200)


# --- member pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 5, 7])
async def test_a_group_channels_members_come_exactly_once_across_pages(sd: ServerDirectory, limit: int) -> None:
    owner, *others = await users(sd, *(f"m{i}" for i in range(7)))
    channel, _ = await sd.create_channel("group", "g", owner, others, now_ms=T0)
    pages = await all_pages(sd, channel.channel_id, limit=limit)
    assert walk(pages) == sorted([owner, *others])
    assert all(len(p) == limit for p in pages[:-1])  # explicit members: only the last page is short
    assert len(pages) == -(-7 // limit)


async def test_a_server_channels_members_are_those_who_see_it_exactly_once(sd: ServerDirectory) -> None:
    owner, *rest = await users(sd, *(f"s{i:02d}" for i in range(12)))
    server = await sd.create_server(owner, "Guild", discoverable=True, now_ms=T0)
    sid = server.server_id
    for u in rest:
        await sd.join_server(u, sid, now_ms=T0)
    general = await sd.create_server_channel(owner, sid, "general", now_ms=T0)
    private = await sd.create_server_channel(owner, sid, "private", private=True, now_ms=T0)
    insiders = rest[3:5] + rest[9:10]
    for u in insiders:
        await sd.set_overwrite(owner, private.channel_id, "member", u, allow=Permission.VIEW_CHANNEL, deny=NONE,
                               now_ms=T0)
    everyone = sorted([owner, *rest])
    for limit in (1, 3, 100):
        for scan in (1, 2, 5, 2000):
            assert walk(await all_pages(sd, general.channel_id, limit=limit, scan=scan)) == everyone
            pages = await all_pages(sd, private.channel_id, limit=limit, scan=scan)
            assert walk(pages) == sorted([owner, *insiders]), (limit, scan)
    # a small scan makes short (even empty) pages while the walk goes on; a big one fills them
    assert [] in await all_pages(sd, private.channel_id, limit=3, scan=1)
    assert await all_pages(sd, private.channel_id, limit=100) == [sorted([owner, *insiders])]
    assert (await sd.channel_members(private.channel_id)).user_ids == await sd.members(private.channel_id)


async def test_member_pages_refuse_bad_limits_and_know_no_missing_channel(sd: ServerDirectory) -> None:
    owner, = await users(sd, "solo")
    channel, _ = await sd.create_channel("group", "g", owner, [], now_ms=T0)
    for bad in (0, 1001):
        with pytest.raises(InvalidRequest):
            await sd.channel_members(channel.channel_id, limit=bad)
    page = await sd.channel_members("c-missing")
    assert (page.user_ids, page.next_after) == ([], None)


# --- roles, channels and overwrites --------------------------------------------------------------------


async def test_roles_channels_and_overwrites_are_bounded(sd: ServerDirectory) -> None:
    from mqchat.errors import TooMany
    from mqchat.storage.directory import MAX_OVERWRITES, MAX_ROLES, MAX_SERVER_CHANNELS, DirectoryRules

    assert isinstance(sd, DirectoryRules)
    assert (sd.max_roles, sd.max_server_channels, sd.max_overwrites) == (MAX_ROLES, MAX_SERVER_CHANNELS,
                                                                         MAX_OVERWRITES) == (250, 500, 500)
    sd.max_roles, sd.max_server_channels, sd.max_overwrites = 2, 2, 3  # small, so the test stays quick
    owner, a, b = await users(sd, "owner", "a", "b")
    sid = (await sd.create_server(owner, "Guild", discoverable=True, now_ms=T0)).server_id
    for u in (a, b):
        await sd.join_server(u, sid, now_ms=T0)

    first = await sd.create_role(owner, sid, "one", NONE, now_ms=T0)
    await sd.create_role(owner, sid, "two", NONE, now_ms=T0)
    with pytest.raises(TooMany) as refused:
        await sd.create_role(owner, sid, "three", NONE, now_ms=T0)
    assert (refused.value.code, refused.value.limit) == ("too_many_roles", 2)
    assert len(await sd.roles(sid)) == 3  # @everyone is not counted
    await sd.delete_role(owner, sid, first.role_id, now_ms=T0)
    await sd.create_role(owner, sid, "three", NONE, now_ms=T0)

    general = await sd.create_server_channel(owner, sid, "general", now_ms=T0)
    await sd.create_server_channel(owner, sid, "random", now_ms=T0)
    with pytest.raises(TooMany) as refused:
        await sd.create_server_channel(owner, sid, "more", now_ms=T0)
    assert refused.value.code == "too_many_channels"
    assert len(await sd.server_channels(sid)) == 2

    cid, v = general.channel_id, Permission.VIEW_CHANNEL
    for target in (a, b, owner):
        await sd.set_overwrite(owner, cid, "member", target, allow=v, deny=NONE, now_ms=T0)
    with pytest.raises(TooMany) as refused:
        await sd.set_overwrite(owner, cid, "role", sid, allow=NONE, deny=v, now_ms=T0)
    assert refused.value.code == "too_many_overwrites"
    # changing or removing one that exists is not refused
    await sd.set_overwrite(owner, cid, "member", a, allow=NONE, deny=v, now_ms=T0)
    await sd.set_overwrite(owner, cid, "member", b, allow=NONE, deny=NONE, now_ms=T0)
    await sd.set_overwrite(owner, cid, "role", sid, allow=NONE, deny=v, now_ms=T0)
    assert len(await sd.overwrites(cid)) == 3


# --- channels and servers per user -------------------------------------------------------------------


@pytest.fixture(params=SERVER_DIRECTORIES)
async def per_user(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerDirectory]:
    """A directory where a user may be in at most 2 direct or group channels and 2 servers."""
    d = await open_server_directory(request.param, request, tmp_path, max_channels_per_user=2,
                                    max_servers_per_user=2)
    try:
        yield d
    finally:
        await d.close()


async def test_a_user_is_in_at_most_so_many_channels(per_user: ServerDirectory) -> None:
    sd = per_user
    a, b, c, d = await users(sd, "a", "b", "c", "d")
    first, _ = await sd.create_channel("group", "one", a, [b], now_ms=T0)
    await sd.create_channel("direct", None, a, [c], now_ms=T0)
    # a is full: a third channel is refused whoever creates it, and nothing is created for anyone
    with pytest.raises(Full) as refused:
        await sd.create_channel("group", "three", b, [a, d], now_ms=T0)
    assert (refused.value.code, refused.value.object_id, refused.value.limit) == ("user_channels_full", a, 2)
    assert [ch.channel_id for ch in await sd.channels_of(b)] == [first.channel_id]
    assert await sd.channels_of(d) == []
    with pytest.raises(Full):
        await sd.create_channel("direct", None, d, [a], now_ms=T0)
    mine, _ = await sd.create_channel("group", "mine", d, [], now_ms=T0)
    with pytest.raises(Full) as refused:
        await sd.add_member(mine.channel_id, a, now_ms=T0)
    assert refused.value.code == "user_channels_full"
    # asking for an existing direct channel again is not a new channel
    assert not (await sd.create_channel("direct", None, c, [a], now_ms=T0))[1]
    # leaving one makes room
    assert await sd.remove_member(first.channel_id, a)
    assert await sd.add_member(mine.channel_id, a, now_ms=T0)


async def test_concurrent_adds_of_one_user_never_pass_their_cap(per_user: ServerDirectory) -> None:
    sd = per_user
    target, *owners = await users(sd, "target", "o1", "o2", "o3", "o4", "o5")
    channels = [(await sd.create_channel("group", f"g{i}", o, [], now_ms=T0))[0].channel_id
                for i, o in enumerate(owners)]
    for _ in range(3):  # PostgreSQL: open the pool's connections, so that the adds below do overlap
        await asyncio.gather(*(sd.members(c) for c in channels * 2))
    results = await asyncio.gather(*(sd.add_member(c, target, now_ms=T0) for c in channels),
                                   return_exceptions=True)
    assert sum(r is True for r in results) == 2
    assert all(r is True or isinstance(r, Full) for r in results), results
    assert len(await sd.channels_of(target)) == 2


async def test_a_user_is_in_at_most_so_many_servers(per_user: ServerDirectory) -> None:
    sd = per_user
    a, b = await users(sd, "a", "b")
    owned = await sd.create_server(a, "Mine", now_ms=T0)
    public = await sd.create_server(b, "Public", discoverable=True, now_ms=T0)
    other = await sd.create_server(b, "Other", now_ms=T0)
    invite = await sd.create_invite(b, other.server_id, now_ms=T0)
    await sd.join_server(a, public.server_id, now_ms=T0)
    # a is in 2: creating, joining and accepting an invite are refused; nothing changes
    with pytest.raises(Full) as refused:
        await sd.create_server(a, "Third", now_ms=T0)
    assert (refused.value.code, refused.value.object_id) == ("user_servers_full", a)
    with pytest.raises(Full):
        await sd.use_invite(a, invite.code, now_ms=T0)
    got = await sd.get_invite(invite.code)
    assert got is not None
    assert got.uses == 0
    assert sorted(s.server_id for s in await sd.servers_of(a)) == sorted([owned.server_id, public.server_id])
    # already a member is not an error; leaving makes room
    assert not await sd.join_server(a, public.server_id, now_ms=T0)
    await sd.leave_server(a, public.server_id, now_ms=T0)
    await sd.use_invite(a, invite.code, now_ms=T0)
    assert await sd.member(other.server_id, a) is not None
