"""Server permissions: the flags, the one resolver, and the hierarchy rules. Pure: no I/O, no clock.

Every caller (directory, broker ACL cache, bridge, API) asks :func:`effective` for a member's
permissions in a channel, and :func:`check_grant`, :func:`check_role_manageable` and
:func:`check_moderate` whether an actor may change roles or act on another member. The order
(docs/permissions.md has a worked example)::

    base = @everyone.permissions | the permissions of each of the member's roles
    owner, or administrator in base          -> ALL, stop
    base = (base | everyone_ow.allow)  & ~everyone_ow.deny
    base = (base | roles_ow.allow)     & ~roles_ow.deny     (the member's roles' overwrites, combined)
    base = (base | member_ow.allow)    & ~member_ow.deny
    no view_channel in the result            -> NONE (nothing else applies in a channel one cannot see)

This is Discord's documented order (``@everyone``, then the roles combined, then the member), so a
member overwrite beats a role overwrite beats the server roles. One deliberate difference: at the
same level a deny beats an allow. Discord applies a level's combined allow after its combined deny,
so when one of a member's roles allows a bit in a channel and another denies it, Discord allows it;
here it is denied, because the product rule is "deny beats allow at the same level" (a channel
locked for a role stays locked for its members whatever their other roles say). A single overwrite
may not both allow and deny one bit (:class:`Overwrite` refuses that input).
"""

from __future__ import annotations

import enum
import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mqchat.errors import Forbidden, InvalidRequest, OwnerCannotLeave, RoleHierarchy, UnknownPermission


class Permission(enum.IntFlag):
    """A set of permissions; the names (lower case) are the wire and storage form."""

    VIEW_CHANNEL = 1 << 0
    """See the channel: subscribe, receive, read its history. Without it nothing else applies."""
    SEND_MESSAGES = 1 << 1
    ADD_REACTIONS = 1 << 2
    MENTION_EVERYONE = 1 << 3
    """Mentions of ``@everyone`` notify every member who can see the channel."""
    MANAGE_MESSAGES = 1 << 4
    """Delete or pin other members' messages."""
    MANAGE_CHANNELS = 1 << 5
    """Create, edit and delete the server's channels (slow mode included)."""
    MANAGE_ROLES = 1 << 6
    """Create, edit, delete and assign roles below one's highest role; edit channel overwrites."""
    KICK_MEMBERS = 1 << 7
    BAN_MEMBERS = 1 << 8
    MODERATE_MEMBERS = 1 << 9
    """Time members out (they cannot send or react until a time)."""
    CREATE_INVITES = 1 << 10
    MANAGE_SERVER = 1 << 11
    """Rename the server, change its discoverability, revoke anyone's invites."""
    VIEW_AUDIT_LOG = 1 << 12
    ADMINISTRATOR = 1 << 13
    """Every permission, in every channel, whatever the overwrites say."""


NONE = Permission(0)
ALL = functools.reduce(operator.or_, Permission, NONE)

#: What a new server's ``@everyone`` role may do.
DEFAULT_EVERYONE = (Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES | Permission.ADD_REACTIONS
                    | Permission.CREATE_INVITES)

#: What a member of a direct or group channel (outside any server) may do in it.
DIRECT_MEMBER = Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES | Permission.ADD_REACTIONS

#: Permissions that mean something per channel (overwrites carry only these).
CHANNEL_SCOPED = (Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES | Permission.ADD_REACTIONS
                  | Permission.MENTION_EVERYONE | Permission.MANAGE_MESSAGES | Permission.MANAGE_CHANNELS
                  | Permission.MANAGE_ROLES | Permission.CREATE_INVITES)

_BY_NAME = {p.name.lower(): p for p in Permission if p.name is not None}


def parse(names: Iterable[str]) -> Permission:
    """The permission set named by ``names`` (``"view_channel"``, ...; case-insensitive).

    Raises:
        UnknownPermission: for the first name that is not a permission.
    """
    result = NONE
    for name in names:
        if not isinstance(name, str) or name.lower() not in _BY_NAME:
            raise UnknownPermission(str(name))
        result |= _BY_NAME[name.lower()]
    return result


def names(perms: Permission) -> list[str]:
    """The names of the permissions in ``perms``, in flag order (the inverse of :func:`parse`)."""
    return [name for name, p in _BY_NAME.items() if p in perms]


def from_bits(bits: int) -> Permission:
    """A stored bit set; bits we do not know (from a newer version) are dropped, never granted."""
    return Permission(bits & ALL)


@dataclass(frozen=True, slots=True)
class Overwrite:
    """A channel overwrite for ``@everyone``, a role or a member: bits to add and bits to take away.

    A bit may not be both allowed and denied by one overwrite (ambiguous input is refused).
    """

    allow: Permission = NONE
    deny: Permission = NONE

    def __post_init__(self) -> None:
        if self.allow & self.deny:
            raise InvalidRequest(f"overwrite both allows and denies {names(self.allow & self.deny)}")


def base_permissions(*, is_owner: bool, everyone: Permission, roles: Iterable[Permission]) -> Permission:
    """Server-level permissions: ``@everyone`` plus every role held; the owner and administrators
    hold everything."""
    if is_owner:
        return ALL
    base = functools.reduce(operator.or_, roles, everyone)
    return ALL if Permission.ADMINISTRATOR in base else base


def effective(
    *,
    is_owner: bool,
    everyone: Permission,
    roles: Mapping[str, Permission],
    everyone_overwrite: Overwrite | None = None,
    role_overwrites: Mapping[str, Overwrite] | None = None,
    member_overwrite: Overwrite | None = None,
) -> Permission:
    """A member's effective permissions in one server channel.

    Args:
        is_owner: the member owns the server.
        everyone: the server's ``@everyone`` role permissions.
        roles: the member's roles (id → permissions), ``@everyone`` not included.
        everyone_overwrite: the channel's overwrite for ``@everyone``, if any.
        role_overwrites: the channel's role overwrites (role id → overwrite); only the member's roles
            are used, so the whole channel's map may be passed.
        member_overwrite: the channel's overwrite for this member, if any.

    Returns:
        :data:`ALL` for the owner and administrators; otherwise the base permissions with the
        overwrites applied in order (deny beats allow within a level), and :data:`NONE` when
        ``view_channel`` is not in the result.
    """
    base = base_permissions(is_owner=is_owner, everyone=everyone, roles=roles.values())
    if base == ALL:
        return ALL
    perms = base
    if everyone_overwrite is not None:
        perms = (perms | everyone_overwrite.allow) & ~everyone_overwrite.deny
    if role_overwrites:
        allow, deny = NONE, NONE
        for role_id in roles:
            ow = role_overwrites.get(role_id)
            if ow is not None:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms | allow) & ~deny
    if member_overwrite is not None:
        perms = (perms | member_overwrite.allow) & ~member_overwrite.deny
    if Permission.VIEW_CHANNEL not in perms:
        return NONE
    return Permission(perms)


# --- hierarchy -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rank:
    """Where a member stands in a server: what the hierarchy rules need to know about them.

    Attributes:
        user_id: the member.
        is_owner: owns the server.
        top_position: the position of their highest role (``@everyone`` is 0).
        perms: their server-level permissions (:func:`base_permissions`).
    """

    user_id: str
    is_owner: bool
    top_position: int
    perms: Permission

    @property
    def is_admin(self) -> bool:
        return self.is_owner or Permission.ADMINISTRATOR in self.perms


def require(actor: Rank, needed: Permission) -> None:
    """Raises :class:`Forbidden` naming the first permission of ``needed`` that ``actor`` lacks."""
    missing = needed & ~actor.perms
    if missing and not actor.is_admin:
        raise Forbidden(names(Permission(missing))[0])


def check_grant(actor: Rank, granted: Permission) -> None:
    """A role or overwrite cannot grant what its granter does not hold.

    Raises:
        Forbidden: naming the first permission in ``granted`` that ``actor`` does not hold.
    """
    require(actor, granted)


def check_role_manageable(actor: Rank, role_position: int) -> None:
    """An actor manages (edits, deletes, assigns, places) only roles strictly below their highest
    role; the owner manages every role.

    Raises:
        RoleHierarchy: the role is at or above the actor's highest role.
    """
    if not actor.is_owner and role_position >= actor.top_position:
        raise RoleHierarchy(f"role at position {role_position} is not below your highest role "
                            f"({actor.top_position})")


def check_moderate(actor: Rank, target: Rank) -> None:
    """Whether ``actor`` may kick, ban, time out or change the roles of ``target``.

    Nobody acts on the owner; the owner acts on everyone else; otherwise the target's highest role
    must be strictly below the actor's. Acting on oneself is refused (leave the server instead).

    Raises:
        OwnerCannotLeave: the owner acting on themselves.
        RoleHierarchy: any other refusal.
    """
    if actor.user_id == target.user_id:
        if actor.is_owner:
            raise OwnerCannotLeave("the owner cannot remove themselves; transfer ownership first")
        raise RoleHierarchy("you cannot act on yourself (leave the server instead)")
    if target.is_owner:
        raise RoleHierarchy("nobody can act on the server owner")
    if not actor.is_owner and target.top_position >= actor.top_position:
        raise RoleHierarchy("the member's highest role is not below yours")
