"""Each directory change that can change access emits its invalidation events, and those events, applied
to a warm :class:`mqchat.access.MembershipCache`, leave no stale answer while sparing the users the change
cannot concern (docs/permissions.md, *Caching and invalidation*).

The cache lives an hour here, so every answer it still gives after a change is one the events chose to
keep. Run on every backend (the rules, and so the events, are shared code; ``access_scope`` is not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mqchat import access
from mqchat import invalidation as inv
from mqchat.errors import Forbidden
from mqchat.invalidation import Invalidation
from mqchat.permissions import DEFAULT_EVERYONE, NONE, Permission
from mqchat.storage.base import ServerDirectory
from tests.contract.conftest import SERVER_DIRECTORIES, open_server_directory

P = Permission
NOW = 1_700_000_000_000


@dataclass
class G:
    """alice owns server ``s`` (channels ``general``, ``staff`` (private)) with bob and carol; dave owns
    server ``other`` with erin; bob and erin share a group channel. Events the directory emits are
    recorded."""

    d: ServerDirectory
    alice: str
    bob: str
    carol: str
    dave: str
    erin: str
    s: str
    other: str
    general: str
    staff: str
    group: str
    role: str
    events: list[Invalidation] = field(default_factory=list)


@pytest.fixture(params=SERVER_DIRECTORIES)
async def g(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[G]:
    d = await open_server_directory(request.param, request, tmp_path)
    alice, bob, carol, dave, erin = [(await d.create_user(n, "x", now_ms=NOW)).user_id
                                     for n in ("alice", "bob", "carol", "dave", "erin")]
    s = (await d.create_server(alice, "S", discoverable=True, now_ms=NOW)).server_id
    other = (await d.create_server(dave, "O", discoverable=True, now_ms=NOW)).server_id
    for u in (bob, carol):
        await d.join_server(u, s, now_ms=NOW)
    await d.join_server(erin, other, now_ms=NOW)
    general = (await d.create_server_channel(alice, s, "general", now_ms=NOW)).channel_id
    staff = (await d.create_server_channel(alice, s, "staff", private=True, now_ms=NOW)).channel_id
    await d.create_server_channel(dave, other, "lobby", now_ms=NOW)
    group = (await d.create_channel("group", "g", bob, [erin], now_ms=NOW))[0].channel_id
    role = (await d.create_role(alice, s, "Muted", NONE, position=1, now_ms=NOW)).role_id
    world = G(d, alice, bob, carol, dave, erin, s, other, general, staff, group, role)

    async def record(events: Sequence[Invalidation]) -> None:
        world.events.extend(events)

    d.add_listener(record)
    yield world
    await d.close()


Change = Callable[[G], Awaitable[object]]

#: name → (the change, the events it must emit, the users whose entries it must spare).
CASES: dict[str, tuple[Change, Callable[[G], list[Invalidation]], Callable[[G], set[str]]]] = {
    "join": (lambda g: g.d.join_server(g.erin, g.s, now_ms=NOW),
             lambda g: [inv.user(g.erin)], lambda g: {g.alice, g.bob, g.carol, g.dave}),
    "leave": (lambda g: g.d.leave_server(g.bob, g.s, now_ms=NOW),
              lambda g: [inv.user(g.bob)], lambda g: {g.alice, g.carol, g.dave, g.erin}),
    "kick": (lambda g: g.d.kick(g.alice, g.s, g.bob, now_ms=NOW),
             lambda g: [inv.user(g.bob)], lambda g: {g.alice, g.carol, g.dave, g.erin}),
    "ban": (lambda g: g.d.ban(g.alice, g.s, g.carol, now_ms=NOW),
            lambda g: [inv.user(g.carol)], lambda g: {g.alice, g.bob, g.dave, g.erin}),
    "timeout": (lambda g: g.d.timeout(g.alice, g.s, g.bob, NOW + 60_000, now_ms=NOW),
                lambda g: [inv.user(g.bob)], lambda g: {g.alice, g.carol, g.dave, g.erin}),
    "role_grant": (lambda g: g.d.add_member_role(g.alice, g.s, g.bob, g.role, now_ms=NOW),
                   lambda g: [inv.user(g.bob)], lambda g: {g.alice, g.carol, g.dave, g.erin}),
    "role_permissions": (lambda g: g.d.edit_role(g.alice, g.s, g.s, perms=DEFAULT_EVERYONE & ~P.VIEW_CHANNEL,
                                                 now_ms=NOW),
                         lambda g: [inv.server(g.s)], lambda g: {g.dave, g.erin}),
    "role_delete": (lambda g: g.d.delete_role(g.alice, g.s, g.role, now_ms=NOW),
                    lambda g: [inv.server(g.s)], lambda g: {g.dave, g.erin}),
    "role_overwrite": (lambda g: g.d.set_overwrite(g.alice, g.staff, "role", g.s, allow=P.VIEW_CHANNEL, deny=NONE,
                                                   now_ms=NOW),
                       lambda g: [inv.channel(g.staff, g.s)], lambda g: {g.dave, g.erin}),
    "member_overwrite": (lambda g: g.d.set_overwrite(g.alice, g.general, "member", g.bob, allow=NONE,
                                                     deny=P.VIEW_CHANNEL, now_ms=NOW),
                         lambda g: [inv.user(g.bob)], lambda g: {g.alice, g.carol, g.dave, g.erin}),
    "channel_create": (lambda g: g.d.create_server_channel(g.alice, g.s, "new", now_ms=NOW),
                       lambda g: [inv.server(g.s)], lambda g: {g.dave, g.erin}),
    "channel_delete": (lambda g: g.d.delete_server_channel(g.alice, g.general, now_ms=NOW),
                       lambda g: [inv.channel(g.general, g.s)], lambda g: {g.dave, g.erin}),
    "slow_mode": (lambda g: g.d.edit_server_channel(g.alice, g.general, slow_mode_s=30, now_ms=NOW),
                  lambda g: [inv.channel(g.general, g.s)], lambda g: {g.dave, g.erin}),
    "server_delete": (lambda g: g.d.delete_server(g.alice, g.s, now_ms=NOW),
                      lambda g: [inv.server(g.s)], lambda g: {g.dave, g.erin}),
    "ownership": (lambda g: g.d.transfer_ownership(g.alice, g.s, g.bob, now_ms=NOW),
                  lambda g: [inv.user(g.alice), inv.user(g.bob)], lambda g: {g.carol, g.dave, g.erin}),
    "group_add": (lambda g: g.d.add_member(g.group, g.carol, now_ms=NOW),
                  lambda g: [inv.user(g.carol)], lambda g: {g.alice, g.bob, g.dave, g.erin}),
    "group_remove": (lambda g: g.d.remove_member(g.group, g.erin),
                     lambda g: [inv.user(g.erin)], lambda g: {g.alice, g.bob, g.carol, g.dave}),
    "group_create": (lambda g: g.d.create_channel("group", "h", g.carol, [g.dave], now_ms=NOW),
                     lambda g: [inv.user(g.carol), inv.user(g.dave)], lambda g: {g.alice, g.bob, g.erin}),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_change_invalidates_what_it_changed(g: G, name: str) -> None:
    change, expected, spared = CASES[name]
    everyone = [g.alice, g.bob, g.carol, g.dave, g.erin]
    cache = access.MembershipCache(g.d, ttl_s=3600)
    before = {u: await cache.channels(u) for u in everyone}
    await change(g)
    assert g.events == expected(g)
    for event in g.events:
        cache.invalidate(event)
    for u in everyone:
        truth = await g.d.channel_ids_of(u)
        kept = cache.fresh(u)
        assert kept is None or kept == truth, f"{u} kept a stale answer after {name}"
        if u in spared(g):
            assert kept == before[u], f"{name} dropped {u}, whom it cannot concern"


async def test_unban_and_refused_changes(g: G) -> None:
    await g.d.ban(g.alice, g.s, g.carol, now_ms=NOW)
    g.events.clear()
    assert await g.d.unban(g.alice, g.s, g.carol, now_ms=NOW)
    assert g.events == [inv.user(g.carol)]
    g.events.clear()
    assert not await g.d.unban(g.alice, g.s, g.carol, now_ms=NOW)  # nothing changed: nothing to say
    with pytest.raises(Forbidden):  # a refused write changes nothing
        await g.d.kick(g.bob, g.s, g.carol, now_ms=NOW)
    await g.d.rename_server(g.alice, g.s, "Renamed", now_ms=NOW)  # names change no access
    await g.d.edit_server_channel(g.alice, g.general, name="chat", now_ms=NOW)
    assert g.events == []


async def test_a_failing_listener_does_not_fail_the_committed_write(g: G) -> None:
    async def broken(events: Sequence[Invalidation]) -> None:
        raise RuntimeError("redis is down")

    g.d.add_listener(broken)
    await g.d.kick(g.alice, g.s, g.bob, now_ms=NOW)
    assert await g.d.member(g.s, g.bob) is None
    assert g.events == [inv.user(g.bob)]  # listeners before it were told
