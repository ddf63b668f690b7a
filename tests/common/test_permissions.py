"""The permission resolver and the hierarchy rules: laws as properties, and worked examples."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat import permissions as P
from mqchat.errors import Forbidden, InvalidRequest, OwnerCannotLeave, RoleHierarchy, UnknownPermission
from mqchat.permissions import ALL, NONE, Overwrite, Permission, Rank

# Pure and fast, but the machine running the suite may be busy: no per-example deadline, and no
# example database written into the checkout.
relaxed = settings(deadline=None, database=None)

perms = st.integers(min_value=0, max_value=int(ALL)).map(Permission)
no_admin = perms.map(lambda p: Permission(p & ~Permission.ADMINISTRATOR))
ROLE_IDS = ["r1", "r2", "r3"]


@st.composite
def overwrites(draw: st.DrawFn) -> Overwrite:
    allow = draw(perms)
    deny = draw(perms)
    return Overwrite(allow=allow, deny=Permission(deny & ~allow))


@dataclass(frozen=True)
class Situation:
    """Inputs of :func:`P.effective` for one member in one channel."""

    everyone: Permission
    roles: dict[str, Permission]
    everyone_overwrite: Overwrite | None
    role_overwrites: dict[str, Overwrite]
    member_overwrite: Overwrite | None
    is_owner: bool = False

    def eff(self) -> Permission:
        return P.effective(is_owner=self.is_owner, everyone=self.everyone, roles=self.roles,
                           everyone_overwrite=self.everyone_overwrite, role_overwrites=self.role_overwrites,
                           member_overwrite=self.member_overwrite)


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    """A member who is neither owner nor administrator."""
    held = draw(st.lists(st.sampled_from(ROLE_IDS), unique=True))
    return Situation(
        everyone=draw(no_admin),
        roles={r: draw(no_admin) for r in held},
        everyone_overwrite=draw(st.none() | overwrites()),
        role_overwrites=draw(st.dictionaries(st.sampled_from(ROLE_IDS), overwrites())),
        member_overwrite=draw(st.none() | overwrites()),
    )


def widen(ow: Overwrite | None, bits: Permission) -> tuple[Overwrite, Overwrite]:
    """``ow`` with ``bits`` moved to allow, and with ``bits`` moved to deny."""
    ow = ow or Overwrite()
    return (Overwrite(allow=ow.allow | bits, deny=Permission(ow.deny & ~bits)),
            Overwrite(allow=Permission(ow.allow & ~bits), deny=ow.deny | bits))


# --- laws ------------------------------------------------------------------------------------------


@relaxed
@given(situations(), st.booleans())
def test_owner_and_administrator_hold_everything_whatever_the_overwrites(s: Situation, owner: bool) -> None:
    winner = replace(s, is_owner=True) if owner else replace(s, roles=s.roles | {"admin": Permission.ADMINISTRATOR})
    assert winner.eff() == ALL


def _decided_by(result: Permission, ow: Overwrite) -> None:
    if Permission.VIEW_CHANNEL in ow.deny:
        assert result == NONE
    else:
        assert ow.deny & result == NONE
        if Permission.VIEW_CHANNEL in ow.allow:
            assert ow.allow in result


@relaxed
@given(situations(), overwrites())
def test_the_member_overwrite_has_the_last_word(s: Situation, ow: Overwrite) -> None:
    _decided_by(replace(s, member_overwrite=ow).eff(), ow)


@relaxed
@given(situations(), overwrites())
def test_a_role_overwrite_beats_the_server_roles_and_the_everyone_overwrite(s: Situation, ow: Overwrite) -> None:
    """With no member overwrite, the overwrite of a held role decides the bits it names."""
    s = replace(s, roles={"r1": NONE} | s.roles, role_overwrites={"r1": ow}, member_overwrite=None)
    _decided_by(s.eff(), ow)


@relaxed
@given(situations(), perms)
def test_deny_beats_allow_between_two_roles_of_the_same_member(s: Situation, bits: Permission) -> None:
    denied = Permission(bits & ~Permission.VIEW_CHANNEL)
    s = replace(s, roles={"r1": NONE, "r2": NONE}, member_overwrite=None,
                role_overwrites={"r1": Overwrite(allow=bits | Permission.VIEW_CHANNEL), "r2": Overwrite(deny=denied)})
    assert s.eff() & denied == NONE


@relaxed
@given(situations())
def test_overwrites_of_roles_the_member_does_not_hold_do_not_apply(s: Situation) -> None:
    foreign = {"x1": Overwrite(deny=ALL), "x2": Overwrite(allow=ALL)}
    assert replace(s, role_overwrites=s.role_overwrites | foreign).eff() == s.eff()


@relaxed
@given(situations(), st.sampled_from(["everyone", "member", "r1", "r2"]), perms)
def test_adding_an_allow_never_removes_and_adding_a_deny_never_adds(s: Situation, where: str, bits: Permission) -> None:
    before = s.eff()
    if where == "everyone":
        more_allow, more_deny = widen(s.everyone_overwrite, bits)
        with_allow, with_deny = replace(s, everyone_overwrite=more_allow), replace(s, everyone_overwrite=more_deny)
    elif where == "member":
        more_allow, more_deny = widen(s.member_overwrite, bits)
        with_allow, with_deny = replace(s, member_overwrite=more_allow), replace(s, member_overwrite=more_deny)
    else:
        more_allow, more_deny = widen(s.role_overwrites.get(where), bits)
        with_allow = replace(s, role_overwrites=s.role_overwrites | {where: more_allow})
        with_deny = replace(s, role_overwrites=s.role_overwrites | {where: more_deny})
    assert before in with_allow.eff()
    assert with_deny.eff() in before


@relaxed
@given(situations(), st.sampled_from(ROLE_IDS), perms)
def test_adding_permissions_to_a_role_or_everyone_never_removes_any(s: Situation, role: str, bits: Permission) -> None:
    before = s.eff()
    if role in s.roles:
        assert before in replace(s, roles=s.roles | {role: s.roles[role] | bits}).eff()
    assert before in replace(s, everyone=s.everyone | bits).eff()


@relaxed
@given(situations())
def test_no_view_channel_means_nothing_in_the_channel(s: Situation) -> None:
    result = s.eff()
    assert result == NONE or Permission.VIEW_CHANNEL in result
    assert replace(s, member_overwrite=Overwrite(deny=Permission.VIEW_CHANNEL)).eff() == NONE


@relaxed
@given(situations())
def test_every_permission_in_the_result_comes_from_the_base_or_an_allow(s: Situation) -> None:
    granted = P.base_permissions(is_owner=False, everyone=s.everyone, roles=s.roles.values())
    for ow in [s.everyone_overwrite, s.member_overwrite, *s.role_overwrites.values()]:
        if ow is not None:
            granted |= ow.allow
    assert s.eff() in granted


@relaxed
@given(perms)
def test_names_and_parse_round_trip(p: Permission) -> None:
    assert P.parse(P.names(p)) == p
    assert P.from_bits(int(p) | (1 << 40)) == p


# --- examples --------------------------------------------------------------------------------------


def test_worked_example_from_the_docs() -> None:
    """docs/permissions.md: a private #staff channel, a Moderator role, a muted member."""
    everyone = P.DEFAULT_EVERYONE
    moderator = Permission.KICK_MEMBERS | Permission.MANAGE_MESSAGES
    staff = {"everyone_overwrite": Overwrite(deny=Permission.VIEW_CHANNEL),
             "role_overwrites": {"mod": Overwrite(allow=Permission.VIEW_CHANNEL)}}
    # A plain member cannot see #staff.
    assert P.effective(is_owner=False, everyone=everyone, roles={}, **staff) == NONE  # type: ignore[arg-type]
    # A moderator sees it and keeps the server-level bits that apply in a channel.
    mod = P.effective(is_owner=False, everyone=everyone, roles={"mod": moderator}, **staff)  # type: ignore[arg-type]
    assert mod == everyone | moderator
    # A moderator with a member overwrite denying send_messages can read but not write.
    muted = P.effective(is_owner=False, everyone=everyone, roles={"mod": moderator},
                        member_overwrite=Overwrite(deny=Permission.SEND_MESSAGES), **staff)  # type: ignore[arg-type]
    assert Permission.VIEW_CHANNEL in muted
    assert Permission.SEND_MESSAGES not in muted
    # The owner sees everything with no role at all.
    assert P.effective(is_owner=True, everyone=NONE, roles={}, **staff) == ALL  # type: ignore[arg-type]


def test_parse_refuses_unknown_names_with_the_name() -> None:
    assert P.parse(["VIEW_CHANNEL", "send_messages"]) == Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES
    with pytest.raises(UnknownPermission) as err:
        P.parse(["view_channel", "fly"])
    assert (err.value.code, err.value.name) == ("unknown_permission", "fly")
    with pytest.raises(UnknownPermission):
        P.parse([""])


def test_an_overwrite_may_not_allow_and_deny_the_same_bit() -> None:
    with pytest.raises(InvalidRequest):
        Overwrite(allow=Permission.SEND_MESSAGES, deny=Permission.SEND_MESSAGES | Permission.VIEW_CHANNEL)


OWNER = Rank("owner", is_owner=True, top_position=0, perms=ALL)
ADMIN = Rank("admin", is_owner=False, top_position=10, perms=ALL)
MOD = Rank("mod", is_owner=False, top_position=5, perms=Permission.KICK_MEMBERS | Permission.MANAGE_ROLES)
MEMBER = Rank("member", is_owner=False, top_position=0, perms=P.DEFAULT_EVERYONE)


def test_a_granter_cannot_grant_what_they_do_not_hold() -> None:
    P.check_grant(MOD, Permission.KICK_MEMBERS)
    with pytest.raises(Forbidden) as err:
        P.check_grant(MOD, Permission.KICK_MEMBERS | Permission.BAN_MEMBERS)
    assert err.value.permission == "ban_members"
    P.check_grant(ADMIN, ALL)
    P.check_grant(OWNER, ALL)


def test_roles_are_managed_strictly_below_ones_highest_role() -> None:
    P.check_role_manageable(MOD, 4)
    for position in (5, 6):
        with pytest.raises(RoleHierarchy):
            P.check_role_manageable(MOD, position)
    P.check_role_manageable(OWNER, 1000)


@pytest.mark.parametrize(("actor", "target", "error"), [
    (MOD, MEMBER, None),
    (MOD, ADMIN, RoleHierarchy),  # a moderator cannot kick an admin
    (MOD, replace(MOD, user_id="mod2"), RoleHierarchy),  # nor a peer at the same position
    (ADMIN, OWNER, RoleHierarchy),  # nobody acts on the owner
    (OWNER, ADMIN, None),
    (OWNER, OWNER, OwnerCannotLeave),  # the owner cannot kick themselves
    (MEMBER, MEMBER, RoleHierarchy),
])
def test_moderation_follows_the_hierarchy(actor: Rank, target: Rank, error: type[Exception] | None) -> None:
    if error is None:
        P.check_moderate(actor, target)
    else:
        with pytest.raises(error):
            P.check_moderate(actor, target)


@relaxed
@given(st.integers(0, 50), st.integers(0, 50))
def test_moderation_is_never_mutual_between_non_owners(a: int, b: int) -> None:
    x = Rank("x", is_owner=False, top_position=a, perms=ALL)
    y = Rank("y", is_owner=False, top_position=b, perms=ALL)
    outcomes = []
    for actor, target in ((x, y), (y, x)):
        try:
            P.check_moderate(actor, target)
            outcomes.append(True)
        except RoleHierarchy:
            outcomes.append(False)
    assert outcomes != [True, True]
    assert any(outcomes) == (a != b)
