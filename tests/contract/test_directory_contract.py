"""The server directory's contract on every backend (memory, SQLite, PostgreSQL): servers, roles,
channel overwrites, visibility, moderation, invites, profiles and the audit log, and every refusal
(a typed error with a stable code, and nothing changed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from mqchat.errors import (
    Banned,
    DirectoryError,
    Forbidden,
    InvalidRequest,
    InviteExpired,
    InviteRevoked,
    InviteUsedUp,
    NotFound,
    OwnerCannotLeave,
    RoleHierarchy,
)
from mqchat.permissions import ALL, DEFAULT_EVERYONE, DIRECT_MEMBER, NONE, Permission
from mqchat.storage.base import ChannelOverwrite, ServerDirectory

V, S = Permission.VIEW_CHANNEL, Permission.SEND_MESSAGES
T0 = 1_700_000_000_000


@dataclass
class World:
    """A server with an owner, an admin, a moderator and two plain members."""

    sd: ServerDirectory
    sid: str
    owner: str
    admin: str
    mod: str
    alice: str
    bob: str
    outsider: str
    admin_role: str
    mod_role: str
    general: str
    """A public channel."""


async def user(sd: ServerDirectory, name: str) -> str:
    return (await sd.create_user(name, "h", now_ms=T0)).user_id


@pytest.fixture
async def w(sd: ServerDirectory) -> World:
    owner, admin, mod, alice, bob, outsider = [await user(sd, n) for n in
                                              ("owner", "admin", "mod", "alice", "bob", "outsider")]
    server = await sd.create_server(owner, "Guild", discoverable=True, now_ms=T0)
    sid = server.server_id
    for u in (admin, mod, alice, bob):
        assert await sd.join_server(u, sid, now_ms=T0 + 1)
    await sd.set_discoverable(owner, sid, False, now_ms=T0 + 2)
    admin_role = await sd.create_role(owner, sid, "Admin", Permission.ADMINISTRATOR, position=10, now_ms=T0 + 3)
    mod_role = await sd.create_role(owner, sid, "Mod", Permission.KICK_MEMBERS | Permission.BAN_MEMBERS
                                    | Permission.MODERATE_MEMBERS | Permission.MANAGE_ROLES
                                    | Permission.MANAGE_CHANNELS | Permission.CREATE_INVITES,
                                    position=5, now_ms=T0 + 3)
    await sd.add_member_role(owner, sid, admin, admin_role.role_id, now_ms=T0 + 4)
    await sd.add_member_role(owner, sid, mod, mod_role.role_id, now_ms=T0 + 4)
    general = await sd.create_server_channel(owner, sid, "general", now_ms=T0 + 5)
    return World(sd, sid, owner, admin, mod, alice, bob, outsider, admin_role.role_id, mod_role.role_id,
                 general.channel_id)


async def snapshot(w: World) -> tuple[Any, ...]:
    """Everything about the server that a refused request must leave alone."""
    sd = w.sd
    channels = await sd.server_channels(w.sid)
    return (await sd.get_server(w.sid), await sd.roles(w.sid), await sd.server_members(w.sid, limit=1000),
            channels, [await sd.overwrites(c.channel_id) for c in channels], await sd.bans(w.sid),
            await sd.invites(w.sid), await sd.audit_log(w.sid, limit=1000))


async def refused(w: World, error: type[DirectoryError], call: Any, code: str | None = None) -> DirectoryError:
    before = await snapshot(w)
    with pytest.raises(error) as info:
        await call
    assert await snapshot(w) == before
    if code is not None:
        assert info.value.code == code
    return info.value


# --- profiles --------------------------------------------------------------------------------------


async def test_profiles_are_read_by_id_and_exact_username(sd: ServerDirectory) -> None:
    uid = await user(sd, "Carol")
    updated = await sd.update_profile(uid, display_name=" Carol C ", avatar_url="https://x.test/a.png")
    assert (updated.display_name, updated.avatar_url) == ("Carol C", "https://x.test/a.png")
    assert await sd.get_user(uid) == updated
    assert await sd.user_by_name("carol") == updated
    assert await sd.users([uid, "u-missing"]) == {uid: updated}
    assert await sd.get_user("u-missing") is None
    cleared = await sd.update_profile(uid, display_name=None, avatar_url=None)
    assert (cleared.display_name, cleared.avatar_url) == (None, None)


@pytest.mark.parametrize(("display_name", "avatar_url"), [
    ("   ", None), ("x" * 65, None), (None, "javascript:alert(1)"), (None, "ftp://x.test/a"),
])
async def test_bad_profiles_are_refused(sd: ServerDirectory, display_name: str | None, avatar_url: str | None) -> None:
    uid = await user(sd, "dave")
    with pytest.raises(InvalidRequest) as err:
        await sd.update_profile(uid, display_name=display_name, avatar_url=avatar_url)
    assert err.value.code == "invalid"
    assert (await sd.get_user(uid)) == await sd.user_by_name("dave")
    assert (await sd.get_user(uid)).display_name is None  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await sd.update_profile("u-missing", display_name="x", avatar_url=None)


# --- servers ---------------------------------------------------------------------------------------


async def test_a_new_server_has_everyone_and_its_owner(sd: ServerDirectory) -> None:
    owner = await user(sd, "own")
    server = await sd.create_server(owner, "  Home  ", now_ms=T0)
    assert (server.name, server.owner_id, server.discoverable) == ("Home", owner, False)
    assert await sd.get_server(server.server_id) == server
    [everyone] = await sd.roles(server.server_id)
    assert (everyone.role_id, everyone.position, everyone.perms, everyone.is_everyone) == (
        server.server_id, 0, DEFAULT_EVERYONE, True)
    assert [m.user_id for m in (await sd.server_members(server.server_id)).members] == [owner]
    assert await sd.servers_of(owner) == [server]
    assert await sd.server_permissions(server.server_id, owner) == ALL
    [entry] = (await sd.audit_log(server.server_id)).entries
    assert (entry.actor, entry.action, entry.target) == (owner, "server.create", server.server_id)
    with pytest.raises(NotFound):
        await sd.create_server("u-missing", "x", now_ms=T0)
    with pytest.raises(InvalidRequest):
        await sd.create_server(owner, " ", now_ms=T0)


async def test_rename_and_discoverability_need_manage_server(w: World) -> None:
    err = await refused(w, Forbidden, w.sd.rename_server(w.mod, w.sid, "Mine", now_ms=T0 + 10), "forbidden")
    assert isinstance(err, Forbidden)
    assert err.permission == "manage_server"
    await refused(w, NotFound, w.sd.rename_server(w.outsider, w.sid, "Mine", now_ms=T0 + 10), "not_found")
    await refused(w, NotFound, w.sd.rename_server(w.owner, "s-missing", "Mine", now_ms=T0 + 10))
    await refused(w, InvalidRequest, w.sd.rename_server(w.owner, w.sid, "", now_ms=T0 + 10))
    renamed = await w.sd.rename_server(w.admin, w.sid, "Renamed", now_ms=T0 + 10)
    assert (await w.sd.get_server(w.sid)) == renamed
    assert renamed.name == "Renamed"
    assert [s.server_id for s in await w.sd.discoverable_servers()] == []
    await w.sd.set_discoverable(w.owner, w.sid, True, now_ms=T0 + 11)
    assert [s.server_id for s in await w.sd.discoverable_servers()] == [w.sid]


async def test_join_leave_and_transfer_ownership(w: World) -> None:
    sd = w.sd
    await refused(w, NotFound, sd.join_server(w.outsider, w.sid, now_ms=T0 + 10))  # not discoverable
    await sd.set_discoverable(w.owner, w.sid, True, now_ms=T0 + 10)
    assert await sd.join_server(w.outsider, w.sid, now_ms=T0 + 11)
    assert not await sd.join_server(w.outsider, w.sid, now_ms=T0 + 12)
    await sd.leave_server(w.outsider, w.sid, now_ms=T0 + 13)
    assert await sd.member(w.sid, w.outsider) is None
    await refused(w, NotFound, sd.leave_server(w.outsider, w.sid, now_ms=T0 + 14))
    await refused(w, OwnerCannotLeave, sd.leave_server(w.owner, w.sid, now_ms=T0 + 14), "owner_cannot_leave")
    err = await refused(w, Forbidden, sd.transfer_ownership(w.admin, w.sid, w.admin, now_ms=T0 + 15))
    assert isinstance(err, Forbidden)
    assert err.permission == "owner"
    await refused(w, NotFound, sd.transfer_ownership(w.owner, w.sid, w.outsider, now_ms=T0 + 15))
    await sd.transfer_ownership(w.owner, w.sid, w.alice, now_ms=T0 + 15)
    assert (await sd.get_server(w.sid)).owner_id == w.alice  # type: ignore[union-attr]
    await sd.leave_server(w.owner, w.sid, now_ms=T0 + 16)
    assert w.sid not in {s.server_id for s in await sd.servers_of(w.owner)}


async def test_delete_server_is_for_the_owner_and_removes_everything(w: World) -> None:
    sd = w.sd
    await refused(w, Forbidden, sd.delete_server(w.admin, w.sid, now_ms=T0 + 10))
    invite = await sd.create_invite(w.owner, w.sid, now_ms=T0 + 10)
    await sd.delete_server(w.owner, w.sid, now_ms=T0 + 11)
    assert await sd.get_server(w.sid) is None
    assert await sd.get_channel(w.general) is None
    assert await sd.channel_ids_of(w.alice) == frozenset()
    assert await sd.get_invite(invite.code) is None
    assert await sd.servers_of(w.owner) == []
    assert (await sd.audit_log(w.sid)).entries == []


async def test_member_list_pages_by_user_id_with_display_names(w: World) -> None:
    sd = w.sd
    await sd.update_profile(w.alice, display_name="Alice A", avatar_url=None)
    seen = []
    after = None
    for _ in range(10):
        page = await sd.server_members(w.sid, after=after, limit=2)
        seen += page.members
        if page.next_after is None:
            break
        after = page.next_after
    assert [m.user_id for m in seen] == sorted([w.owner, w.admin, w.mod, w.alice, w.bob])
    by_id = {m.user_id: m for m in seen}
    assert (by_id[w.alice].display_name, by_id[w.alice].username) == ("Alice A", "alice")
    assert by_id[w.mod].role_ids == (w.mod_role,)
    with pytest.raises(NotFound):
        await sd.server_members("s-missing")
    with pytest.raises(InvalidRequest):
        await sd.server_members(w.sid, limit=0)


# --- roles -----------------------------------------------------------------------------------------


async def test_roles_follow_the_hierarchy_and_the_grant_rule(w: World) -> None:
    sd = w.sd
    helper = await sd.create_role(w.mod, w.sid, "Helper", Permission.KICK_MEMBERS, position=2, now_ms=T0 + 10)
    assert [r.name for r in await sd.roles(w.sid)] == ["Admin", "Mod", "Helper", "@everyone"]
    # Above or at one's own highest role: refused.
    err = await refused(w, RoleHierarchy, sd.create_role(w.mod, w.sid, "Big", NONE, position=5, now_ms=T0 + 11))
    assert err.code == "role_hierarchy"
    await refused(w, RoleHierarchy, sd.edit_role(w.mod, w.sid, w.admin_role, name="x", now_ms=T0 + 11))
    await refused(w, RoleHierarchy, sd.edit_role(w.mod, w.sid, helper.role_id, position=7, now_ms=T0 + 11))
    await refused(w, RoleHierarchy, sd.delete_role(w.mod, w.sid, w.mod_role, now_ms=T0 + 11))
    await refused(w, RoleHierarchy, sd.add_member_role(w.mod, w.sid, w.alice, w.admin_role, now_ms=T0 + 11))
    # Granting what one does not hold: refused, naming the permission.
    err = await refused(w, Forbidden, sd.create_role(w.mod, w.sid, "X", Permission.MANAGE_SERVER, now_ms=T0 + 11))
    assert isinstance(err, Forbidden)
    assert err.permission == "manage_server"
    await refused(w, Forbidden, sd.edit_role(w.mod, w.sid, helper.role_id, perms=Permission.ADMINISTRATOR,
                                             now_ms=T0 + 11))
    # Without manage_roles at all.
    err = await refused(w, Forbidden, sd.create_role(w.alice, w.sid, "Mine", NONE, now_ms=T0 + 11))
    assert isinstance(err, Forbidden)
    assert err.permission == "manage_roles"
    # Bad input.
    await refused(w, NotFound, sd.edit_role(w.owner, w.sid, "r-missing", name="x", now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.delete_role(w.owner, w.sid, w.sid, now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.edit_role(w.owner, w.sid, w.sid, position=3, now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.create_role(w.owner, w.sid, "Zero", NONE, position=0, now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.add_member_role(w.owner, w.sid, w.alice, w.sid, now_ms=T0 + 11))
    await refused(w, NotFound, sd.add_member_role(w.owner, w.sid, w.outsider, helper.role_id, now_ms=T0 + 11))
    # Within the rules, changes land.
    edited = await sd.edit_role(w.mod, w.sid, helper.role_id, name="Helpers", perms=Permission.KICK_MEMBERS
                                | Permission.CREATE_INVITES, position=3, now_ms=T0 + 12)
    assert (edited.name, edited.position) == ("Helpers", 3)
    assert await sd.add_member_role(w.mod, w.sid, w.alice, helper.role_id, now_ms=T0 + 13)
    assert not await sd.add_member_role(w.mod, w.sid, w.alice, helper.role_id, now_ms=T0 + 13)
    assert Permission.KICK_MEMBERS in await sd.server_permissions(w.sid, w.alice)
    await sd.delete_role(w.mod, w.sid, helper.role_id, now_ms=T0 + 14)
    assert (await sd.member(w.sid, w.alice)).role_ids == ()  # type: ignore[union-attr]
    assert Permission.KICK_MEMBERS not in await sd.server_permissions(w.sid, w.alice)
    assert await sd.server_permissions(w.sid, w.outsider) == NONE
    assert await sd.server_permissions(w.sid, w.admin) == ALL


async def test_everyone_permissions_can_be_edited_by_a_role_above_it(w: World) -> None:
    await w.sd.edit_role(w.mod, w.sid, w.sid, perms=Permission.VIEW_CHANNEL, now_ms=T0 + 10)
    assert await w.sd.server_permissions(w.sid, w.alice) == Permission.VIEW_CHANNEL
    access = await w.sd.channel_access([(w.general, w.alice)])
    assert access[(w.general, w.alice)].perms == Permission.VIEW_CHANNEL


# --- server channels, overwrites and visibility ----------------------------------------------------


async def test_public_and_private_channels_are_seen_by_the_right_members(w: World) -> None:
    sd = w.sd
    staff = await sd.create_server_channel(w.mod, w.sid, "staff", private=True, now_ms=T0 + 10)
    assert staff.kind == "server"
    assert staff.server_id == w.sid
    everyone_ow = ChannelOverwrite(staff.channel_id, "role", w.sid, NONE, V)
    creator_ow = ChannelOverwrite(staff.channel_id, "member", w.mod, V, NONE)
    assert await sd.overwrites(staff.channel_id) == [creator_ow, everyone_ow]
    assert await sd.members(staff.channel_id) == sorted([w.owner, w.admin, w.mod])
    assert await sd.members(w.general) == sorted([w.owner, w.admin, w.mod, w.alice, w.bob])
    assert await sd.channel_ids_of(w.alice) == frozenset({w.general})
    assert await sd.channel_ids_of(w.mod) == frozenset({w.general, staff.channel_id})
    assert await sd.channel_ids_of(w.outsider) == frozenset()
    assert [c.channel_id for c in await sd.channels_of(w.mod)] == [w.general, staff.channel_id]
    assert await sd.memberships([(staff.channel_id, w.alice), (staff.channel_id, w.mod),
                                 (w.general, w.outsider)]) == {(staff.channel_id, w.mod)}
    # A role overwrite lets a role in; a member overwrite keeps one of its members out.
    helpers = await sd.create_role(w.owner, w.sid, "Helpers", NONE, position=2, now_ms=T0 + 11)
    await sd.add_member_role(w.owner, w.sid, w.alice, helpers.role_id, now_ms=T0 + 11)
    await sd.add_member_role(w.owner, w.sid, w.bob, helpers.role_id, now_ms=T0 + 11)
    await sd.set_overwrite(w.mod, staff.channel_id, "role", helpers.role_id, allow=V | S, deny=NONE, now_ms=T0 + 12)
    await sd.set_overwrite(w.mod, staff.channel_id, "member", w.bob, allow=NONE, deny=V, now_ms=T0 + 12)
    assert w.alice in await sd.members(staff.channel_id)
    assert w.bob not in await sd.members(staff.channel_id)
    assert staff.channel_id in await sd.channel_ids_of(w.alice)
    assert await sd.shares_channel(w.alice, w.mod)
    assert not await sd.shares_channel(w.alice, w.outsider)
    # Removing an overwrite (both sets empty) restores the role's view for bob.
    assert await sd.set_overwrite(w.mod, staff.channel_id, "member", w.bob, allow=NONE, deny=NONE,
                                  now_ms=T0 + 13) is None
    assert w.bob in await sd.members(staff.channel_id)


async def test_channel_access_answers_a_batch_with_timeouts_and_slow_mode(w: World) -> None:
    sd = w.sd
    slow = await sd.create_server_channel(w.owner, w.sid, "slow", slow_mode_s=30, now_ms=T0 + 10)
    direct, _ = await sd.create_channel("direct", None, w.alice, [w.outsider], now_ms=T0 + 10)
    await sd.set_overwrite(w.owner, slow.channel_id, "member", w.bob, allow=NONE, deny=S, now_ms=T0 + 11)
    await sd.timeout(w.mod, w.sid, w.alice, T0 + 60_000, now_ms=T0 + 11)
    pairs = [(slow.channel_id, w.alice), (slow.channel_id, w.bob), (slow.channel_id, w.outsider),
             (direct.channel_id, w.outsider), (direct.channel_id, w.bob), ("c-missing", w.alice)]
    access = await sd.channel_access(pairs)
    assert set(access) == set(pairs)
    a = access[(slow.channel_id, w.alice)]
    assert (a.perms, a.timeout_until_ms, a.slow_mode_s, a.server_id) == (DEFAULT_EVERYONE, T0 + 60_000, 30, w.sid)
    assert S not in access[(slow.channel_id, w.bob)].perms
    assert V in access[(slow.channel_id, w.bob)].perms
    assert access[(slow.channel_id, w.outsider)].perms == NONE
    assert access[(direct.channel_id, w.outsider)].perms == DIRECT_MEMBER
    assert access[(direct.channel_id, w.bob)].perms == NONE
    assert access[("c-missing", w.alice)].perms == NONE
    await sd.timeout(w.mod, w.sid, w.alice, None, now_ms=T0 + 12)
    assert (await sd.channel_access([(slow.channel_id, w.alice)]))[(slow.channel_id, w.alice)].timeout_until_ms is None


async def test_channel_edits_need_manage_channels_in_that_channel(w: World) -> None:
    sd = w.sd
    edited = await sd.edit_server_channel(w.mod, w.general, name="lobby", slow_mode_s=5, now_ms=T0 + 10)
    assert (edited.name, edited.slow_mode_s) == ("lobby", 5)
    assert await sd.get_channel(w.general) == edited
    err = await refused(w, Forbidden, sd.edit_server_channel(w.alice, w.general, name="x", now_ms=T0 + 11))
    assert isinstance(err, Forbidden)
    assert err.permission == "manage_channels"
    await refused(w, InvalidRequest, sd.edit_server_channel(w.mod, w.general, slow_mode_s=-1, now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.create_server_channel(w.owner, w.sid, "x", slow_mode_s=10**9,
                                                              now_ms=T0 + 11))
    await refused(w, Forbidden, sd.create_server_channel(w.alice, w.sid, "mine", now_ms=T0 + 11))
    await refused(w, NotFound, sd.delete_server_channel(w.owner, "c-missing", now_ms=T0 + 11))
    await refused(w, NotFound, sd.delete_server_channel(w.outsider, w.general, now_ms=T0 + 11))
    await sd.delete_server_channel(w.mod, w.general, now_ms=T0 + 12)
    assert await sd.get_channel(w.general) is None
    assert await sd.server_channels(w.sid) == []


async def test_bad_overwrites_are_refused_and_change_nothing(w: World) -> None:
    sd = w.sd
    direct, _ = await sd.create_channel("direct", None, w.alice, [w.bob], now_ms=T0 + 10)
    await refused(w, InvalidRequest, sd.set_overwrite(w.owner, direct.channel_id, "member", w.bob, allow=V,
                                                      deny=NONE, now_ms=T0 + 11), "not_server_channel")
    other = await sd.create_server(w.outsider, "Other", now_ms=T0 + 10)
    foreign_role = await sd.create_role(w.outsider, other.server_id, "R", NONE, now_ms=T0 + 10)
    await refused(w, NotFound, sd.set_overwrite(w.owner, w.general, "role", foreign_role.role_id, allow=V, deny=NONE,
                                                now_ms=T0 + 11))
    await refused(w, NotFound, sd.set_overwrite(w.owner, w.general, "member", w.outsider, allow=V, deny=NONE,
                                                now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.set_overwrite(w.owner, w.general, "role", w.sid,
                                                      allow=Permission.KICK_MEMBERS, deny=NONE, now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.set_overwrite(w.owner, w.general, "role", w.sid, allow=V, deny=V,
                                                      now_ms=T0 + 11))
    await refused(w, InvalidRequest, sd.set_overwrite(w.owner, w.general, "user", w.bob,  # type: ignore[arg-type]
                                                      allow=V, deny=NONE, now_ms=T0 + 11))
    await refused(w, Forbidden, sd.set_overwrite(w.alice, w.general, "member", w.bob, allow=NONE, deny=S,
                                                 now_ms=T0 + 11))
    await refused(w, RoleHierarchy, sd.set_overwrite(w.mod, w.general, "role", w.admin_role, allow=NONE, deny=S,
                                                     now_ms=T0 + 11))
    await refused(w, RoleHierarchy, sd.set_overwrite(w.mod, w.general, "member", w.admin, allow=NONE, deny=S,
                                                     now_ms=T0 + 11))
    # The moderator may not allow what they do not hold (mention_everyone).
    await refused(w, Forbidden, sd.set_overwrite(w.mod, w.general, "member", w.alice,
                                                 allow=Permission.MENTION_EVERYONE, deny=NONE, now_ms=T0 + 11))
    with pytest.raises(InvalidRequest) as err:
        await sd.add_member(w.general, w.outsider, now_ms=T0 + 11)
    assert err.value.code == "server_channel"
    with pytest.raises(InvalidRequest):
        await sd.create_channel("server", "x", w.alice, [], now_ms=T0 + 11)
    assert w.outsider not in await sd.members(w.general)


# --- moderation ------------------------------------------------------------------------------------


async def test_kick_follows_the_hierarchy(w: World) -> None:
    sd = w.sd
    await refused(w, RoleHierarchy, sd.kick(w.mod, w.sid, w.admin, now_ms=T0 + 10))  # a moderator cannot kick an admin
    await refused(w, RoleHierarchy, sd.kick(w.admin, w.sid, w.owner, now_ms=T0 + 10))  # nobody acts on the owner
    await refused(w, OwnerCannotLeave, sd.kick(w.owner, w.sid, w.owner, now_ms=T0 + 10), "owner_cannot_leave")
    err = await refused(w, Forbidden, sd.kick(w.alice, w.sid, w.bob, now_ms=T0 + 10))
    assert isinstance(err, Forbidden)
    assert err.permission == "kick_members"
    await refused(w, NotFound, sd.kick(w.mod, w.sid, w.outsider, now_ms=T0 + 10))
    await refused(w, NotFound, sd.kick(w.mod, "s-missing", w.alice, now_ms=T0 + 10))
    await sd.set_overwrite(w.owner, w.general, "member", w.alice, allow=NONE, deny=S, now_ms=T0 + 10)
    await sd.kick(w.mod, w.sid, w.alice, now_ms=T0 + 11)
    assert await sd.member(w.sid, w.alice) is None
    assert await sd.channel_ids_of(w.alice) == frozenset()
    assert await sd.overwrites(w.general) == []  # their member overwrites went with them
    await sd.kick(w.owner, w.sid, w.admin, now_ms=T0 + 12)


async def test_a_banned_user_cannot_come_back_until_unbanned(w: World) -> None:
    sd = w.sd
    invite = await sd.create_invite(w.owner, w.sid, now_ms=T0 + 10)
    await refused(w, RoleHierarchy, sd.ban(w.mod, w.sid, w.admin, now_ms=T0 + 11))
    await refused(w, Forbidden, sd.ban(w.alice, w.sid, w.bob, now_ms=T0 + 11))
    await refused(w, NotFound, sd.ban(w.mod, w.sid, "u-missing", now_ms=T0 + 11))
    await sd.ban(w.mod, w.sid, w.bob, reason="spam", now_ms=T0 + 11)
    await sd.ban(w.mod, w.sid, w.outsider, now_ms=T0 + 11)  # not a member: banned ahead of time
    assert await sd.member(w.sid, w.bob) is None
    assert [(b.user_id, b.reason) for b in await sd.bans(w.sid)] == sorted(
        [(w.bob, "spam"), (w.outsider, None)])
    assert await sd.channel_ids_of(w.bob) == frozenset()
    err = await refused(w, Banned, sd.use_invite(w.bob, invite.code, now_ms=T0 + 12), "banned")
    assert "banned" in str(err)
    await sd.set_discoverable(w.owner, w.sid, True, now_ms=T0 + 12)
    await refused(w, Banned, sd.join_server(w.outsider, w.sid, now_ms=T0 + 12))
    await refused(w, Forbidden, sd.unban(w.alice, w.sid, w.bob, now_ms=T0 + 13))
    assert await sd.unban(w.mod, w.sid, w.bob, now_ms=T0 + 13)
    assert not await sd.unban(w.mod, w.sid, w.bob, now_ms=T0 + 13)
    assert (await sd.use_invite(w.bob, invite.code, now_ms=T0 + 14)).server_id == w.sid
    assert await sd.member(w.sid, w.bob) is not None


async def test_timeouts(w: World) -> None:
    sd = w.sd
    await refused(w, InvalidRequest, sd.timeout(w.mod, w.sid, w.alice, T0, now_ms=T0 + 10))  # in the past
    await refused(w, InvalidRequest, sd.timeout(w.mod, w.sid, w.alice, T0 + 29 * 86_400_000, now_ms=T0))
    await refused(w, RoleHierarchy, sd.timeout(w.mod, w.sid, w.admin, T0 + 1000, now_ms=T0 + 10))
    err = await refused(w, Forbidden, sd.timeout(w.bob, w.sid, w.alice, T0 + 1000, now_ms=T0 + 10))
    assert isinstance(err, Forbidden)
    assert err.permission == "moderate_members"
    await sd.timeout(w.mod, w.sid, w.alice, T0 + 1000, now_ms=T0 + 10)
    member = await sd.member(w.sid, w.alice)
    assert member is not None
    assert member.timed_out(T0 + 999)
    assert not member.timed_out(T0 + 1000)


# --- invites ---------------------------------------------------------------------------------------


async def test_invites_are_used_atomically_and_refused_when_spent(w: World) -> None:
    sd = w.sd
    newcomers = [await user(sd, f"new{i}") for i in range(3)]
    once = await sd.create_invite(w.mod, w.sid, max_uses=1, expires_ms=T0 + 1000, now_ms=T0 + 10)
    assert (once.uses, once.revoked, once.creator) == (0, False, w.mod)
    assert await sd.get_invite(once.code) == once
    # Already a member: joins nothing and spends nothing.
    assert (await sd.use_invite(w.alice, once.code, now_ms=T0 + 11)).server_id == w.sid
    assert (await sd.get_invite(once.code)).uses == 0  # type: ignore[union-attr]
    await sd.use_invite(newcomers[0], once.code, now_ms=T0 + 11)
    assert (await sd.get_invite(once.code)).uses == 1  # type: ignore[union-attr]
    await refused(w, InviteUsedUp, sd.use_invite(newcomers[1], once.code, now_ms=T0 + 12), "invite_used_up")
    timed = await sd.create_invite(w.mod, w.sid, expires_ms=T0 + 100, now_ms=T0 + 10)
    await refused(w, InviteExpired, sd.use_invite(newcomers[1], timed.code, now_ms=T0 + 100), "invite_expired")
    revoked = await sd.create_invite(w.alice, w.sid, now_ms=T0 + 10)  # @everyone may create invites
    await refused(w, Forbidden, sd.revoke_invite(w.bob, revoked.code, now_ms=T0 + 11))  # neither creator nor manager
    await refused(w, NotFound, sd.revoke_invite(w.outsider, revoked.code, now_ms=T0 + 11))
    assert (await sd.revoke_invite(w.alice, revoked.code, now_ms=T0 + 11)).revoked
    await refused(w, InviteRevoked, sd.use_invite(newcomers[1], revoked.code, now_ms=T0 + 12), "invite_revoked")
    await refused(w, NotFound, sd.use_invite(newcomers[1], "nope", now_ms=T0 + 12))
    await refused(w, NotFound, sd.use_invite("u-missing", once.code, now_ms=T0 + 12))
    assert {i.code for i in await sd.invites(w.sid)} == {once.code, timed.code, revoked.code}


async def test_bad_invites_are_refused(w: World) -> None:
    sd = w.sd
    other = await sd.create_server(w.outsider, "Other", now_ms=T0)
    elsewhere = await sd.create_server_channel(w.outsider, other.server_id, "x", now_ms=T0)
    await refused(w, NotFound, sd.create_invite(w.owner, w.sid, channel_id=elsewhere.channel_id, now_ms=T0 + 10))
    await refused(w, InvalidRequest, sd.create_invite(w.owner, w.sid, max_uses=0, now_ms=T0 + 10))
    await refused(w, InvalidRequest, sd.create_invite(w.owner, w.sid, expires_ms=T0, now_ms=T0 + 10))
    await refused(w, NotFound, sd.create_invite(w.outsider, w.sid, now_ms=T0 + 10))
    await sd.set_overwrite(w.owner, w.general, "role", w.sid, allow=NONE, deny=Permission.CREATE_INVITES,
                           now_ms=T0 + 10)
    await refused(w, Forbidden, sd.create_invite(w.alice, w.sid, channel_id=w.general, now_ms=T0 + 11))
    # The @everyone overwrite takes create_invites from the moderator's role too, not from an admin.
    await refused(w, Forbidden, sd.create_invite(w.mod, w.sid, channel_id=w.general, now_ms=T0 + 11))
    invite = await sd.create_invite(w.admin, w.sid, channel_id=w.general, now_ms=T0 + 11)
    assert invite.channel_id == w.general


async def test_concurrent_uses_of_a_single_use_invite_admit_exactly_one(w: World) -> None:
    sd = w.sd
    newcomers = [await user(sd, f"racer{i}") for i in range(6)]
    invite = await sd.create_invite(w.owner, w.sid, max_uses=1, now_ms=T0 + 10)
    results = await asyncio.gather(*(sd.use_invite(u, invite.code, now_ms=T0 + 11) for u in newcomers),
                                   return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, InviteUsedUp) for r in results if isinstance(r, BaseException))
    assert (await sd.get_invite(invite.code)).uses == 1  # type: ignore[union-attr]
    joined = [u for u in newcomers if await sd.member(w.sid, u) is not None]
    assert len(joined) == 1


# --- audit log -------------------------------------------------------------------------------------


async def test_the_audit_log_records_who_did_what_to_whom_newest_first(w: World) -> None:
    sd = w.sd
    await sd.kick(w.mod, w.sid, w.bob, now_ms=T0 + 20)
    await sd.rename_server(w.owner, w.sid, "New", now_ms=T0 + 21)
    newest = (await sd.audit_log(w.sid, limit=2)).entries
    assert [(e.actor, e.action, e.target) for e in newest] == [
        (w.owner, "server.rename", w.sid), (w.mod, "member.kick", w.bob)]
    assert newest[0].details == {"old": "Guild", "new": "New"}
    assert newest[0].created_ms == T0 + 21
    walked = []
    before = None
    for _ in range(50):
        page = await sd.audit_log(w.sid, before=before, limit=3)
        walked += page.entries
        if page.next_before is None:
            break
        before = page.next_before
    ids = [e.entry_id for e in walked]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    assert walked[-1].action == "server.create"
    actions = {e.action for e in walked}
    assert {"member.join", "role.create", "member.role_add", "channel.create", "server.discoverable"} <= actions


async def test_unknown_permission_names_are_refused_and_unknown_bits_are_never_stored(w: World) -> None:
    from mqchat import permissions as P
    from mqchat.errors import UnknownPermission

    async def create(names: list[str]) -> None:
        await w.sd.create_role(w.owner, w.sid, "Named", P.parse(names), now_ms=T0 + 10)

    err = await refused(w, UnknownPermission, create(["view_channel", "fly"]), "unknown_permission")
    assert "fly" in str(err)
    role = await w.sd.create_role(w.owner, w.sid, "Bits", Permission(int(S) | 1 << 40), now_ms=T0 + 11)
    assert role.perms == S
    assert {r.role_id: r.perms for r in await w.sd.roles(w.sid)}[role.role_id] == S


async def test_all_channel_ids_pages_through_every_kind_of_channel(w: World) -> None:
    sd = w.sd
    group, _ = await sd.create_channel("group", "g", w.alice, [w.bob], now_ms=T0)
    direct, _ = await sd.create_channel("direct", None, w.alice, [w.bob], now_ms=T0)
    private = await sd.create_server_channel(w.owner, w.sid, "hidden", private=True, now_ms=T0)
    server_channels = [c.channel_id for c in await sd.server_channels(w.sid)]
    expected = sorted({*server_channels, group.channel_id, direct.channel_id})
    assert private.channel_id in expected
    assert await sd.all_channel_ids() == expected
    pages: list[str] = []
    after = ""
    while page := await sd.all_channel_ids(after=after, limit=2):
        assert len(page) <= 2
        pages += page
        after = page[-1]
    assert pages == expected
